// Module identities through azure-iothub's Registry: addModule,
// getModule, getModulesOnDevice, updateModule and removeModule, with the
// errors Azure answers (§3.6–3.7 of the compatibility reference); module
// twins; and azure-iot-device's ModuleClient connecting as a module over
// MQTT and MQTT over WebSocket, with its twin, desired pushes, methods
// (Client.invokeDeviceMethod(deviceId, moduleId, …)) and telemetry.

import { after, describe, test } from 'node:test';
import deviceSdk from 'azure-iot-device';
import iothub from 'azure-iothub';

import { hub, uniqueId, newKey, expectSuccess, expectFailure, expectEqual, expectThat, eventually } from '../lib/azure.mjs';
import { Message, Mqtt, MqttWs, nextEvent, expectEvent, reportProperties } from '../lib/device.mjs';

const { ModuleClient } = deviceSdk;

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
    const { result: found } = await expectSuccess(
      reg.createQuery(`SELECT * FROM devices.modules WHERE deviceId = '${deviceId}' AND moduleId = 'cam'`).nextAsTwin(),
      'a query FROM devices.modules returns module twins');
    expectEqual(found.map((x) => [x.deviceId, x.moduleId, x.tags?.lens]), [[deviceId, 'cam', 'wide']],
      'the query finds the module twin with its tags');
  });
});

describe('ModuleClient', () => {
  const reg = Registry.fromConnectionString(hub.cs('iothubowner'));
  const svc = iothub.Client.fromConnectionString(hub.cs('iothubowner'));
  const clients = [];
  after(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close().catch(() => {})));
  });

  for (const [name, Transport] of Object.entries({ Mqtt, MqttWs })) {
    test(`a module connects over ${name} with its connection string: twin, desired pushes, methods, telemetry`, async () => {
      const deviceId = uniqueId(`mod${name}`);
      await expectSuccess(reg.create({ deviceId }), 'Registry.create creates a device');
      const { responseBody: m } = await expectSuccess(reg.addModule({ deviceId, moduleId: 'sensor' }), 'Registry.addModule creates a module');
      const cs = `HostName=${hub.host};DeviceId=${deviceId};ModuleId=sensor;SharedAccessKey=${m.authentication.symmetricKey.primaryKey}`;
      const client = ModuleClient.fromConnectionString(cs, Transport);
      client.on('error', () => {});
      clients.push(client);
      await expectSuccess(client.open(), `ModuleClient.open over ${name} connects the module`);

      const twin = await expectSuccess(client.getTwin(), 'ModuleClient.getTwin reads the module twin');
      // The listener makes the SDK subscribe to desired updates; the
      // reported update after it returns once the hub has processed both.
      const pushed = nextEvent(twin, 'properties.desired', (d) => d.rate === 5);
      await expectSuccess(reportProperties(twin, { state: 'ready' }), 'the module reports properties');
      await eventually(async () => (await reg.getModuleTwin(deviceId, 'sensor')).responseBody.properties.reported.state === 'ready',
        'the module\'s reported properties reach its module twin');
      const { responseBody: dt } = await reg.getTwin(deviceId);
      expectEqual(dt.properties.reported.state, undefined, 'a module\'s reported properties are not its device\'s');

      await expectSuccess(reg.updateModuleTwin(deviceId, 'sensor', { properties: { desired: { rate: 5 } } }, '*'),
        'Registry.updateModuleTwin sets a desired property');
      await expectEvent(pushed, 'the connected module is told about the desired change');

      client.onMethod('calibrate', (req, res) => res.send(200, { got: req.payload }, () => {}));
      const { result } = await expectSuccess(svc.invokeDeviceMethod(deviceId, 'sensor',
        { methodName: 'calibrate', payload: { level: 3 }, connectTimeoutInSeconds: 30, responseTimeoutInSeconds: 30 }),
      'Client.invokeDeviceMethod(deviceId, moduleId, …) reaches the module\'s onMethod handler', 60_000);
      expectEqual(result, { status: 200, payload: { got: { level: 3 } } }, 'the module\'s answer comes back as {status, payload}');
      await expectFailure(svc.invokeDeviceMethod(deviceId, 'nosuch', { methodName: 'calibrate' }), { status: 404 },
        'a method to a module that does not exist fails with 404');

      await expectSuccess(client.sendEvent(new Message('hello')), 'the module\'s telemetry is acknowledged');
      await eventually(async () => (await reg.getModule(deviceId, 'sensor')).responseBody.connectionState === 'Connected',
        'the registry shows the connected module as "Connected"');
      await expectSuccess(client.close(), 'ModuleClient.close disconnects');
    });
  }

  test('a module with a wrong key, or of a deleted device, cannot connect', async () => {
    const deviceId = uniqueId('modbad');
    await expectSuccess(reg.create({ deviceId }), 'Registry.create creates a device');
    await expectSuccess(reg.addModule({ deviceId, moduleId: 'm' }), 'Registry.addModule creates a module');
    const wrong = ModuleClient.fromConnectionString(`HostName=${hub.host};DeviceId=${deviceId};ModuleId=m;SharedAccessKey=${newKey()}`, Mqtt);
    wrong.on('error', () => {});
    clients.push(wrong);
    await expectFailure(wrong.open(), { name: 'UnauthorizedError' }, 'a module with a wrong key is refused');
    await expectSuccess(reg.delete(deviceId), 'Registry.delete removes the device and its modules');
    const { responseBody: d2 } = await expectSuccess(reg.create({ deviceId }), 'the device id is free again');
    expectThat(d2.deviceId === deviceId, 'the re-created device has the same id', 'it does not');
    await expectFailure(reg.getModule(deviceId, 'm'), { status: 404, code: 'ModuleNotFound' },
      'a re-created device has none of its old modules');
  });
});
