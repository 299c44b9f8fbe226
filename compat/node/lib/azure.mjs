// Helpers shared by the compatibility tests: the hub's connection strings
// (set by run.mjs), unique device ids, and assertions whose failure
// messages say what Azure IoT Hub does and what Herd did instead.

import { AssertionError } from 'node:assert';
import crypto from 'node:crypto';
import { isDeepStrictEqual, inspect } from 'node:util';

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run the suite through compat/node/run.mjs, which starts the hub`);
  }
  return v;
}

/** The hub the harness started. */
export const hub = {
  get host() { return need('HERD_COMPAT_HOST'); },
  get ca() { return need('HERD_COMPAT_CA'); },
  /** Service connection strings by shared access policy. */
  cs(policy = 'iothubowner') { return need(`HERD_COMPAT_CS_${policy.toUpperCase()}`); },
  /** A device connection string built the way Azure's portal shows one. */
  deviceCS(deviceId, key, extra = '') {
    return `HostName=${this.host};DeviceId=${deviceId};SharedAccessKey=${key}${extra}`;
  },
};

const run = crypto.randomBytes(3).toString('hex');
let seq = 0;

/** A device id no other test (or earlier run against the same hub) uses. */
export function uniqueId(prefix) {
  seq += 1;
  return `${prefix}-${run}-${seq}`;
}

/** A fresh base64 key of 32 random bytes, the kind Azure issues. */
export function newKey() {
  return crypto.randomBytes(32).toString('base64');
}

/** Describes an error from the SDKs: class, HTTP status, message and body. */
export function describeError(err) {
  if (!err) return String(err);
  const parts = [err.name || err.constructor?.name || 'Error'];
  const status = err.response?.statusCode;
  if (status) parts.push(`HTTP ${status}`);
  const code = err.response?.headers?.['iothub-errorcode'];
  if (code) parts.push(`iothub-errorcode ${code}`);
  parts.push(JSON.stringify(err.message));
  if (err.responseBody !== undefined && err.responseBody !== '') parts.push(`body ${truncate(String(err.responseBody))}`);
  if (err.code && !status) parts.push(`code ${err.code}`);
  return parts.join(', ');
}

function truncate(s, n = 400) {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

function show(v) {
  return truncate(inspect(v, { depth: 6, breakLength: Infinity, compact: true }), 800);
}

/** Fails the test: "Azure: <what Azure does>. Herd: <what Herd did>." */
export function mismatch(azure, herd) {
  throw new AssertionError({ message: `Azure: ${azure}\n    Herd: ${herd}` });
}

/** Asserts a condition, explaining a failure in Azure's terms. */
export function expectThat(ok, azure, herd) {
  if (!ok) mismatch(azure, typeof herd === 'function' ? herd() : herd);
}

/** Asserts deep equality; the failure shows what Herd gave. */
export function expectEqual(actual, expected, azure) {
  if (!isDeepStrictEqual(actual, expected)) {
    mismatch(`${azure} (expected ${show(expected)})`, `gave ${show(actual)}`);
  }
}

/**
 * Waits for an SDK promise that Azure always settles. The SDKs have no
 * client-side timeout for most calls, so a hub that never answers would
 * hang the suite: give up after ms with a message instead.
 */
export async function answered(promise, what, ms = 30_000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new AssertionError({
      message: `Azure: answers ${what}.\n    Herd: gave no answer within ${ms / 1000} s`,
    })), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Awaits a call that Azure accepts; a failure says how Herd refused it. */
export async function expectSuccess(promise, azure, ms) {
  try {
    return await answered(promise, azure, ms);
  } catch (err) {
    if (err instanceof AssertionError) throw err;
    mismatch(azure, `failed with ${describeError(err)}`);
  }
}

/**
 * Awaits a call that Azure refuses, and checks how: want.name is the SDK's
 * error class, want.status the HTTP status, want.code the Azure error name
 * (in the iothub-errorcode header and the body), want.number the numeric
 * code in the body.
 */
export async function expectFailure(promise, want, azure, ms) {
  let result;
  try {
    result = await answered(promise, azure, ms);
  } catch (err) {
    if (err instanceof AssertionError) throw err;
    const problems = [];
    if (want.name && err.name !== want.name) problems.push(`error class ${err.name}, not ${want.name}`);
    const status = err.response?.statusCode;
    const statuses = [want.status ?? []].flat();
    if (statuses.length > 0 && !statuses.includes(status)) problems.push(`HTTP status ${status}, not ${statuses.join(' or ')}`);
    if (want.code) {
      const header = err.response?.headers?.['iothub-errorcode'];
      if (header !== want.code) problems.push(`iothub-errorcode header ${JSON.stringify(header)}, not ${want.code}`);
      if (!String(err.responseBody ?? '').includes(want.code) && !String(err.responseBody ?? '').includes(String(want.number ?? want.code))) {
        problems.push(`a body without ${want.code}`);
      }
    }
    if (want.number && !String(err.responseBody ?? '').includes(String(want.number))) {
      problems.push(`a body without ${want.number}`);
    }
    const legacy = legacyMessage(err.responseBody);
    if (legacy !== null && legacy.includes(';')) {
      // The SDK splits Message on ";" and keeps only the second part.
      problems.push(`an error text containing ";", which the SDK cuts to ${JSON.stringify(err.message)}`);
    }
    if (want.message && !want.message.test(err.message)) problems.push(`message ${JSON.stringify(err.message)} not matching ${want.message}`);
    if (problems.length > 0) {
      mismatch(azure, `failed with ${problems.join('; ')} (${describeError(err)})`);
    }
    return err;
  }
  mismatch(azure, `succeeded with ${show(result?.responseBody ?? result)}`);
}

// legacyMessage returns the text of an "ErrorCode:<Name>;<text>" error body,
// or null for any other body.
function legacyMessage(body) {
  try {
    const m = /^ErrorCode:[^;]*;([\s\S]*)$/.exec(JSON.parse(body).Message);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

/** Polls check() until it returns a truthy value or the deadline passes. */
export async function eventually(check, azure, { timeoutMs = 20_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      mismatch(azure, `not within ${timeoutMs / 1000} s (last: ${last instanceof Error ? describeError(last) : show(last)})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
