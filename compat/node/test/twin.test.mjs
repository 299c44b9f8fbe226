// Device twins from the service side through azure-iothub: Registry.getTwin,
// Twin.get/update and Registry.updateTwin with the real etag and with "*"
// (§3.3, §4 of the compatibility reference).

import { describe, test } from 'node:test';
import iothub from 'azure-iothub';

import { hub, uniqueId, expectSuccess, expectFailure, expectEqual, expectThat } from '../lib/azure.mjs';

const { Registry } = iothub;

// strip removes the read-only $metadata and $version members so that twin
// sections can be compared with what was written.
function strip(section) {
  const out = {};
  for (const [k, v] of Object.entries(section ?? {})) {
    if (k === '$metadata' || k === '$version') continue;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) ? strip(v) : v;
  }
  return out;
}

describe('Twins from the service', () => {
  const reg = Registry.fromConnectionString(hub.cs('iothubowner'));

  async function newDevice(prefix) {
    const id = uniqueId(prefix);
    await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    return id;
  }

  test('getTwin of a new device: empty tags and properties, versions and etag', async () => {
    const id = await newDevice('twin');
    const { responseBody: t, httpResponse } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin of a device');
    expectEqual(t.deviceId, id, 'the twin carries its deviceId');
    expectThat(typeof t.etag === 'string' && t.etag !== '' && t.etag !== '*',
      'Azure returns a real twin etag (not "*", which the SDK substitutes when none is sent)', `etag ${JSON.stringify(t.etag)}`);
    expectThat(httpResponse.headers.etag, 'Azure sends an ETag header with a twin', 'sent none');
    expectEqual(strip(t.tags), {}, 'a new twin has no tags');
    expectEqual(strip(t.properties.desired), {}, 'a new twin has no desired properties');
    expectEqual(strip(t.properties.reported), {}, 'a new twin has no reported properties');
    expectEqual(t.properties.desired.$version, 1, 'a new twin\'s desired $version is 1');
    expectThat(Number.isInteger(t.properties.reported.$version), 'reported properties carry a numeric $version',
      `reported ${JSON.stringify(t.properties.reported)}`);
    expectThat(Number.isInteger(t.version), 'the twin carries a numeric version', `version ${JSON.stringify(t.version)}`);
    expectEqual(t.status, 'enabled', 'the twin mirrors the device status');
  });

  test('twin.update with the real etag merges tags and desired properties', async () => {
    const id = await newDevice('twinupd');
    const { responseBody: twin } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    const etag0 = twin.etag;
    const v0 = twin.properties.desired.$version;
    const { result: t1 } = await expectSuccess(twin.update({
      tags: { building: 43, site: { city: 'Oslo' } },
      properties: { desired: { floor: 3, telemetry: { interval: 10, unit: 's' } } },
    }), 'twin.update (PATCH with If-Match: the twin\'s etag) applies the patch');
    expectThat(t1.etag && t1.etag !== etag0, 'a twin write returns a new etag', `etag before ${etag0}, after ${t1.etag}`);
    expectEqual(twin.etag, t1.etag, 'the SDK keeps the etag of the reply in the Twin object');
    expectEqual(t1.properties.desired.$version, v0 + 1, 'each desired write bumps desired $version by exactly 1');

    const { result: t2 } = await expectSuccess(twin.update({
      tags: { site: { floorplan: 'b' } },
      properties: { desired: { telemetry: { unit: null }, mode: 'eco' } },
    }), 'a second twin.update with the etag of the first reply is accepted');
    expectEqual(strip(t2.tags), { building: 43, site: { city: 'Oslo', floorplan: 'b' } },
      'Azure deep-merges tags');
    expectEqual(strip(t2.properties.desired), { floor: 3, telemetry: { interval: 10 }, mode: 'eco' },
      'Azure deep-merges desired properties, and null deletes a key');
    expectEqual(t2.properties.desired.$version, v0 + 2, 'each desired write bumps desired $version by exactly 1');
    const md = t2.properties.desired.$metadata;
    expectThat(md && md.$lastUpdated && md.mode && md.mode.$lastUpdated && md.mode.$lastUpdatedVersion === v0 + 2,
      'desired $metadata has $lastUpdated on every node and $lastUpdatedVersion naming the write',
      `$metadata ${JSON.stringify(md)}`);

    const { responseBody: fresh } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    expectEqual([strip(fresh.tags), strip(fresh.properties.desired), fresh.etag],
      [strip(t2.tags), strip(t2.properties.desired), t2.etag], 'a later getTwin returns what the last update returned');
  });

  test('updateTwin with a stale etag fails with InvalidEtagError (412) and changes nothing', async () => {
    const id = await newDevice('twinstale');
    const { responseBody: t0 } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    const { responseBody: t1 } = await expectSuccess(reg.updateTwin(id, { tags: { a: 1 } }, t0.etag),
      'Registry.updateTwin with the current etag applies the patch');
    await expectFailure(reg.updateTwin(id, { tags: { a: 2 } }, t0.etag),
      { name: 'InvalidEtagError', status: 412, code: 'PreconditionFailed' },
      'Registry.updateTwin with a stale etag fails with 412 PreconditionFailed (InvalidEtagError)');
    await expectFailure(reg.updateTwin(id, { properties: { desired: { x: 1 } } }, 'abc'),
      { name: 'InvalidEtagError', status: 412 },
      'Registry.updateTwin with a made-up etag fails with InvalidEtagError (as in the SDK\'s own end-to-end test)');
    const { responseBody: now } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    expectEqual([strip(now.tags), strip(now.properties.desired), now.etag], [{ a: 1 }, {}, t1.etag],
      'a refused twin write changes nothing');
  });

  test('twin.update from an outdated Twin object fails with InvalidEtagError', async () => {
    const id = await newDevice('twinrace');
    const { responseBody: mine } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    const { responseBody: theirs } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    await expectSuccess(theirs.update({ tags: { owner: 'them' } }), 'twin.update with the current etag applies');
    await expectFailure(mine.update({ tags: { owner: 'me' } }), { name: 'InvalidEtagError', status: 412 },
      'twin.update sends If-Match with the etag the Twin was read with; after another write Azure answers 412');
    await expectSuccess(mine.get(), 'twin.get refreshes a Twin object');
    expectEqual(strip(mine.tags), { owner: 'them' }, 'twin.get returns the current tags');
    await expectSuccess(mine.update({ tags: { owner: 'me' } }), 'twin.update after twin.get uses the fresh etag and applies');
  });

  test('updateTwin with "*" writes whatever the current etag', async () => {
    const id = await newDevice('twinstar');
    await expectSuccess(reg.updateTwin(id, { tags: { n: 1 } }, '*'), 'Registry.updateTwin with etag "*" is unconditional');
    const { responseBody: t } = await expectSuccess(reg.updateTwin(id, { tags: { n: 2 } }, '*'),
      'Registry.updateTwin with etag "*" is unconditional, also after other writes');
    expectEqual(strip(t.tags), { n: 2 }, 'the "*" update was applied');
    expectEqual(t.deviceId, id, 'the updateTwin reply is the full twin with its deviceId');
  });

  test('desired: null removes all desired properties', async () => {
    const id = await newDevice('twinnull');
    await expectSuccess(reg.updateTwin(id, { properties: { desired: { a: 1, b: { c: 2 } } } }, '*'),
      'Registry.updateTwin sets desired properties');
    const { responseBody: t } = await expectSuccess(reg.updateTwin(id, { properties: { desired: null } }, '*'),
      'Registry.updateTwin with {properties:{desired:null}} is accepted');
    expectEqual(strip(t.properties.desired), {}, 'desired: null removes every desired property (SDK end-to-end test)');
  });

  test('twin operations on an unknown device fail with DeviceNotFoundError', async () => {
    const id = uniqueId('twinnone');
    await expectFailure(reg.getTwin(id), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Registry.getTwin of an unknown device fails with 404 DeviceNotFound (DeviceNotFoundError)');
    await expectFailure(reg.updateTwin(id, { tags: { a: 1 } }, '*'),
      { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Registry.updateTwin of an unknown device fails with 404 DeviceNotFound (DeviceNotFoundError)');
  });

  test('an invalid twin patch is refused with ArgumentError (400) and writes nothing', async () => {
    const id = await newDevice('twinbad');
    await expectFailure(reg.updateTwin(id, { tags: { 'bad.key': 1 } }, '*'), { name: 'ArgumentError', status: 400 },
      'a twin key containing "." is refused with 400 ArgumentInvalid (ArgumentError)');
    const { responseBody: t } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    expectEqual(strip(t.tags), {}, 'a refused twin patch writes nothing');
  });
});
