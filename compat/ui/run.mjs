#!/usr/bin/env node
// The harness of the dashboard's end-to-end suite.
//
// It builds `herd` from this tree, starts a real `herd serve` with a fresh
// temporary data folder on free loopback ports (the browser reaches any
// port; nothing needs 443), registers and connects a fleet of simulated
// devices with `herd sim` (they answer methods, report desired properties
// back and send telemetry), then runs test/*.test.mjs with Node's built-in
// test runner: each drives Debian's Chromium, headless, through
// playwright-core. Screenshots go to .run/screenshots, or to the folder
// HERD_UI_SCREENSHOTS names (`make ui-screenshots` writes docs/dashboard/).
// The hub and the fleet are always stopped.
//
//   node compat/ui/run.mjs [--node-test-flag …] [test file …]   (after `npm ci` in compat/ui)
//
// Environment: GO (the go command, default "go"); HERD_UI_HERD=<path> runs
// that herd binary instead of building one; HERD_UI_CHROMIUM (default
// /usr/bin/chromium); HERD_UI_DEVICES (default 300); HERD_UI_KEEP=1 keeps
// the data folder.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const runDir = path.join(here, '.run');
const chromium = process.env.HERD_UI_CHROMIUM || '/usr/bin/chromium';
const devices = Number(process.env.HERD_UI_DEVICES || 300);
const readyDeadlineMs = 60_000;
const testTimeoutMs = 240_000;

function log(msg) {
  process.stderr.write(`ui: ${msg}\n`);
}

function fail(msg) {
  log(msg);
  process.exit(1);
}

function prepare() {
  if (!fs.existsSync(path.join(here, 'node_modules', 'playwright-core'))) {
    fail(`playwright-core is not installed: run \`npm ci\` in ${here} first (make ui does)`);
  }
  if (!fs.existsSync(chromium)) {
    fail(`Chromium is not installed at ${chromium}: \`apt-get install chromium\` (make ui installs it when run as root), ` +
      'or point HERD_UI_CHROMIUM at a Chromium binary. The dashboard suite does not skip without a browser.');
  }
  fs.mkdirSync(runDir, { recursive: true });
  if (process.env.HERD_UI_HERD) return path.resolve(process.env.HERD_UI_HERD);
  const bin = path.join(runDir, 'herd');
  log(`building herd from ${root}`);
  const go = process.env.GO || 'go';
  const b = spawnSync(go, ['build', '-o', bin, './cmd/herd'], { cwd: root, stdio: 'inherit', env: { ...process.env, CGO_ENABLED: '0' } });
  if (b.error) fail(`cannot run ${go}: ${b.error.message}`);
  if (b.status !== 0) fail('go build ./cmd/herd failed');
  return bin;
}

// waitFor resolves with the first match of re in the text get() returns,
// polling until the deadline; it rejects if the process exits first.
async function waitFor(what, proc, get, re, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    const m = re.exec(get());
    if (m) return m;
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${get()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} was not ready within ${deadlineMs / 1000} s:\n${get()}`);
}

// start runs a herd subcommand with its output in logPath.
function start(bin, args, logPath) {
  fs.writeFileSync(logPath, '');
  const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b) => { out += b; fs.appendFileSync(logPath, b); };
  p.stdout.on('data', keep);
  p.stderr.on('data', keep);
  return { proc: p, output: () => out };
}

async function stop(p, signal) {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = once(p, 'exit');
  p.kill(signal);
  const timer = setTimeout(() => p.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(timer);
}

function connectionString(bin, dataDir, policy) {
  const r = spawnSync(bin, ['connection-string', '--data', dataDir, '--policy', policy], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`herd connection-string --policy ${policy} failed: ${r.stderr}`);
  return r.stdout.trim();
}

async function main() {
  const bin = prepare();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herd-ui-'));
  const shots = path.resolve(root, process.env.HERD_UI_SCREENSHOTS || path.join(runDir, 'screenshots'));
  fs.mkdirSync(shots, { recursive: true });
  let hub = null;
  let sim = null;
  let code = 1;
  const cleanup = async () => {
    await stop(sim?.proc, 'SIGINT');
    await stop(hub?.proc, 'SIGTERM');
    sim = hub = null;
  };
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => { cleanup().finally(() => process.exit(130)); });
  }
  try {
    log(`starting herd serve (data ${dataDir})`);
    hub = start(bin, ['serve', '--data', dataDir, '--hostname', 'localhost', '--https-addr', '127.0.0.1:0',
      '--mqtt-addr', '127.0.0.1:0', '--log-level', 'warn'], path.join(runDir, 'herd.log'));
    const [, url] = await waitFor('herd serve', hub.proc, hub.output, /Dashboard +(https:\/\/\S+\/ui\/)/, readyDeadlineMs);
    log(`hub ready, dashboard at ${url}; connecting ${devices} simulated devices`);
    sim = start(bin, ['sim', '--data', dataDir, '--devices', String(devices), '--create', '--prefix', 'sim-',
      '--tags', 'building=43:50%,44:50%', '--telemetry-interval', '2s', '--status-interval', '30s'], path.join(runDir, 'sim.log'));
    await waitFor('herd sim', sim.proc, sim.output, /all \d+ devices connected/, readyDeadlineMs);
    const env = {
      ...process.env,
      HERD_UI_URL: url.replace(/\/ui\/$/, ''),
      HERD_UI_CHROMIUM: chromium,
      HERD_UI_SCREENSHOTS: shots,
      HERD_UI_DEVICES: String(devices),
      HERD_UI_DATA: dataDir,
      HERD_UI_BIN: bin,
    };
    for (const policy of ['iothubowner', 'service', 'registryRead', 'registryReadWrite']) {
      env[`HERD_UI_CS_${policy.toUpperCase()}`] = connectionString(bin, dataDir, policy);
    }
    const args = process.argv.slice(2);
    const files = args.filter((a) => !a.startsWith('--'));
    const testFiles = files.length > 0 ? files.map((f) => path.resolve(f))
      : fs.readdirSync(path.join(here, 'test')).filter((f) => f.endsWith('.test.mjs')).sort().map((f) => path.join(here, 'test', f));
    log(`running ${testFiles.length} test files with node --test; screenshots in ${shots}`);
    const t = spawn(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=1', `--test-timeout=${testTimeoutMs}`,
      ...args.filter((a) => a.startsWith('--')), ...testFiles], { stdio: 'inherit', env, cwd: here });
    const [exitCode, signal] = await once(t, 'exit');
    code = exitCode ?? (signal ? 1 : 0);
  } catch (err) {
    log(err.message);
    code = 1;
  } finally {
    await cleanup();
    if (process.env.HERD_UI_KEEP === '1') {
      log(`kept ${dataDir}`);
    } else {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
    if (code !== 0) {
      for (const f of ['herd.log', 'sim.log']) {
        const p = path.join(runDir, f);
        if (fs.existsSync(p)) log(`the last lines of ${p}:\n` + fs.readFileSync(p, 'utf8').trimEnd().split('\n').slice(-30).join('\n'));
      }
    }
  }
  process.exit(code);
}

await main();
