// Device clients (azure-iot-device) over MQTT on 8883 and MQTT over
// WebSocket on 443: connecting, refusals, telemetry, twins from the device
// side (§8 of the compatibility reference).

import { after, describe, test } from 'node:test';

import {
  uniqueId, expectSuccess, expectFailure, expectEqual, expectThat, eventually, hub, newKey,
} from '../lib/azure.mjs';
import {
  Fleet, Message, Mqtt, MqttWs, transports, ownerRegistry, registerDevice, nextEvent, expectEvent,
  reportProperties,
} from '../lib/device.mjs';

const reg = ownerRegistry();
// mqtt.js's text for a CONNACK refusal (return code 5 or 4); a socket that
// never reached the hub says ECONNREFUSED instead, though the SDK calls
// both UnauthorizedError on a first connection.
const refused = /Connection refused: (Not authorized|Bad username or password)/;
const fleet = new Fleet();
after(() => fleet.closeAll());

function strip(section) {
  const out = {};
  for (const [k, v] of Object.entries(section ?? {})) {
    if (k === '$metadata' || k === '$version' || typeof v === 'function') continue;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) ? strip(v) : v;
  }
  return out;
}

describe('Device connections', () => {
  for (const [name, Transport] of Object.entries(transports)) {
    test(`a device connects over ${name} and sends acknowledged telemetry`, async () => {
      const dev = await registerDevice(reg, `conn${name}`);
      const client = await fleet.open(dev.cs, Transport);
      const msg = new Message(JSON.stringify({ temperature: 21.5 }));
      msg.messageId = uniqueId('msg');
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      msg.properties.add('temperatureAlert', 'false');
      const res = await expectSuccess(client.sendEvent(msg),
        `sendEvent over ${name} is acknowledged (PUBACK) and resolves with MessageEnqueued`);
      expectEqual(res?.constructor?.name, 'MessageEnqueued', 'sendEvent resolves with a MessageEnqueued result');
      await expectSuccess(client.sendEvent(new Message('')), 'an empty telemetry message is acknowledged too');
      await eventually(async () => (await reg.get(dev.id)).responseBody.connectionState === 'Connected',
        `the registry shows a connected ${name} device as connectionState "Connected"`);
      await expectSuccess(client.close(), 'close disconnects the device client');
    });
  }

  test('many devices connect at once over MQTT and MQTT over WebSocket', async () => {
    const n = 20;
    const devs = await Promise.all(Array.from({ length: 2 * n }, (_, i) => registerDevice(reg, `many${i % 2 ? 'ws' : 'tcp'}`)));
    const clients = await Promise.all(devs.map((d, i) => fleet.open(d.cs, i % 2 ? MqttWs : Mqtt,
      `${2 * n} device clients (half over MqttWs) open concurrently`)));
    await Promise.all(clients.map((c, i) => expectSuccess(c.sendEvent(new Message(devs[i].id)),
      'each of many connected devices gets its telemetry acknowledged')));
    await Promise.all(clients.map((c) => c.close()));
  });

  for (const [name, Transport] of Object.entries(transports)) {
    test(`a device with a wrong key is refused over ${name} (UnauthorizedError)`, async () => {
      const dev = await registerDevice(reg, `badkey${name}`);
      // The same device with its real key connects, so the refusal below is
      // about the key, not about reaching the hub.
      const good = await fleet.open(dev.cs, Transport);
      await good.close();
      const client = fleet.client(hub.deviceCS(dev.id, newKey()), Transport);
      await expectFailure(client.open(), { name: 'UnauthorizedError', message: refused },
        `Client.open over ${name} with a key the device does not have fails with UnauthorizedError (CONNACK 5, not authorized)`);
    });
  }

  test('an unknown device and a disabled device are refused (UnauthorizedError)', async () => {
    const unknown = fleet.client(hub.deviceCS(uniqueId('ghost'), newKey()), Mqtt);
    await expectFailure(unknown.open(), { name: 'UnauthorizedError', message: refused },
      'Client.open for a device id that is not registered fails with UnauthorizedError');
    const dev = await registerDevice(reg, 'disabled');
    const { responseBody: d } = await reg.get(dev.id);
    await expectSuccess(reg.update({ ...d, status: 'disabled' }), 'Registry.update disables a device');
    await expectFailure(fleet.client(dev.cs, Mqtt).open(), { name: 'UnauthorizedError', message: refused },
      'Client.open for a disabled device fails with UnauthorizedError');
  });

  test('the secondary key connects as well as the primary', async () => {
    const id = uniqueId('second');
    const { responseBody: d } = await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
    await fleet.open(hub.deviceCS(id, d.authentication.symmetricKey.secondaryKey), Mqtt,
      'a device may authenticate with a token signed with its secondary key');
  });

  test('GatewayHostName selects the MQTT host the device dials', async () => {
    const dev = await registerDevice(reg, 'gw');
    await fleet.open(`${dev.cs};GatewayHostName=${hub.host}:8883`, Mqtt,
      'a device connection string with GatewayHostName=<host>:<port> connects to that address');
  });
});

describe('Twins from the device', () => {
  for (const [name, Transport] of Object.entries(transports)) {
    test(`over ${name}: getTwin, desired pushes, reported properties visible from the service`, async () => {
      const dev = await registerDevice(reg, `dtwin${name}`);
      await expectSuccess(reg.updateTwin(dev.id, { properties: { desired: { before: 'connect' } } }, '*'),
        'Registry.updateTwin sets desired properties');
      const client = await fleet.open(dev.cs, Transport);
      const twin = await expectSuccess(client.getTwin(), `client.getTwin over ${name} returns the device's twin`);
      expectEqual(strip(twin.properties.desired), { before: 'connect' },
        'the device twin has the desired properties written while the device was offline');
      const v0 = twin.properties.desired.$version;

      const pushed = nextEvent(twin, 'properties.desired', (delta) => delta?.floor === 3);
      // The listener makes the SDK subscribe to desired updates; a reported
      // update sent after that SUBSCRIBE on the same connection returns once
      // the hub has processed both.
      await expectSuccess(reportProperties(twin, { listening: true }), 'twin.properties.reported.update is acknowledged');
      const { responseBody: svcTwin } = await expectSuccess(
        reg.updateTwin(dev.id, { properties: { desired: { floor: 3, before: null } } }, '*'),
        'Registry.updateTwin changes desired properties of a connected device');
      const delta = await expectEvent(pushed,
        `a connected device gets a desired-property update on twin.on('properties.desired') over ${name}`);
      expectEqual(delta.$version, svcTwin.properties.desired.$version,
        'the desired push carries the new desired $version');
      expectThat(delta.$version === v0 + 1, 'the desired $version grows by one per service write',
        `went from ${v0} to ${delta.$version}`);
      expectEqual(strip(twin.properties.desired), { floor: 3 },
        'the SDK merges the push into twin.properties.desired: floor set, before deleted');

      await expectSuccess(reportProperties(twin, { firmware: '1.2.3', battery: { level: 80 } }),
        'twin.properties.reported.update is acknowledged');
      await expectSuccess(reportProperties(twin, { battery: { level: 79, charging: true }, firmware: null, listening: null }),
        'a second reported update is acknowledged');
      const { responseBody: seen } = await expectSuccess(reg.getTwin(dev.id), 'Registry.getTwin returns the twin');
      expectEqual(strip(seen.properties.reported), { battery: { level: 79, charging: true } },
        'reported properties written by the device are visible from the service, merged, null deleting');
      expectThat(seen.properties.reported.$version >= 2, 'reported $version grows with every reported write',
        `reported $version ${seen.properties.reported.$version}`);
      const fresh = await expectSuccess(client.getTwin(), 'client.getTwin again returns the twin');
      expectEqual(strip(fresh.properties.reported), { battery: { level: 79, charging: true } },
        'the device reads back its own reported properties');
    });
  }

  test('desired: null reaches a connected device as the removal of every desired property', async () => {
    // Azure's twin_e2e "can null out all desired properties": the device's
    // own twin ends with no desired properties.
    const dev = await registerDevice(reg, 'dtwinnull');
    await expectSuccess(reg.updateTwin(dev.id, { properties: { desired: { a: 1, b: { c: 2 } } } }, '*'),
      'Registry.updateTwin sets desired properties');
    const client = await fleet.open(dev.cs, Mqtt);
    const twin = await expectSuccess(client.getTwin(), 'client.getTwin returns the twin');
    expectEqual(strip(twin.properties.desired), { a: 1, b: { c: 2 } }, 'the device twin has the desired properties');
    const v0 = twin.properties.desired.$version;
    const pushed = nextEvent(twin, 'properties.desired', (delta) => delta?.$version === v0 + 1);
    await expectSuccess(reportProperties(twin, { listening: true }), 'twin.properties.reported.update is acknowledged');
    await expectSuccess(reg.updateTwin(dev.id, { properties: { desired: null } }, '*'),
      'Registry.updateTwin with {properties:{desired:null}} is accepted');
    await expectEvent(pushed, 'the device gets the desired push of the clearing write');
    expectEqual(strip(twin.properties.desired), {},
      'after merging the push the device twin has no desired properties (every removed key was sent as null)');
  });

  test('a device that reconnects gets desired changes made while it was away', async () => {
    const dev = await registerDevice(reg, 'dtwinre');
    let client = await fleet.open(dev.cs, Mqtt);
    await expectSuccess(client.getTwin(), 'client.getTwin returns the twin');
    await expectSuccess(client.close(), 'close disconnects the device client');
    await expectSuccess(reg.updateTwin(dev.id, { properties: { desired: { whileAway: true } } }, '*'),
      'Registry.updateTwin changes desired properties of an offline device');
    client = await fleet.open(dev.cs, Mqtt);
    const twin = await expectSuccess(client.getTwin(), 'client.getTwin after reconnecting returns the twin');
    expectEqual(strip(twin.properties.desired), { whileAway: true },
      'desired properties changed while the device was offline are in the twin it reads after reconnecting');
  });
});
