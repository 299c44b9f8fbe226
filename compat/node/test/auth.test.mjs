// Service authorization with the official SDK's own tokens: wrong keys,
// expired or foreign tokens and the permissions of the built-in shared
// access policies (§2.2, §2.5, §2.6 of the compatibility reference).

import { describe, test } from 'node:test';
import iothub from 'azure-iothub';

import { hub, uniqueId, newKey, expectSuccess, expectFailure, expectEqual } from '../lib/azure.mjs';

const { Registry, SharedAccessSignature } = iothub;
const unauthorized = { name: 'UnauthorizedError', status: 401, code: 'IotHubUnauthorizedAccess' };

function withKey(cs, key) {
  return cs.replace(/SharedAccessKey=[^;]*/, `SharedAccessKey=${key}`);
}

describe('Service authorization', () => {
  const owner = Registry.fromConnectionString(hub.cs('iothubowner'));

  test('a service token signed with a wrong key is refused with UnauthorizedError (401)', async () => {
    const bad = Registry.fromConnectionString(withKey(hub.cs('iothubowner'), newKey()));
    await expectFailure(bad.list(), unauthorized,
      'a request whose SAS token is signed with a key the policy does not have fails with 401 IotHubUnauthorizedAccess (UnauthorizedError)');
    const id = uniqueId('badkey');
    await expectFailure(bad.create({ deviceId: id }), unauthorized,
      'a create with a wrongly signed token fails with 401 (UnauthorizedError)');
    await expectFailure(owner.get(id), { name: 'DeviceNotFoundError', status: 404 },
      'an unauthorized create writes nothing');
  });

  test('a token naming an unknown policy is refused with UnauthorizedError (401)', async () => {
    const cs = hub.cs('iothubowner').replace(/SharedAccessKeyName=[^;]*/, 'SharedAccessKeyName=nosuchpolicy');
    await expectFailure(Registry.fromConnectionString(cs).list(), unauthorized,
      'a token whose skn names no policy of the hub fails with 401 (UnauthorizedError)');
  });

  test('a fixed SharedAccessSignature is accepted until it expires', async () => {
    const m = /SharedAccessKey=([^;]+)/.exec(hub.cs('iothubowner'));
    const token = SharedAccessSignature.create(hub.host, 'iothubowner', m[1], Math.floor(Date.now() / 1000) + 600).toString();
    await expectSuccess(Registry.fromSharedAccessSignature(token).getRegistryStatistics(),
      'Registry.fromSharedAccessSignature with a token from SharedAccessSignature.create is accepted');
  });

  test('an expired token is refused with UnauthorizedError (401)', async () => {
    const m = /SharedAccessKey=([^;]+)/.exec(hub.cs('iothubowner'));
    const token = SharedAccessSignature.create(hub.host, 'iothubowner', m[1], Math.floor(Date.now() / 1000) - 60).toString();
    await expectFailure(Registry.fromSharedAccessSignature(token).list(), unauthorized,
      'a token whose se is in the past fails with 401 IotHubUnauthorizedAccess (UnauthorizedError)');
  });

  test('registryRead may read the registry but not write it', async () => {
    const ro = Registry.fromConnectionString(hub.cs('registryRead'));
    const id = uniqueId('ro');
    await expectSuccess(owner.create({ deviceId: id }), 'Registry.create creates a new device');
    await expectSuccess(ro.get(id), 'the registryRead policy (RegistryRead) may read a device');
    await expectSuccess(ro.list(), 'the registryRead policy may list devices');
    await expectSuccess(ro.getRegistryStatistics(), 'the registryRead policy may read registry statistics');
    const other = uniqueId('ro');
    await expectFailure(ro.create({ deviceId: other }), unauthorized,
      'a create with the registryRead policy fails with 401 (UnauthorizedError): it lacks RegistryWrite');
    await expectFailure(ro.update({ deviceId: id, status: 'disabled' }), unauthorized,
      'an update with the registryRead policy fails with 401 (UnauthorizedError)');
    await expectFailure(ro.delete(id), unauthorized,
      'a delete with the registryRead policy fails with 401 (UnauthorizedError)');
    await expectFailure(ro.addDevices([{ deviceId: other }]), unauthorized,
      'a bulk create with the registryRead policy fails with 401 (UnauthorizedError)');
    await expectFailure(owner.get(other), { name: 'DeviceNotFoundError', status: 404 },
      'refused creates write nothing');
    const { responseBody: d } = await expectSuccess(owner.get(id), 'the device still exists');
    expectEqual(d.status, 'enabled', 'a refused update changes nothing');
  });

  test('registryReadWrite may write the registry; service may use twins but not the registry', async () => {
    const rw = Registry.fromConnectionString(hub.cs('registryReadWrite'));
    const svc = Registry.fromConnectionString(hub.cs('service'));
    const id = uniqueId('rw');
    await expectSuccess(rw.create({ deviceId: id }), 'the registryReadWrite policy (RegistryWrite) may create devices');
    await expectSuccess(svc.getTwin(id), 'the service policy (ServiceConnect) may read twins');
    await expectSuccess(svc.updateTwin(id, { tags: { by: 'service' } }, '*'), 'the service policy may update twins');
    await expectFailure(svc.create({ deviceId: uniqueId('svc') }), unauthorized,
      'a create with the service policy fails with 401 (UnauthorizedError): it lacks RegistryWrite');
    await expectFailure(rw.getTwin(id), unauthorized,
      'twin reads need ServiceConnect, so the registryReadWrite policy gets 401 (UnauthorizedError)');
    await expectFailure(Registry.fromConnectionString(hub.cs('device')).get(id), unauthorized,
      'the device policy (DeviceConnect only) may not read the registry: 401 (UnauthorizedError)');
  });
});
