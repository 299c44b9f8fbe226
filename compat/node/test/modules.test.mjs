// Module identities through azure-iothub's Registry: addModule,
// getModule, getModulesOnDevice, updateModule and removeModule, with the
// errors Azure answers (§3.6–3.7 of the compatibility reference).

import { describe, test } from 'node:test';
import iothub from 'azure-iothub';

import { hub, uniqueId, expectSuccess, expectFailure, expectEqual, expectThat } from '../lib/azure.mjs';

const { Registry } = iothub;
const base64Key = /^[A-Za-z0-9+/]{43}=$/;

describe('Registry: modules', () => {
  const reg = Registry.fromConnectionString(hub.cs('iothubowner'));

  test('add, get, list, update and remove a module', async () => {
    const deviceId = uniqueId('edge');
    await expectSuccess(reg.create({ deviceId, capabilities: { iotEdge: true } }), 'Registry.create creates an IoT Edge device');
    const { responseBody: m } = await expectSuccess(reg.addModule({ deviceId, moduleId: 'filter', managedBy: 'compat' }),
      'Registry.addModule creates a module of the device');
    expectEqual(m.deviceId, deviceId, 'the created module names its device');
    expectEqual(m.moduleId, 'filter', 'the created module carries its moduleId');
    expectEqual(m.managedBy, 'compat', 'the created module keeps managedBy');
    expectEqual(m.authentication?.type, 'sas', 'a module without authentication gets SAS keys');
    const k = m.authentication?.symmetricKey ?? {};
    expectThat(base64Key.test(k.primaryKey) && base64Key.test(k.secondaryKey),
      'Azure generates both SAS keys of a module when the request leaves them empty', `returned keys ${JSON.stringify(k)}`);
    expectThat(typeof m.etag === 'string' && m.etag !== '', 'a created module carries an etag', `etag ${JSON.stringify(m.etag)}`);
    expectThat(typeof m.generationId === 'string' && m.generationId !== '', 'a created module carries a generationId',
      `generationId ${JSON.stringify(m.generationId)}`);
    expectEqual(m.connectionState, 'Disconnected', 'a module that never connected is "Disconnected"');

    await expectFailure(reg.addModule({ deviceId, moduleId: 'filter' }), { name: 'DeviceAlreadyExistsError', status: 409, code: 'ModuleAlreadyExistsOnDevice' },
      'adding a module twice fails with 409 ModuleAlreadyExistsOnDevice');
    await expectFailure(reg.addModule({ deviceId: uniqueId('nobody'), moduleId: 'm' }), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'adding a module to a device that does not exist fails with 404 DeviceNotFound');
    await expectFailure(reg.addModule({ deviceId, moduleId: 'bad module id' }), { name: 'ArgumentError', status: 400 },
      'a module id with spaces is refused with 400');

    const { responseBody: got } = await expectSuccess(reg.getModule(deviceId, 'filter'), 'Registry.getModule returns the module');
    expectEqual(got.etag, m.etag, 'getModule returns the module\'s etag');
    expectEqual(got.authentication.symmetricKey.primaryKey, k.primaryKey, 'getModule returns the module\'s keys');
    await expectFailure(reg.getModule(deviceId, 'nope'), { status: 404, code: 'ModuleNotFound' },
      'getModule of a module that does not exist fails with 404 ModuleNotFound');

    await expectSuccess(reg.addModule({ deviceId, moduleId: '$edgeAgent' }), 'Registry.addModule creates a second module');
    const { responseBody: list } = await expectSuccess(reg.getModulesOnDevice(deviceId), 'Registry.getModulesOnDevice lists the device\'s modules');
    expectEqual(list.map((x) => x.moduleId).sort(), ['$edgeAgent', 'filter'], 'getModulesOnDevice lists both modules');

    got.managedBy = 'someone else';
    const { responseBody: up } = await expectSuccess(reg.updateModule(got), 'Registry.updateModule with the etag updates the module');
    expectEqual(up.managedBy, 'someone else', 'updateModule changes managedBy');
    expectThat(up.etag !== got.etag, 'an update moves the etag on', `etag stayed ${up.etag}`);
    await expectFailure(reg.updateModule({ ...got, managedBy: 'stale' }), { name: 'InvalidEtagError', status: 412, code: 'PreconditionFailed' },
      'updateModule with a stale etag fails with 412 PreconditionFailed');
    await expectSuccess(reg.updateModule({ ...up, managedBy: 'forced' }, true), 'updateModule with forceUpdate updates without the etag');

    await expectSuccess(reg.removeModule(deviceId, 'filter'), 'Registry.removeModule removes the module');
    await expectFailure(reg.getModule(deviceId, 'filter'), { status: 404, code: 'ModuleNotFound' }, 'a removed module is gone');
    await expectSuccess(reg.delete(deviceId), 'Registry.delete removes the device');
    await expectFailure(reg.getModulesOnDevice(deviceId), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'the modules of a deleted device are gone with it');
  });
});

describe('Registry: module twins', () => {
  const reg = Registry.fromConnectionString(hub.cs('iothubowner'));

  test('getModuleTwin and updateModuleTwin', async () => {
    const deviceId = uniqueId('edge');
    await expectSuccess(reg.create({ deviceId }), 'Registry.create creates a device');
    await expectSuccess(reg.addModule({ deviceId, moduleId: 'cam' }), 'Registry.addModule creates a module');
    const { responseBody: t } = await expectSuccess(reg.getModuleTwin(deviceId, 'cam'), 'Registry.getModuleTwin returns the module twin');
    expectEqual(t.deviceId, deviceId, 'a module twin names its device');
    expectEqual(t.moduleId, 'cam', 'a module twin names its module');
    expectEqual(t.properties?.desired?.$version, 1, 'a new module twin has desired $version 1');
    const { responseBody: up } = await expectSuccess(
      reg.updateModuleTwin(deviceId, 'cam', { tags: { lens: 'wide' }, properties: { desired: { fps: 30 } } }, t.etag),
      'Registry.updateModuleTwin with the etag patches the module twin');
    expectEqual(up.tags, { lens: 'wide' }, 'updateModuleTwin merges the tags');
    expectEqual(up.properties.desired.fps, 30, 'updateModuleTwin merges desired properties');
    expectEqual(up.properties.desired.$version, 2, 'a desired change moves desired $version on');
    await expectFailure(reg.updateModuleTwin(deviceId, 'cam', { tags: { x: 1 } }, t.etag), { name: 'InvalidEtagError', status: 412 },
      'updateModuleTwin with a stale etag fails with 412');
    const { responseBody: dt } = await expectSuccess(reg.getTwin(deviceId), 'Registry.getTwin returns the device twin');
    expectEqual(dt.tags ?? {}, {}, 'a module twin\'s tags are not the device twin\'s');
  });
});
