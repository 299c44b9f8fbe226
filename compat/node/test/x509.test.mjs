// X.509 device authentication with the official SDKs: devices whose
// connection string says x509=true and whose client certificate and key
// are given with client.setOptions({cert, key, ca}), over Mqtt (8883) and
// MqttWs (443); selfSigned devices (registered by thumbprint through
// azure-iothub's Registry.create) and certificateAuthority devices
// (certificate issued by a CA registered and verified with the hub); wrong
// and expired certificates (§1.4, §3.7, §8.2, §8.9 of the compatibility
// reference).
//
// The certificates come from the hub's own CLI, as a user would make them
// to try it: `herd cert device` (CA-signed by the data folder's local CA,
// or --self-signed) and `herd ca add local <data>/ca.pem`, which registers
// the local CA and proves possession of its key at once. Azure registers CA
// certificates through Azure Resource Manager, which has no counterpart in
// the data-plane SDKs, so there is no official SDK call to test for that.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { hub, uniqueId, expectSuccess, expectFailure, expectEqual, eventually } from '../lib/azure.mjs';
import {
  Fleet, Mqtt, MqttWs, transports, ownerRegistry, serviceClient, nextEvent, expectEvent, reportProperties,
} from '../lib/device.mjs';

const reg = ownerRegistry();
const svc = serviceClient();
const fleet = new Fleet();
after(() => fleet.closeAll());

// mqtt.js's text for CONNACK 5.
const refused = /Connection refused: Not authorized/;

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through compat/node/run.mjs`);
  return v;
}

const bin = () => need('HERD_COMPAT_BIN');
const data = () => need('HERD_COMPAT_DATA');
let dir;
let issued = 0;

function herd(...args) {
  const r = spawnSync(bin(), [...args, '--data', data()], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`herd ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** Issues a certificate for id with `herd cert device` and returns it. */
function issue(id, ...flags) {
  issued += 1;
  const out = path.join(dir, `${id}-${issued}`);
  const text = herd('cert', 'device', id, '--out', out, ...flags);
  const sha1 = /^thumbprint\s+([0-9A-F]{40}) \(SHA-1\)$/m.exec(text)?.[1];
  const sha256 = /^\s+([0-9A-F]{64}) \(SHA-256\)$/m.exec(text)?.[1];
  if (!sha1 || !sha256) throw new Error(`no thumbprints in:\n${text}`);
  return {
    cert: fs.readFileSync(path.join(out, `${id}.pem`), 'utf8'),
    key: fs.readFileSync(path.join(out, `${id}-key.pem`), 'utf8'),
    sha1,
    sha256,
  };
}

/** A device client for an X.509 device: x509=true and its certificate. */
async function x509Client(id, creds, Transport) {
  const client = fleet.client(`HostName=${hub.host};DeviceId=${id};x509=true`, Transport);
  await expectSuccess(client.setOptions({ cert: creds.cert, key: creds.key, ca: fs.readFileSync(hub.ca, 'utf8') }),
    'client.setOptions({cert, key, ca}) on an x509=true client is accepted');
  return client;
}

async function createSelfSigned(id, primary, secondary = null) {
  const { responseBody: d } = await expectSuccess(
    reg.create({ deviceId: id, authentication: { x509Thumbprint: { primaryThumbprint: primary, secondaryThumbprint: secondary } } }),
    'Registry.create with an x509Thumbprint and no type creates a selfSigned device');
  return d;
}

async function createCASigned(id) {
  const { responseBody: d } = await expectSuccess(
    reg.create({ deviceId: id, authentication: { type: 'certificateAuthority' } }),
    'Registry.create with authentication type certificateAuthority creates the device');
  return d;
}

// methodAndDesired checks that a connected client gets a direct method
// call and a desired-property push.
async function methodAndDesired(client, id, name) {
  client.onDeviceMethod('whoami', (req, res) => res.send(200, { id, x509: true }, () => {}));
  const { result } = await expectSuccess(svc.invokeDeviceMethod(id, { methodName: 'whoami', payload: null, connectTimeoutInSeconds: 30 }),
    `Client.invokeDeviceMethod reaches an X.509 device over ${name}`, 60_000);
  expectEqual(result, { status: 200, payload: { id, x509: true } }, 'the method result is what the X.509 device sent');
  const twin = await expectSuccess(client.getTwin(), `client.getTwin over ${name} works for an X.509 device`);
  const pushed = nextEvent(twin, 'properties.desired', (delta) => delta?.via === name);
  await expectSuccess(reportProperties(twin, { listening: true }), 'twin.properties.reported.update is acknowledged');
  await expectSuccess(reg.updateTwin(id, { properties: { desired: { via: name } } }, '*'),
    'Registry.updateTwin changes desired properties of a connected X.509 device');
  await expectEvent(pushed, `an X.509 device gets a desired-property push over ${name}`);
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herd-compat-x509-'));
  const text = herd('ca', 'add', 'local', path.join(data(), 'ca.pem'));
  if (!/verified\s+true/.test(text)) throw new Error(`herd ca add local did not verify the local CA:\n${text}`);
});
after(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

describe('X.509 devices', () => {
  for (const [name, Transport] of Object.entries(transports)) {
    test(`a selfSigned device with x509=true and setOptions({cert, key}) connects over ${name}, gets methods and desired pushes`, async () => {
      const id = uniqueId(`x509ss${name}`);
      const creds = issue(id, '--self-signed');
      const d = await createSelfSigned(id, creds.sha1);
      expectEqual([d.authentication.type, d.authentication.x509Thumbprint.primaryThumbprint],
        ['selfSigned', creds.sha1], 'the created device has type selfSigned and the thumbprint it was given');
      const client = await x509Client(id, creds, Transport);
      await expectSuccess(client.open(), `Client.open over ${name} with the device's self-signed certificate connects`);
      await methodAndDesired(client, id, name);
    });

    test(`a certificateAuthority device connects over ${name} with a certificate of a verified CA, gets methods and desired pushes`, async () => {
      const id = uniqueId(`x509ca${name}`);
      await createCASigned(id);
      const client = await x509Client(id, issue(id), Transport);
      await expectSuccess(client.open(), `Client.open over ${name} with a CA-signed certificate whose CN is the device id connects`);
      await methodAndDesired(client, id, name);
    });

    test(`a wrong certificate is refused over ${name} (UnauthorizedError)`, async () => {
      const id = uniqueId(`x509wrong${name}`);
      const mine = issue(id, '--self-signed');
      await createSelfSigned(id, mine.sha1);
      const other = issue(id, '--self-signed'); // same CN, another key: another thumbprint
      await expectFailure((await x509Client(id, other, Transport)).open(), { name: 'UnauthorizedError', message: refused },
        `Client.open over ${name} with a certificate whose thumbprint the device does not have fails with UnauthorizedError (CONNACK 5)`);
      const caId = uniqueId(`x509wrongca${name}`);
      await createCASigned(caId);
      await expectFailure((await x509Client(caId, issue(uniqueId('someoneelse')), Transport)).open(),
        { name: 'UnauthorizedError', message: refused },
        `Client.open over ${name} with a CA-signed certificate for another device id fails with UnauthorizedError (CONNACK 5)`);
    });

    test(`an expired certificate is refused over ${name} (UnauthorizedError)`, async () => {
      const expired = ['--start', '2020-01-01T00:00:00Z', '--days', '1'];
      const id = uniqueId(`x509old${name}`);
      const creds = issue(id, '--self-signed', ...expired);
      await createSelfSigned(id, creds.sha256);
      await expectFailure((await x509Client(id, creds, Transport)).open(), { name: 'UnauthorizedError', message: refused },
        `Client.open over ${name} with an expired self-signed certificate fails with UnauthorizedError (CONNACK 5)`);
      const caId = uniqueId(`x509oldca${name}`);
      await createCASigned(caId);
      await expectFailure((await x509Client(caId, issue(caId, ...expired), Transport)).open(),
        { name: 'UnauthorizedError', message: refused },
        `Client.open over ${name} with an expired CA-signed certificate fails with UnauthorizedError (CONNACK 5)`);
    });
  }

  test('the twin of an X.509 device shows its authenticationType and x509Thumbprint; bad thumbprints are refused', async () => {
    const id = uniqueId('x509twin');
    const a = issue(id, '--self-signed');
    const b = issue(id, '--self-signed', '--days', '2');
    await createSelfSigned(id, a.sha1, b.sha256.toLowerCase());
    const { responseBody: t } = await expectSuccess(reg.getTwin(id), 'Registry.getTwin returns the twin');
    expectEqual([t.authenticationType, t.x509Thumbprint], ['selfSigned', { primaryThumbprint: a.sha1, secondaryThumbprint: b.sha256.toLowerCase() }],
      'the twin shows authenticationType selfSigned and both thumbprints');
    // Either thumbprint, SHA-1 or SHA-256 in either case, authenticates.
    const client = await x509Client(id, b, Mqtt);
    await expectSuccess(client.open(), 'Client.open with the certificate of the secondary (SHA-256, lower-case) thumbprint connects');
    await expectSuccess(client.close(), 'close disconnects the device client');

    await expectFailure(reg.create({ deviceId: uniqueId('x509bad'), authentication: { x509Thumbprint: { primaryThumbprint: 'not-a-thumbprint' } } }),
      { name: 'ArgumentError', status: 400 }, 'Registry.create with a thumbprint that is not 40 or 64 hex digits fails with 400');
    await expectFailure(reg.create({ deviceId: uniqueId('x509bad'), authentication: { type: 'selfSigned' } }),
      { name: 'ArgumentError', status: 400 }, 'Registry.create of a selfSigned device without a thumbprint fails with 400');
  });

  test('a connected X.509 device is disconnected when its thumbprint is replaced', async () => {
    const id = uniqueId('x509rekey');
    const a = issue(id, '--self-signed');
    const b = issue(id, '--self-signed');
    const d = await createSelfSigned(id, a.sha1);
    const client = await x509Client(id, a, MqttWs);
    await expectSuccess(client.open(), 'Client.open over MqttWs with the registered certificate connects');
    const state = async () => (await reg.get(id)).responseBody.connectionState;
    await eventually(async () => (await state()) === 'Connected', 'the registry shows the X.509 device Connected');
    d.authentication.x509Thumbprint.primaryThumbprint = b.sha1;
    await expectSuccess(reg.update(d), 'Registry.update replaces the thumbprint');
    await eventually(async () => (await state()) === 'Disconnected',
      'a device whose certificate no longer matches its registered thumbprints is disconnected (as after a key change)');
  });
});
