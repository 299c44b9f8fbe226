// The identity registry through azure-iothub's Registry: create, get,
// update, delete, list, statistics and the bulk operations, as Azure IoT
// Hub answers them (§3.6–3.8 of the compatibility reference).

import { describe, test } from 'node:test';
import iothub from 'azure-iothub';

import {
  hub, uniqueId, newKey, expectSuccess, expectFailure, expectEqual, expectThat,
} from '../lib/azure.mjs';

const { Registry } = iothub;
const registry = () => Registry.fromConnectionString(hub.cs('iothubowner'));
const base64Key = /^[A-Za-z0-9+/]{43}=$/;

describe('Registry: single devices', () => {
  const reg = registry();

  test('create with hub-generated keys returns the full device', async () => {
    const id = uniqueId('gen');
    const { responseBody: d, httpResponse } = await expectSuccess(reg.create({ deviceId: id }),
      'Registry.create({deviceId}) creates the device (200) and returns it');
    expectEqual(httpResponse.statusCode, 200, 'Azure answers a device create with 200');
    expectEqual(d.deviceId, id, 'Azure returns the created device with its deviceId');
    const k = d.authentication?.symmetricKey ?? {};
    expectThat(base64Key.test(k.primaryKey) && base64Key.test(k.secondaryKey),
      'Azure generates both SAS keys (base64 of 32 bytes) when the request leaves them empty',
      `returned keys ${JSON.stringify(k)}`);
    expectThat(k.primaryKey !== k.secondaryKey, 'Azure generates two different keys', `gave the same key twice`);
    expectEqual(d.authentication.type, 'sas', 'Azure reports authentication.type "sas" for a key-based device');
    expectEqual(d.status, 'enabled', 'a new device is enabled');
    expectEqual(d.connectionState, 'Disconnected', 'a device that never connected is "Disconnected"');
    expectThat(typeof d.etag === 'string' && d.etag !== '', 'Azure returns the device etag',
      `etag ${JSON.stringify(d.etag)}`);
    expectThat(typeof d.generationId === 'string' && d.generationId !== '',
      'Azure returns a generationId for every device', `generationId ${JSON.stringify(d.generationId)}`);
    expectThat(d.cloudToDeviceMessageCount !== undefined, 'Azure returns cloudToDeviceMessageCount',
      'left it out');
    expectThat(httpResponse.headers.etag, 'Azure sends an ETag header with a device', 'sent none');

    const got = await expectSuccess(reg.get(id), 'Registry.get returns a device that exists');
    expectEqual(got.responseBody.authentication.symmetricKey, k, 'Registry.get returns the keys generated at creation');
    expectEqual(got.responseBody.etag, d.etag, 'Registry.get returns the etag of the last write');
    expectEqual(got.responseBody.generationId, d.generationId, 'the generationId does not change between reads');
  });

  test('create with supplied keys keeps them', async () => {
    const id = uniqueId('keys');
    const keys = { primaryKey: newKey(), secondaryKey: newKey() };
    const { responseBody: d } = await expectSuccess(
      reg.create({ deviceId: id, status: 'disabled', authentication: { symmetricKey: keys } }),
      'Registry.create accepts caller-supplied SAS keys');
    expectEqual(d.authentication.symmetricKey, keys, 'Azure stores the SAS keys the caller supplied');
    expectEqual(d.status, 'disabled', 'Azure creates the device with the status the caller gave');
    const got = await expectSuccess(reg.get(id), 'Registry.get returns a device that exists');
    expectEqual(got.responseBody.authentication.symmetricKey, keys, 'Registry.get returns the supplied keys');
  });

  test('creating an existing device fails with DeviceAlreadyExistsError (409)', async () => {
    const id = uniqueId('dup');
    const { responseBody: first } = await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    await expectFailure(reg.create({ deviceId: id }),
      { name: 'DeviceAlreadyExistsError', status: 409, code: 'DeviceAlreadyExists' },
      'Registry.create of an existing deviceId fails with 409 DeviceAlreadyExists (DeviceAlreadyExistsError)');
    const got = await expectSuccess(reg.get(id), 'Registry.get returns a device that exists');
    expectEqual(got.responseBody.authentication.symmetricKey, first.authentication.symmetricKey,
      'a refused duplicate create leaves the existing device untouched');
  });

  test('an invalid device id is refused with ArgumentError (400)', async () => {
    await expectFailure(reg.create({ deviceId: 'bad id with spaces' }), { name: 'ArgumentError', status: 400 },
      'Registry.create of an id with spaces fails with 400 (ArgumentError)');
  });

  test('update changes status and keys, and a new etag is returned', async () => {
    const id = uniqueId('upd');
    const { responseBody: d } = await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    const keys = { primaryKey: newKey(), secondaryKey: newKey() };
    const { responseBody: u, httpResponse } = await expectSuccess(reg.update({
      deviceId: id, status: 'disabled', statusReason: 'maintenance', authentication: { symmetricKey: keys },
    }), 'Registry.update (If-Match "*") updates an existing device');
    expectEqual(httpResponse.statusCode, 200, 'Azure answers a device update with 200');
    expectEqual(u.status, 'disabled', 'Azure applies the new status');
    expectEqual(u.statusReason, 'maintenance', 'Azure applies the new statusReason');
    expectEqual(u.authentication.symmetricKey, keys, 'Azure applies new SAS keys given in an update');
    expectThat(u.etag && u.etag !== d.etag, 'every device write produces a new etag',
      `etag before ${d.etag}, after ${u.etag}`);
    expectEqual(u.generationId, d.generationId, 'an update keeps the generationId');
    const got = await expectSuccess(reg.get(id), 'Registry.get returns a device that exists');
    expectEqual([got.responseBody.status, got.responseBody.statusReason, got.responseBody.etag],
      ['disabled', 'maintenance', u.etag], 'Registry.get shows the update');
  });

  test('update without authentication leaves the device with valid keys', async () => {
    const id = uniqueId('regen');
    await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    const { responseBody: u } = await expectSuccess(reg.update({ deviceId: id, status: 'enabled' }),
      'Registry.update with no authentication (normalised to empty keys) is accepted');
    const k = u.authentication.symmetricKey;
    expectThat(base64Key.test(k.primaryKey) && base64Key.test(k.secondaryKey),
      'a device updated with empty keys still has two SAS keys', `returned ${JSON.stringify(k)}`);
  });

  test('delete removes the device; later reads fail with DeviceNotFoundError (404)', async () => {
    const id = uniqueId('del');
    await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    const { httpResponse } = await expectSuccess(reg.delete(id), 'Registry.delete (If-Match "*") deletes a device');
    expectEqual(httpResponse.statusCode, 204, 'Azure answers a device delete with 204 No Content');
    await expectFailure(reg.get(id), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Registry.get of a deleted device fails with 404 ErrorCode:DeviceNotFound (DeviceNotFoundError)');
    await expectFailure(reg.getTwin(id), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'a twin is deleted with its device: Registry.getTwin fails with DeviceNotFoundError');
    await expectFailure(reg.delete(id), { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Registry.delete of a device that does not exist fails with DeviceNotFoundError');
  });

  test('a deleted id can be created again, with a new generationId', async () => {
    const id = uniqueId('again');
    const { responseBody: d1 } = await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    await expectSuccess(reg.delete(id), 'Registry.delete deletes a device');
    const { responseBody: d2 } = await expectSuccess(reg.create({ deviceId: id }), 'a deleted id can be created again');
    expectThat(d2.generationId !== d1.generationId, 'generationId tells apart re-created devices with the same id',
      `gave the same generationId ${d1.generationId}`);
  });

  test('get of an unknown device fails with DeviceNotFoundError (404)', async () => {
    const err = await expectFailure(reg.get(uniqueId('nobody')),
      { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Registry.get of an unknown id fails with 404 ErrorCode:DeviceNotFound (DeviceNotFoundError)');
    const body = JSON.parse(err.responseBody);
    expectThat(/^ErrorCode:DeviceNotFound;.+/.test(body.Message) && typeof body.ExceptionMessage === 'string',
      'Azure\'s error body is {"Message":"ErrorCode:DeviceNotFound;<text>","ExceptionMessage":"Tracking ID:…"}',
      `sent ${err.responseBody}`);
  });

  test('ids with characters that need URL encoding round-trip', async () => {
    const id = `${uniqueId('enc')}$'!(x)=@,`;
    const { responseBody: d } = await expectSuccess(reg.create({ deviceId: id }),
      `Registry.create accepts the id ${id} (Azure allows $ ' ! ( ) = @ , in ids)`);
    expectEqual(d.deviceId, id, 'Azure returns the id exactly as created');
    const got = await expectSuccess(reg.get(id), 'Registry.get finds a device whose id needed URL encoding');
    expectEqual(got.responseBody.deviceId, id, 'Registry.get returns the id exactly as created');
    await expectSuccess(reg.delete(id), 'Registry.delete deletes a device whose id needed URL encoding');
  });
});

describe('Registry: list and statistics', () => {
  const reg = registry();

  test('list returns every device with its id and keys', async () => {
    const ids = [uniqueId('list'), uniqueId('list')];
    for (const id of ids) await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    const { responseBody: list } = await expectSuccess(reg.list(), 'Registry.list returns the devices');
    expectThat(Array.isArray(list), 'Registry.list returns an array of devices', `returned ${typeof list}`);
    for (const id of ids) {
      const d = list.find((x) => x.deviceId === id);
      expectThat(d, `Registry.list includes the device ${id}`, `left it out of ${list.length} devices`);
      expectThat(base64Key.test(d.authentication?.symmetricKey?.primaryKey ?? ''),
        'Registry.list returns each device with its keys', `gave ${JSON.stringify(d.authentication)}`);
    }
  });

  test('getRegistryStatistics counts total, enabled and disabled devices exactly', async () => {
    const before = (await expectSuccess(reg.getRegistryStatistics(), 'Registry.getRegistryStatistics answers')).responseBody;
    for (const k of ['totalDeviceCount', 'enabledDeviceCount', 'disabledDeviceCount']) {
      expectThat(Number.isInteger(before[k]), `Azure returns ${k} as a number`, `returned ${JSON.stringify(before)}`);
    }
    const ids = [uniqueId('stat'), uniqueId('stat'), uniqueId('stat')];
    await expectSuccess(reg.create({ deviceId: ids[0] }), 'Registry.create creates a new device');
    await expectSuccess(reg.create({ deviceId: ids[1] }), 'Registry.create creates a new device');
    await expectSuccess(reg.create({ deviceId: ids[2], status: 'disabled' }), 'Registry.create creates a new device');
    const mid = (await expectSuccess(reg.getRegistryStatistics(), 'Registry.getRegistryStatistics answers')).responseBody;
    expectEqual(mid, {
      totalDeviceCount: before.totalDeviceCount + 3,
      enabledDeviceCount: before.enabledDeviceCount + 2,
      disabledDeviceCount: before.disabledDeviceCount + 1,
    }, 'after creating two enabled and one disabled device the statistics grow by exactly 3/2/1');
    await expectSuccess(reg.delete(ids[2]), 'Registry.delete deletes a device');
    await expectSuccess(reg.update({ deviceId: ids[0], status: 'disabled' }), 'Registry.update updates a device');
    const after = (await expectSuccess(reg.getRegistryStatistics(), 'Registry.getRegistryStatistics answers')).responseBody;
    expectEqual(after, {
      totalDeviceCount: before.totalDeviceCount + 2,
      enabledDeviceCount: before.enabledDeviceCount + 1,
      disabledDeviceCount: before.disabledDeviceCount + 1,
    }, 'deleting a disabled device and disabling an enabled one moves the counts exactly');
  });
});

describe('Registry: bulk operations', () => {
  const reg = registry();

  test('addDevices creates every device, with generated or supplied keys', async () => {
    const keys = { primaryKey: newKey(), secondaryKey: newKey() };
    const ids = [uniqueId('bulk'), uniqueId('bulk'), uniqueId('bulk')];
    const { responseBody: r, httpResponse } = await expectSuccess(reg.addDevices([
      { deviceId: ids[0] },
      { deviceId: ids[1], status: 'disabled' },
      { deviceId: ids[2], authentication: { symmetricKey: keys } },
    ]), 'Registry.addDevices creates new devices in one request');
    expectEqual(httpResponse.statusCode, 200, 'Azure answers a fully successful bulk request with 200');
    expectEqual(r.isSuccessful, true, 'a fully successful bulk request has isSuccessful true');
    expectEqual(r.errors ?? [], [], 'a fully successful bulk request lists no errors');
    const got = await Promise.all(ids.map((id) => expectSuccess(reg.get(id), `Registry.get finds bulk-created ${id}`)));
    expectThat(base64Key.test(got[0].responseBody.authentication.symmetricKey.primaryKey),
      'bulk create generates keys when none are given', `gave ${JSON.stringify(got[0].responseBody.authentication)}`);
    expectEqual(got[1].responseBody.status, 'disabled', 'bulk create applies the status given');
    expectEqual(got[2].responseBody.authentication.symmetricKey, keys, 'bulk create keeps supplied keys');
  });

  test('addDevices reports an existing device as DeviceAlreadyExists and creates the others', async () => {
    const existing = uniqueId('bulkdup');
    await expectSuccess(reg.create({ deviceId: existing }), 'Registry.create creates a new device');
    const fresh = uniqueId('bulkdup');
    const err = await expectFailure(reg.addDevices([{ deviceId: existing }, { deviceId: fresh }]),
      { name: 'ArgumentError', status: 400 },
      'Registry.addDevices with an existing id answers 400 with a BulkRegistryOperationResult (ArgumentError)');
    const r = JSON.parse(err.responseBody);
    expectEqual(r.isSuccessful, false, 'the 400 bulk result says isSuccessful false');
    expectEqual(r.errors.map((e) => [e.deviceId, e.errorCode]), [[existing, 'DeviceAlreadyExists']],
      'the bulk result lists the existing device, with errorCode "DeviceAlreadyExists" (a name, not a number)');
    await expectSuccess(reg.get(fresh), 'the other devices of a partly failed bulk create are created');
  });

  test('updateDevices with forceUpdate applies every change', async () => {
    const ids = [uniqueId('bupd'), uniqueId('bupd')];
    await expectSuccess(reg.addDevices(ids.map((deviceId) => ({ deviceId }))), 'Registry.addDevices creates devices');
    const { responseBody: r } = await expectSuccess(
      reg.updateDevices(ids.map((deviceId) => ({ deviceId, status: 'disabled', statusReason: 'bulk' })), true),
      'Registry.updateDevices(devices, true) (importMode Update) updates the devices');
    expectEqual(r.isSuccessful, true, 'a successful bulk update has isSuccessful true');
    for (const id of ids) {
      const { responseBody: d } = await expectSuccess(reg.get(id), 'Registry.get finds the device');
      expectEqual([d.status, d.statusReason], ['disabled', 'bulk'], 'bulk update applied the status to the device');
    }
  });

  test('updateDevices without force checks each device\'s etag', async () => {
    const [a, b] = [uniqueId('betag'), uniqueId('betag')];
    await expectSuccess(reg.addDevices([{ deviceId: a }, { deviceId: b }]), 'Registry.addDevices creates devices');
    const { responseBody: da } = await expectSuccess(reg.get(a), 'Registry.get finds the device');
    const { responseBody: db } = await expectSuccess(reg.get(b), 'Registry.get finds the device');
    // b changes after it was read, so the etag the caller holds is stale.
    await expectSuccess(reg.update({ deviceId: b, status: 'disabled' }), 'Registry.update updates a device');
    const err = await expectFailure(reg.updateDevices([
      { deviceId: a, eTag: da.etag, status: 'disabled', authentication: da.authentication },
      { deviceId: b, eTag: db.etag, status: 'enabled', authentication: db.authentication },
    ], false), { name: 'ArgumentError', status: 400 },
    'Registry.updateDevices(devices, false) (importMode UpdateIfMatchETag) with one stale eTag answers 400 with a BulkRegistryOperationResult');
    const r = JSON.parse(err.responseBody);
    expectEqual(r.errors.map((e) => e.deviceId), [b], 'only the device with the stale eTag is reported');
    expectEqual((await reg.get(a)).responseBody.status, 'disabled', 'the device with the current eTag is updated');
    expectEqual((await reg.get(b)).responseBody.status, 'disabled', 'the device with the stale eTag is left as it was');
  });

  test('removeDevices deletes devices, checking etags without force', async () => {
    const ids = [uniqueId('brm'), uniqueId('brm'), uniqueId('brm')];
    await expectSuccess(reg.addDevices(ids.map((deviceId) => ({ deviceId }))), 'Registry.addDevices creates devices');
    const { responseBody: r } = await expectSuccess(reg.removeDevices([{ deviceId: ids[0] }, { deviceId: ids[1] }], true),
      'Registry.removeDevices(devices, true) (importMode Delete) deletes the devices');
    expectEqual(r.isSuccessful, true, 'a successful bulk delete has isSuccessful true');
    for (const id of ids.slice(0, 2)) {
      await expectFailure(reg.get(id), { name: 'DeviceNotFoundError', status: 404 },
        'a device removed by removeDevices is gone (DeviceNotFoundError)');
    }
    const { responseBody: d } = await expectSuccess(reg.get(ids[2]), 'Registry.get finds the device');
    await expectFailure(reg.removeDevices([{ deviceId: ids[2], eTag: 'c3RhbGU=' }], false), { name: 'ArgumentError', status: 400 },
      'Registry.removeDevices(devices, false) (importMode DeleteIfMatchETag) with a stale eTag is refused for that device');
    await expectSuccess(reg.get(ids[2]), 'a device whose bulk delete was refused still exists');
    await expectSuccess(reg.removeDevices([{ deviceId: ids[2], eTag: d.etag }], false),
      'Registry.removeDevices(devices, false) with the current eTag deletes the device');
    await expectFailure(reg.get(ids[2]), { name: 'DeviceNotFoundError', status: 404 },
      'a device removed by removeDevices is gone (DeviceNotFoundError)');
  });
});
