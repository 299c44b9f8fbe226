// Helpers for tests with device clients (azure-iot-device over the
// azure-iot-device-mqtt transports): registering devices, opening clients
// that are closed again after the test, and waiting for events.

import deviceSdk from 'azure-iot-device';
import mqttSdk from 'azure-iot-device-mqtt';
import iothub from 'azure-iothub';

import { hub, uniqueId, expectSuccess, answered, mismatch } from './azure.mjs';

export const { Client: DeviceClient, Message, SharedAccessKeyAuthenticationProvider } = deviceSdk;
export const { Mqtt, MqttWs } = mqttSdk;
export const transports = { Mqtt, MqttWs };

/** A registry with the iothubowner policy. */
export function ownerRegistry() {
  return iothub.Registry.fromConnectionString(hub.cs('iothubowner'));
}

/** A service client (direct methods) with the iothubowner policy. */
export function serviceClient() {
  return iothub.Client.fromConnectionString(hub.cs('iothubowner'));
}

/** Registers a device and returns its id and connection string. */
export async function registerDevice(reg, prefix) {
  const id = uniqueId(prefix);
  const { responseBody: d } = await expectSuccess(reg.create({ deviceId: id }), 'Registry.create creates a new device');
  return { id, key: d.authentication.symmetricKey.primaryKey, cs: hub.deviceCS(id, d.authentication.symmetricKey.primaryKey) };
}

/**
 * Tracks device clients so a suite can close them all in after(), whatever
 * the tests did.
 */
export class Fleet {
  constructor() { this.clients = []; }

  /** A client for cs over the given transport, not yet opened. */
  client(cs, Transport = Mqtt) {
    const c = DeviceClient.fromConnectionString(cs, Transport);
    this.track(c);
    return c;
  }

  track(c) {
    // An unhandled 'error' event would crash the test process.
    c.on('error', () => {});
    this.clients.push(c);
    return c;
  }

  /** Opens a client, failing the test with Azure's expectation if it cannot. */
  async open(cs, Transport = Mqtt, what = `a ${Transport.name} device client with a valid connection string opens`) {
    const c = this.client(cs, Transport);
    await expectSuccess(c.open(), what);
    return c;
  }

  async closeAll() {
    const cs = this.clients.splice(0);
    await Promise.all(cs.map((c) => answered(c.close(), 'close', 15_000).catch(() => {})));
  }
}

/**
 * Returns a promise for the next time emitter emits event with arguments
 * accepted by match, and a way to cancel waiting.
 */
export function nextEvent(emitter, event, match = () => true) {
  let off;
  const p = new Promise((resolve) => {
    const on = (...args) => {
      if (match(...args)) {
        emitter.removeListener(event, on);
        resolve(args.length <= 1 ? args[0] : args);
      }
    };
    emitter.on(event, on);
    off = () => emitter.removeListener(event, on);
  });
  p.cancel = off;
  return p;
}

/** Waits for p (see nextEvent) with a deadline; the failure explains it. */
export async function expectEvent(p, azure, ms = 20_000) {
  let timer;
  try {
    return await Promise.race([p, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), ms);
    })]);
  } catch {
    p.cancel?.();
    mismatch(azure, `it did not happen within ${ms / 1000} s`);
  } finally {
    clearTimeout(timer);
  }
}

/** twin.properties.reported.update as a promise. */
export function reportProperties(twin, patch) {
  return new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  });
}
