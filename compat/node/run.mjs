#!/usr/bin/env node
// The harness of the official-SDK compatibility suite.
//
// It builds `herd` from this tree, starts a real `herd serve` with a fresh
// temporary data folder (REST API and MQTT-over-WebSocket on 127.0.0.1:443,
// because the official service SDK can only dial 443), waits until the hub
// answers, runs test/*.test.mjs with Node's built-in test runner, the hub's
// CA trusted through NODE_EXTRA_CA_CERTS, and always stops the hub.
//
// Port 443 is machine-wide, so every run takes /tmp/herd-compat-443.lock
// (with flock) before it starts a hub: concurrent runs from several
// worktrees wait for each other instead of colliding.
//
//   node compat/node/run.mjs [--node-test-flag …] [test file …]   (after `npm ci` in compat/node)
//   e.g. node compat/node/run.mjs --test-name-pattern=renews compat/node/test/methods.test.mjs
//
// Environment: GO (the go command, default "go"); HERD_COMPAT_HERD=<path>
// runs that herd binary instead of building one; HERD_COMPAT_KEEP=1 keeps
// the data folder for a look after the run; HERD_COMPAT_STORE=postgres runs
// the hub on a throwaway PostgreSQL database (internal/store/pgtest/pgtestd,
// which needs Debian's postgresql) instead of SQLite: every herd command of
// the run gets it as HERD_STORE. HERD_COMPAT_CLUSTER=1 runs the suite
// against a 3-node cluster on PostgreSQL and a throwaway NATS server
// (internal/hubtest/natstestd): node-0 serves the REST API (and MQTT over
// WebSocket) on 127.0.0.1:443 and has no MQTT port; 127.0.0.1:8883 is a
// TCP balancer of this harness that sends each device connection to node-1
// or node-2 in turn, so the service SDK and the MQTT devices are always on
// different nodes.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const runDir = path.join(here, '.run');
const lockFile = '/tmp/herd-compat-443.lock';
const httpsHost = '127.0.0.1';
const httpsPort = 443;
const mqttPort = 8883;
const readyDeadlineMs = 60_000;
const testTimeoutMs = 180_000;

function log(msg) {
  process.stderr.write(`compat: ${msg}\n`);
}

function fail(msg) {
  log(msg);
  process.exit(1);
}

// Step 1 (outside the lock): check the SDKs are installed and build herd.
function prepare() {
  if (!fs.existsSync(path.join(here, 'node_modules', 'azure-iothub'))) {
    fail(`the official SDKs are not installed: run \`npm ci\` in ${here} first (make test does)`);
  }
  fs.mkdirSync(runDir, { recursive: true });
  if (process.env.HERD_COMPAT_HERD) {
    log(`using the herd binary ${process.env.HERD_COMPAT_HERD} (HERD_COMPAT_HERD) instead of building one`);
    return path.resolve(process.env.HERD_COMPAT_HERD);
  }
  const bin = path.join(runDir, 'herd');
  log(`building herd from ${root}`);
  goBuild(bin, './cmd/herd');
  return bin;
}

function goBuild(out, pkg) {
  const go = process.env.GO || 'go';
  const b = spawnSync(go, ['build', '-o', out, pkg], {
    cwd: root, stdio: 'inherit', env: { ...process.env, CGO_ENABLED: '0' },
  });
  if (b.error) fail(`cannot run ${go}: ${b.error.message}`);
  if (b.status !== 0) fail(`go build ${pkg} failed`);
}

// startPostgres starts pgtestd, a throwaway PostgreSQL server, and resolves
// with the URL of its empty database (its first line of output). The server
// stops when pgtestd's standard input closes, so it goes with this process.
async function startPostgres() {
  return startHelper('pgtestd', './internal/store/pgtest/pgtestd');
}

// startNATS starts natstestd, a throwaway NATS server, and resolves with
// its URL; it stops as pgtestd does.
async function startNATS() {
  return startHelper('natstestd', './internal/hubtest/natstestd');
}

// startHelper builds and starts a helper that prints a URL on its first
// line and serves until its standard input closes.
async function startHelper(name, pkg) {
  const bin = path.join(runDir, name);
  goBuild(bin, pkg);
  const p = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  let exited = null;
  p.stdout.on('data', (b) => { out += b; });
  p.on('exit', (code, signal) => { exited = code ?? signal; });
  const deadline = Date.now() + readyDeadlineMs;
  while (Date.now() < deadline) {
    const nl = out.indexOf('\n');
    if (nl >= 0) return { proc: p, url: out.slice(0, nl).trim() };
    if (exited !== null) throw new Error(`${name} exited (${exited}) before it printed its URL`);
    await new Promise((r) => setTimeout(r, 100));
  }
  p.kill('SIGTERM');
  throw new Error(`${name} did not print its URL within ${readyDeadlineMs / 1000} s`);
}

async function stopPostgres(pg) {
  if (!pg || pg.proc.exitCode !== null || pg.proc.signalCode !== null) return;
  const gone = once(pg.proc, 'exit');
  pg.proc.stdin.end();
  const timer = setTimeout(() => pg.proc.kill('SIGKILL'), 30_000);
  await gone;
  clearTimeout(timer);
}

// Step 2: take the machine-wide 443 lock by running ourselves again under
// flock. The child knows it holds the lock from HERD_COMPAT_LOCKED.
function relaunchLocked(bin) {
  const probe = spawnSync('flock', ['--version'], { stdio: 'ignore' });
  if (probe.error) {
    fail('flock (util-linux) is needed to serialize runs that use port 443; install util-linux');
  }
  const args = process.argv.slice(1);
  const env = { ...process.env, HERD_COMPAT_LOCKED: '1', HERD_COMPAT_BIN: bin };
  const quick = spawnSync('flock', ['--nonblock', '--conflict-exit-code', '75', lockFile, 'true']);
  if (quick.status === 75) {
    log(`another compatibility run holds ${lockFile}; waiting for it (port 443 is shared machine-wide)`);
  }
  const child = spawn('flock', [lockFile, process.execPath, ...args], { stdio: 'inherit', env });
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => child.kill(sig));
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

// portFree reports whether nothing listens on host:port (by binding it).
async function portFree(host, port) {
  const srv = net.createServer();
  try {
    srv.listen({ host, port, exclusive: true });
    await once(srv, 'listening');
    srv.close();
    await once(srv, 'close');
    return { free: true };
  } catch (err) {
    return { free: false, err };
  }
}

function whoListens(port) {
  const r = spawnSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
  return (r.stdout || '').trim();
}

async function checkPort(port) {
  const { free, err } = await portFree(httpsHost, port);
  if (free) return;
  if (err.code === 'EADDRINUSE') {
    const who = whoListens(port);
    const why = port === httpsPort
      ? 'The official Azure service SDK only dials port 443, so the suite needs it free.'
      : `The Node device SDK's Mqtt transport dials ${port} by default, so the suite needs it free.`;
    fail(`port ${port} is taken by something else${who ? `:\n  ${who}\n` : ' '}${why} Stop that server and run again.`);
  }
  if (err.code === 'EACCES') {
    fail(`no permission to listen on port ${port}: run as root, or grant the binary the right with ` +
      `\`sudo setcap cap_net_bind_service=+ep ${process.env.HERD_COMPAT_BIN}\` ` +
      `(or \`sudo sysctl net.ipv4.ip_unprivileged_port_start=443\`)`);
  }
  fail(`cannot check port ${port}: ${err.message}`);
}

// hasMQTT reports whether this build of herd has the MQTT gateway (a
// --mqtt-addr flag on `herd serve`).
function hasMQTT(bin) {
  const r = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' });
  return /--mqtt-addr\b/.test(r.stdout + r.stderr);
}

// serveFlags returns the flags `herd serve` gets: REST API (and MQTT over
// WebSocket) on 127.0.0.1:443, MQTT over TLS on 127.0.0.1:8883.
function serveFlags(dataDir, mqtt) {
  const flags = ['serve', '--data', dataDir, '--hostname', 'localhost',
    '--https-addr', `${httpsHost}:${httpsPort}`, '--log-level', process.env.HERD_COMPAT_LOG_LEVEL || 'info'];
  if (mqtt) flags.push('--mqtt-addr', `${httpsHost}:${mqttPort}`);
  return flags;
}

// startHub starts `herd serve` and resolves once it printed its banner and
// completes a TLS handshake against the CA it wrote; it rejects when the
// process exits first or the deadline passes.
async function startHub(bin, dataDir, logPath, mqtt, extra = []) {
  return startServe(bin, [...serveFlags(dataDir, mqtt), ...extra], logPath, () => tlsReady(path.join(dataDir, 'ca.pem')));
}

// startServe starts `herd serve` with flags and resolves once it printed
// its banner and ready() holds.
async function startServe(bin, flags, logPath, ready = async () => true) {
  fs.writeFileSync(logPath, '');
  const out = fs.openSync(logPath, 'a');
  const hub = spawn(bin, flags, { stdio: ['ignore', 'pipe', out] });
  let stdout = '';
  let exited = null;
  hub.stdout.on('data', (b) => { stdout += b; fs.appendFileSync(logPath, b); });
  hub.on('exit', (code, signal) => { exited = { code, signal }; });
  const deadline = Date.now() + readyDeadlineMs;
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`herd serve exited (${exited.code ?? exited.signal}) before it was ready; its log:\n` +
        fs.readFileSync(logPath, 'utf8'));
    }
    if (stdout.includes('Herd is ready.') && stdout.includes('Service connection string') && await ready()) {
      return { hub, stdout };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  hub.kill('SIGKILL');
  throw new Error(`herd serve was not ready within ${readyDeadlineMs / 1000} s; its log:\n${fs.readFileSync(logPath, 'utf8')}`);
}

async function tlsReady(caPath) {
  if (!fs.existsSync(caPath)) return false;
  const ca = fs.readFileSync(caPath);
  return new Promise((resolve) => {
    const s = tls.connect({ host: httpsHost, port: httpsPort, servername: 'localhost', ca }, () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function stopHub(hub) {
  if (hub.exitCode !== null || hub.signalCode !== null) return;
  const gone = once(hub, 'exit');
  hub.kill('SIGTERM');
  const timer = setTimeout(() => hub.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(timer);
}

// balance listens on host:port and sends each connection to the next of
// backends (host:port) in turn: the load balancer in front of the MQTT
// ports of a cluster's nodes.
async function balance(host, port, backends) {
  let next = 0;
  const srv = net.createServer((client) => {
    const [bh, bp] = backends[next++ % backends.length].split(/:(?=\d+$)/);
    const up = net.connect({ host: bh, port: Number(bp) });
    client.pipe(up);
    up.pipe(client);
    const close = () => { client.destroy(); up.destroy(); };
    client.on('error', close);
    up.on('error', close);
    client.on('close', close);
    up.on('close', close);
  });
  srv.listen({ host, port, exclusive: true });
  await once(srv, 'listening');
  return srv;
}

// startCluster starts the nodes of HERD_COMPAT_CLUSTER (see the top of this
// file) and returns them with the balancer.
async function startCluster(bin, dataDir, natsURL) {
  const cluster = ['--nats', natsURL, '--node-lease', '5s'];
  const hubs = [];
  hubs.push((await startHub(bin, dataDir, path.join(runDir, 'herd.log'), false,
    [...cluster, '--node-id', 'node-0', '--mqtt-addr', ''])).hub);
  const mqttAddrs = [];
  for (const i of [1, 2]) {
    const dir = path.join(dataDir, `node-${i}`);
    const flags = ['serve', '--data', dir, '--hostname', 'localhost', '--https-addr', `${httpsHost}:0`,
      '--mqtt-addr', `${httpsHost}:0`, '--tls-cert', path.join(dataDir, 'server.pem'),
      '--tls-key', path.join(dataDir, 'server-key.pem'), '--log-level', process.env.HERD_COMPAT_LOG_LEVEL || 'info',
      ...cluster, '--node-id', `node-${i}`];
    const started = await startServe(bin, flags, path.join(runDir, `herd-node-${i}.log`));
    hubs.push(started.hub);
    const m = /MQTT \(TLS\) +(\S+) /.exec(started.stdout);
    if (!m) throw new Error(`node-${i}'s banner has no MQTT address:\n${started.stdout}`);
    mqttAddrs.push(m[1]);
  }
  const lb = await balance(httpsHost, mqttPort, mqttAddrs);
  log(`cluster: node-0 on ${httpsHost}:${httpsPort} (REST, WebSocket), node-1 and node-2 behind ${httpsHost}:${mqttPort} (${mqttAddrs.join(', ')})`);
  return { hubs, lb };
}

function connectionString(bin, dataDir, policy) {
  const r = spawnSync(bin, ['connection-string', '--data', dataDir, '--policy', policy], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`herd connection-string --policy ${policy} failed: ${r.stderr}`);
  }
  return r.stdout.trim();
}

function testFiles(args) {
  if (args.length > 0) return args.map((a) => path.resolve(a));
  const dir = path.join(here, 'test');
  return fs.readdirSync(dir).filter((f) => f.endsWith('.test.mjs')).sort().map((f) => path.join(dir, f));
}

// Step 3 (inside the lock): start the hub, run the tests, stop the hub.
async function runLocked() {
  const bin = process.env.HERD_COMPAT_BIN;
  const mqtt = hasMQTT(bin);
  await checkPort(httpsPort);
  if (mqtt) await checkPort(mqttPort);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herd-compat-'));
  const logPath = path.join(runDir, 'herd.log');
  let hubs = [];
  let lb = null;
  let pg = null;
  let nats = null;
  let code = 1;
  const stop = async () => {
    for (const h of hubs) await stopHub(h);
    hubs = [];
    if (lb) lb.close();
    lb = null;
    await stopPostgres(nats);
    nats = null;
    await stopPostgres(pg);
    pg = null;
  };
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => { stop().finally(() => process.exit(130)); });
  }
  try {
    const clustered = process.env.HERD_COMPAT_CLUSTER === '1';
    const storeKind = clustered ? 'postgres' : (process.env.HERD_COMPAT_STORE || 'sqlite');
    if (clustered && !mqtt) throw new Error('HERD_COMPAT_CLUSTER=1 needs a herd with the MQTT gateway');
    if (storeKind === 'postgres') {
      log('starting a throwaway PostgreSQL (pgtestd)');
      pg = await startPostgres();
      process.env.HERD_STORE = pg.url;
    } else if (storeKind !== 'sqlite') {
      throw new Error(`HERD_COMPAT_STORE=${storeKind}: want sqlite or postgres`);
    }
    if (clustered) {
      log('starting a throwaway NATS server (natstestd) and 3 nodes');
      nats = await startNATS();
      ({ hubs, lb } = await startCluster(bin, dataDir, nats.url));
    } else {
      log(`starting herd serve (data ${dataDir}, store ${storeKind}, log ${logPath})`);
      hubs = [(await startHub(bin, dataDir, logPath, mqtt)).hub];
    }
    const ca = path.join(dataDir, 'ca.pem');
    const env = {
      ...process.env,
      NODE_EXTRA_CA_CERTS: ca,
      HERD_COMPAT_HOST: 'localhost',
      HERD_COMPAT_CA: ca,
      HERD_COMPAT_DATA: dataDir,
      HERD_COMPAT_BIN: bin,
      HERD_COMPAT_MQTT: mqtt ? '1' : '',
    };
    for (const policy of ['iothubowner', 'service', 'device', 'registryRead', 'registryReadWrite']) {
      env[`HERD_COMPAT_CS_${policy.toUpperCase()}`] = connectionString(bin, dataDir, policy);
    }
    const args = process.argv.slice(2);
    const runnerFlags = args.filter((a) => a.startsWith('--'));
    const files = testFiles(args.filter((a) => !a.startsWith('--')));
    log(`hub ready; running ${files.length} test files with node --test`);
    const t = spawn(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=1',
      `--test-timeout=${testTimeoutMs}`, ...runnerFlags, ...files], { stdio: 'inherit', env, cwd: here });
    const [exitCode, signal] = await once(t, 'exit');
    code = exitCode ?? (signal ? 1 : 0);
  } catch (err) {
    log(err.message);
    code = 1;
  } finally {
    await stop();
    if (process.env.HERD_COMPAT_KEEP === '1') {
      log(`kept ${dataDir} and ${logPath}`);
    } else {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
    if (code !== 0 && fs.existsSync(logPath)) {
      const lines = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n');
      log(`the suite failed; the last lines of the hub's log (${logPath}):\n` + lines.slice(-40).join('\n'));
    }
  }
  process.exit(code);
}

if (process.env.HERD_COMPAT_LOCKED === '1') {
  await runLocked();
} else {
  relaunchLocked(prepare());
}
