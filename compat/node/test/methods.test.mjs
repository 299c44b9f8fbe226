// Direct methods: azure-iothub's Client.invokeDeviceMethod against devices
// that registered handlers with onDeviceMethod, over MQTT and MQTT over
// WebSocket; offline devices, unanswered methods, and devices that renew
// their SAS token (§5, §8.3, §8.8 of the compatibility reference).

import { after, describe, test } from 'node:test';

import { expectSuccess, expectFailure, expectEqual, expectThat, mismatch } from '../lib/azure.mjs';
import {
  DeviceClient, Fleet, Mqtt, MqttWs, SharedAccessKeyAuthenticationProvider, transports,
  ownerRegistry, serviceClient, registerDevice, nextEvent, expectEvent,
} from '../lib/device.mjs';

const reg = ownerRegistry();
const svc = serviceClient();
const fleet = new Fleet();
after(() => fleet.closeAll());

// echo registers a handler for method that answers 200 with what it got.
function echo(client, method, seen = []) {
  client.onDeviceMethod(method, (request, response) => {
    seen.push(request.payload);
    response.send(200, { method: request.methodName, got: request.payload ?? null }, () => {});
  });
  return seen;
}

// invoke calls a method and expects the device's answer. The device may have
// registered its handler just before, and the SDK subscribes to methods
// asynchronously, so calls wait up to 30 s for the device to be online for
// methods (connectTimeoutInSeconds), as Azure allows.
async function invoke(deviceId, params, azure) {
  params = { connectTimeoutInSeconds: 30, ...params };
  const { result } = await expectSuccess(svc.invokeDeviceMethod(deviceId, params), azure, 60_000);
  return result;
}

describe('Direct methods', () => {
  for (const [name, Transport] of Object.entries(transports)) {
    test(`invokeDeviceMethod reaches an onDeviceMethod handler over ${name}, for every kind of payload`, async () => {
      const dev = await registerDevice(reg, `meth${name}`);
      const client = await fleet.open(dev.cs, Transport);
      const seen = echo(client, 'echo');
      // The payloads of the SDK's own end-to-end test, and more.
      const payloads = [null, '', 'foo', { k1: 'v1' }, {}, 42, [1, 'two', { three: 3 }], { nested: { deep: [true, false] } }];
      for (const payload of payloads) {
        const r = await invoke(dev.id, { methodName: 'echo', payload, responseTimeoutInSeconds: 30 },
          `Client.invokeDeviceMethod of a method the device handles answers 200 (payload ${JSON.stringify(payload)})`);
        expectEqual(r, { status: 200, payload: { method: 'echo', got: payload } },
          `the result is {status, payload} as the device sent them; the device saw payload ${JSON.stringify(payload)} unchanged`);
      }
      expectEqual(seen, payloads, 'the device handler ran once per invocation, with each payload in order');
    });
  }

  test('the device chooses the status, and each device answers only its own methods', async () => {
    const devs = await Promise.all([0, 1, 2, 3].map((i) => registerDevice(reg, `methmany${i}`)));
    const clients = await Promise.all(devs.map((d, i) => fleet.open(d.cs, i % 2 ? MqttWs : Mqtt)));
    const calls = devs.map(() => 0);
    clients.forEach((c, i) => c.onDeviceMethod('whoami', (req, res) => {
      calls[i] += 1;
      res.send(201 + i, { id: devs[i].id }, () => {});
    }));
    const results = await Promise.all(devs.map((d) => invoke(d.id, { methodName: 'whoami', payload: null },
      'Client.invokeDeviceMethod answers 200 with the device\'s own status in the body')));
    results.forEach((r, i) => expectEqual(r, { status: 201 + i, payload: { id: devs[i].id } },
      'each invocation reaches exactly the addressed device, and its status (not the HTTP status) is in the result'));
    expectEqual(calls, [1, 1, 1, 1], 'each device was called exactly once');
  });

  test('the tutorial\'s lockDoor method', async () => {
    const dev = await registerDevice(reg, 'lockdoor');
    const client = await fleet.open(dev.cs, Mqtt);
    client.onDeviceMethod('lockDoor', (request, response) => {
      response.send(200, { Response: 'lockDoor called successfully' }, () => {});
    });
    const r = await invoke(dev.id, { methodName: 'lockDoor', payload: { lockTime: '10m' }, responseTimeoutInSeconds: 60 },
      'Client.invokeDeviceMethod(lockDoor) answers 200');
    expectEqual(r, { status: 200, payload: { Response: 'lockDoor called successfully' } },
      'the lockDoor result is what the device sent');
  });

  test('a method on an offline device fails with 404 DeviceNotOnline (404103)', async () => {
    const dev = await registerDevice(reg, 'offline');
    const err = await expectFailure(svc.invokeDeviceMethod(dev.id, { methodName: 'reboot', payload: null }),
      { status: 404 },
      'Client.invokeDeviceMethod on a registered device that is not connected fails with 404 DeviceNotOnline');
    const header = err.response?.headers?.['iothub-errorcode'];
    expectThat(header === 'DeviceNotOnline' || String(err.responseBody).includes('404103'),
      'Azure marks the refusal as DeviceNotOnline: iothub-errorcode DeviceNotOnline and 404103 in the body',
      `sent header ${header} and body ${err.responseBody}`);
    expectThat(String(err.responseBody).includes('404103'), 'the body carries the numeric code 404103',
      `body ${err.responseBody}`);

    // Connected, but not subscribed to methods: still not online for methods.
    const client = await fleet.open(dev.cs, Mqtt);
    await expectSuccess(client.getTwin(), 'client.getTwin returns the twin');
    await expectFailure(svc.invokeDeviceMethod(dev.id, { methodName: 'reboot', payload: null }), { status: 404 },
      'a device that is connected but never called onDeviceMethod is not online for methods: 404 DeviceNotOnline');
  });

  test('a method on an unknown device fails with DeviceNotFoundError', async () => {
    await expectFailure(svc.invokeDeviceMethod('no-such-device-anywhere', { methodName: 'reboot', payload: null }),
      { name: 'DeviceNotFoundError', status: 404, code: 'DeviceNotFound' },
      'Client.invokeDeviceMethod on an unregistered device fails with 404 DeviceNotFound (DeviceNotFoundError)');
  });

  test('a method the device does not answer fails with GatewayTimeoutError (504) after responseTimeoutInSeconds', async () => {
    const dev = await registerDevice(reg, 'silent');
    const client = await fleet.open(dev.cs, Mqtt);
    echo(client, 'known');
    // connectTimeoutInSeconds, as invoke() gives: the SDK subscribes to
    // methods in the background after onDeviceMethod, and a call that
    // arrives before the subscription is DeviceNotOnline, not a timeout.
    await expectFailure(svc.invokeDeviceMethod(dev.id, {
      methodName: 'unknown', payload: null, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 30,
    }),
      { name: 'GatewayTimeoutError', status: 504 },
      'a method the device has no handler for gets no answer, and Azure fails the call with 504 GatewayTimeout (504101)',
      60_000);
  });

  test('a device that renews its SAS token keeps receiving methods and desired updates', async () => {
    const dev = await registerDevice(reg, 'renew');
    const auth = SharedAccessKeyAuthenticationProvider.fromConnectionString(dev.cs);
    const client = fleet.track(DeviceClient.fromAuthenticationProvider(auth, Mqtt));
    await expectSuccess(client.open(), 'a device client opens');
    const seen = echo(client, 'ping');
    const twin = await expectSuccess(client.getTwin(), 'client.getTwin returns the twin');
    twin.on('properties.desired', () => {});
    await expectSuccess(client.getTwin(), 'client.getTwin returns the twin'); // the desired SUBSCRIBE is processed

    let renewals = 0;
    auth.on('newTokenAvailable', () => { renewals += 1; });
    // Valid 6 s, renewed 3 s before expiry: a new token (and, on MQTT, a
    // reconnect without re-subscribing) about every 3 s, starting now.
    await expectSuccess(client.setOptions({ tokenRenewal: { tokenValidTimeInSeconds: 6, tokenRenewalMarginInSeconds: 3 } }),
      'setOptions({tokenRenewal}) is accepted');
    for (let round = 1; round <= 3; round += 1) {
      const target = renewals + 1;
      await expectEvent(nextEvent(auth, 'newTokenAvailable', () => renewals >= target),
        'the SDK renews the token on its schedule', 30_000);
      // The renewal is a DISCONNECT and a new CONNECT with the new token and
      // no SUBSCRIBE. A twin request is held by the SDK until the new
      // connection is up, so its answer means the reconnect is complete.
      await expectSuccess(client.getTwin(), `client.getTwin after token renewal ${renewals} is answered`);
      const r = await invoke(dev.id, { methodName: 'ping', payload: { round } },
        `after token renewal ${renewals} the device still answers methods (Azure keeps the session's subscriptions)`);
      expectEqual(r, { status: 200, payload: { method: 'ping', got: { round } } },
        'the method result after a renewal is the device\'s answer');
      const pushed = nextEvent(twin, 'properties.desired', (d) => d?.round === round);
      await expectSuccess(reg.updateTwin(dev.id, { properties: { desired: { round } } }, '*'),
        'Registry.updateTwin changes desired properties');
      await expectEvent(pushed, `after token renewal ${renewals} the device still gets desired-property updates`);
    }
    if (seen.length !== 3) mismatch('the device handled each of the 3 invocations once', `it handled ${seen.length}`);
  });
});
