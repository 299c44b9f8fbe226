// Automatic device configurations through azure-iothub's Registry:
// addConfiguration, getConfiguration, getConfigurations,
// updateConfiguration and removeConfiguration, and the desired
// properties a configuration applies to the devices it targets — those
// there at its creation and those tagged later.

import { describe, test } from 'node:test';
import iothub from 'azure-iothub';

import { hub, uniqueId, expectSuccess, expectFailure, expectEqual, expectThat, eventually } from '../lib/azure.mjs';

const { Registry } = iothub;

describe('Configurations', () => {
  const reg = Registry.fromConnectionString(hub.cs('iothubowner'));

  async function desiredOf(id) {
    const { responseBody: t } = await reg.getTwin(id);
    return t.properties.desired['chiller-water'];
  }

  test('a configuration applies to the devices it targets, also those tagged later', async () => {
    const site = uniqueId('site').toLowerCase();
    const first = uniqueId('cfgdev');
    const later = uniqueId('cfgdev');
    await expectSuccess(reg.create({ deviceId: first }), 'Registry.create creates a new device');
    await expectSuccess(reg.create({ deviceId: later }), 'Registry.create creates a new device');
    await expectSuccess(reg.updateTwin(first, { tags: { site } }, '*'), 'Registry.updateTwin sets tags');
    const id = uniqueId('chiller').toLowerCase();
    const config = {
      id,
      content: { deviceContent: { 'properties.desired.chiller-water': { temperature: 66, pressure: 28 } } },
      metrics: { queries: { waterSettingsPending: `SELECT deviceId FROM devices WHERE tags.site = '${site}'` } },
      targetCondition: `tags.site = '${site}'`,
      priority: 20,
      labels: { owner: 'compat' },
    };
    const { responseBody: added } = await expectSuccess(reg.addConfiguration(config), 'Registry.addConfiguration creates a configuration');
    expectEqual(added.id, id, 'the created configuration carries its id');
    expectThat(typeof added.etag === 'string' && added.etag !== '', 'a created configuration carries an etag', `etag ${JSON.stringify(added.etag)}`);
    expectEqual(added.schemaVersion, '1.0', 'addConfiguration sets schemaVersion 1.0');
    await eventually(async () => (await desiredOf(first))?.temperature === 66,
      'the configuration\'s desired properties reach the device it targets');
    expectEqual(await desiredOf(later), undefined, 'a device the condition does not select is left alone');
    await expectSuccess(reg.updateTwin(later, { tags: { site } }, '*'), 'Registry.updateTwin sets tags');
    await eventually(async () => (await desiredOf(later))?.pressure === 28,
      'a device that starts matching the target condition gets the desired properties');

    const { responseBody: got } = await expectSuccess(reg.getConfiguration(id), 'Registry.getConfiguration returns the configuration');
    expectEqual(got.targetCondition, config.targetCondition, 'the configuration keeps its target condition');
    expectEqual(got.priority, 20, 'the configuration keeps its priority');
    expectEqual(got.labels, { owner: 'compat' }, 'the configuration keeps its labels');
    expectEqual(got.systemMetrics.results.targetedCount, 2, 'systemMetrics.results.targetedCount counts the devices targeted');
    expectEqual(got.systemMetrics.results.appliedCount, 2, 'systemMetrics.results.appliedCount counts the devices it applies to');
    expectEqual(got.metrics.results.waterSettingsPending, 2, 'metrics.results counts each metric query\'s devices');

    const { responseBody: all } = await expectSuccess(reg.getConfigurations(), 'Registry.getConfigurations lists configurations');
    expectThat(Array.isArray(all) && all.some((c) => c.id === id), 'getConfigurations lists the new configuration', `got ${JSON.stringify(all?.map?.((c) => c.id))}`);

    got.priority = 30;
    const { responseBody: updated } = await expectSuccess(reg.updateConfiguration(got),
      'Registry.updateConfiguration with the etag changes the priority');
    expectEqual(updated.priority, 30, 'the update is returned');
    expectThat(updated.etag !== got.etag, 'an update changes the etag', `etag stayed ${got.etag}`);
    await expectFailure(reg.updateConfiguration(got), { status: 412, code: 'PreconditionFailed' },
      'updateConfiguration with a stale etag fails with 412 PreconditionFailed');
    await expectSuccess(reg.updateConfiguration(updated, true), 'updateConfiguration with forceUpdate (If-Match: *) is accepted');

    await expectSuccess(reg.removeConfiguration(id), 'Registry.removeConfiguration removes the configuration');
    await expectFailure(reg.getConfiguration(id), { status: 404, code: 'ConfigurationNotFound' },
      'a removed configuration is gone (404)');
    expectEqual((await desiredOf(first))?.temperature, 66, 'removing a configuration leaves the devices\' desired properties');
  });

  test('a configuration id taken, or one with module content, is refused', async () => {
    const id = uniqueId('dup').toLowerCase();
    const config = { id, content: { deviceContent: { 'properties.desired.x': 1 } }, targetCondition: '', priority: 0 };
    await expectSuccess(reg.addConfiguration(config), 'Registry.addConfiguration creates a configuration');
    await expectFailure(reg.addConfiguration({ ...config }), { status: 409, code: 'ConfigurationAlreadyExists' },
      'adding a configuration whose id is taken fails with 409');
    await expectFailure(reg.addConfiguration({ id: uniqueId('mod').toLowerCase(), content: { modulesContent: { $edgeAgent: {} } } }),
      { status: 400 }, 'module content is refused with 400 (Herd has no modules)');
    await expectSuccess(reg.removeConfiguration(id), 'Registry.removeConfiguration removes the configuration');
  });
});
