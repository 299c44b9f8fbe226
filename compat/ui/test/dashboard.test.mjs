// The dashboard in a real browser: headless Chromium (Debian's) driven
// by playwright-core, against a real `herd serve` with simulated devices
// (run.mjs starts both). The tests run in order and share the hub; each
// step an operator takes is a test, and the pages are photographed for
// docs/dashboard.md.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const base = process.env.HERD_UI_URL;
const shots = process.env.HERD_UI_SCREENSHOTS;
const devices = Number(process.env.HERD_UI_DEVICES);
const half = devices / 2; // building 43 is the first half of the fleet
const cs = (policy) => process.env[`HERD_UI_CS_${policy.toUpperCase()}`];

let browser;
let owner; // the iothubowner page, signed in once
const cspErrors = [];

before(async () => {
  assert.ok(base, 'HERD_UI_URL is not set: run the suite with node compat/ui/run.mjs');
  browser = await chromium.launch({
    executablePath: process.env.HERD_UI_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
});

// newPage opens a page in its own browser context (its own cookies). The
// hub's certificate is signed by its own CA, which this browser does not
// know.
async function newPage() {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15_000);
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) cspErrors.push(`${page.url()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => cspErrors.push(`${page.url()}: ${e.message}`));
  return page;
}

// shot photographs a page: the whole page, or (long lists) what the
// window shows.
async function shot(page, name, { full = true } = {}) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: full });
}

async function signIn(page, policy) {
  await page.goto(`${base}/ui/`);
  await page.waitForURL(/\/ui\/login/);
  await page.getByLabel('Connection string').fill(cs(policy));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/ui/`);
  assert.equal(await page.getByTestId('policy').textContent(), policy);
}

// eventually polls check (an async function returning truthy) until the
// deadline, reloading the page between tries if reload is set.
async function eventually(what, check, { page, reload = false, ms = 20_000 } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`not within ${ms / 1000} s: ${what}`);
    if (reload) await page.reload();
    else await new Promise((r) => setTimeout(r, 100));
  }
}

// count is a number as the pages write it (2,000).
const count = (n) => n.toLocaleString('en-US');

const text = async (page, testId) => (await page.getByTestId(testId).textContent()).trim();

test('sign in with a connection string', async () => {
  owner = await newPage();
  await owner.goto(`${base}/`); // the bare host sends a browser to the dashboard
  await owner.waitForURL(/\/ui\/login/);
  await shot(owner, 'login');
  await owner.getByLabel('Connection string').fill('HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA');
  await owner.getByRole('button', { name: 'Sign in' }).click();
  assert.match(await owner.getByRole('alert').textContent(), /does not match/);
  await signIn(owner, 'iothubowner');
  const cookies = await owner.context().cookies();
  const session = cookies.find((c) => c.name === '__Host-herd-session');
  assert.ok(session && session.httpOnly && session.secure && session.sameSite === 'Strict', JSON.stringify(cookies));
  assert.ok(!session.value.includes(cs('iothubowner').split('SharedAccessKey=')[1]), 'the cookie holds the key');
  await eventually('every simulated device connected', async () => (await text(owner, 'connected')) === count(devices),
    { page: owner, reload: true });
  assert.equal(await text(owner, 'registered'), count(devices));
  await shot(owner, 'overview');
});

test('query devices by tag, with paging through the whole result', async () => {
  await owner.getByRole('link', { name: 'Devices', exact: true }).click();
  await owner.getByLabel('Twin query').fill('tags.building = 43');
  await owner.getByRole('button', { name: 'Run query' }).click();
  assert.match(await text(owner, 'count'), new RegExp(`^${count(half)} devices match, ${count(half)} of them connected`));
  const rows = owner.locator('table.devices tbody tr');
  assert.equal(await rows.count(), 50);
  await shot(owner, 'devices', { full: false });
  const seen = new Set();
  for (let pageNo = 1; ; pageNo++) {
    for (const id of await owner.locator('table.devices tbody a').allTextContents()) seen.add(id);
    const next = owner.getByRole('link', { name: 'Next page' });
    if (await next.count() === 0) break;
    await next.click();
    await owner.getByText(`Page ${pageNo + 1}`, { exact: true }).waitFor();
  }
  assert.equal(seen.size, half, 'the pages together list every device of building 43 once');
  await owner.getByLabel('Twin query').fill('tags.building == 43');
  await owner.getByRole('button', { name: 'Run query' }).click();
  assert.match(await text(owner, 'query-error'), /line 1, column/);
});

test('open a twin, edit desired, see the simulated device report it back', async () => {
  await owner.goto(`${base}/ui/devices/sim-000007`);
  assert.equal(await text(owner, 'connection'), 'Connected');
  await owner.getByLabel('Desired properties (JSON)').fill('{"floor": 7, "mode": "eco"}');
  await owner.getByRole('button', { name: 'Save twin' }).click();
  assert.match(await owner.getByRole('status').first().textContent(), /Twin saved/);
  // The device applies the patch and reports it back: the diff turns to applied.
  await eventually('floor and mode reported back', async () => /Every desired property is reported back/.test(await text(owner, 'pending')),
    { page: owner, reload: true });
  const diff = owner.getByTestId('diff');
  assert.match(await diff.textContent(), /floor[\s\S]*7[\s\S]*7[\s\S]*applied/);
  // A stale etag is a conflict, not an overwrite.
  await owner.getByLabel('Desired properties (JSON)').fill('{"floor": 8}');
  const other = await newPage();
  await signIn(other, 'iothubowner');
  await other.goto(`${base}/ui/devices/sim-000007`);
  await other.getByLabel('Tags (JSON)').fill('{"building": 43, "by": "someone else"}');
  await other.getByRole('button', { name: 'Save twin' }).click();
  await other.context().close();
  await owner.getByRole('button', { name: 'Save twin' }).click();
  assert.match(await text(owner, 'edit-error'), /changed since this page was loaded/);
  assert.equal(await owner.getByLabel('Desired properties (JSON)').inputValue(), '{"floor": 8}');
});

test('invoke a direct method and see the answer', async () => {
  await owner.goto(`${base}/ui/devices/sim-000007`);
  await owner.getByLabel('Method name').fill('reboot');
  await owner.getByLabel('Payload (JSON)').fill('{"delay": 1}');
  await owner.getByLabel('Response timeout (s)').fill('10');
  await owner.getByRole('button', { name: 'Invoke' }).click();
  assert.equal(await text(owner, 'method-status'), '200');
  assert.match(await text(owner, 'method-result'), /"delay": 1/);
});

test("a device's keys are hidden until asked, and its live telemetry shows", async () => {
  await owner.goto(`${base}/ui/devices/sim-000007`);
  assert.equal(await owner.getByTestId('keys').count(), 0);
  assert.equal(await owner.locator('input[readonly]').count(), 0, 'keys are on the page before they are asked for');
  await eventually('a telemetry message', async () => (await owner.locator('[data-telemetry] tbody tr').count()) > 0);
  assert.match(await owner.locator('[data-telemetry] tbody tr').first().textContent(), /temperature/);
  await shot(owner, 'device');
  await owner.getByRole('button', { name: 'Show keys and connection strings' }).click();
  const conn = await owner.getByLabel('Primary connection string').inputValue();
  for (const part of ['HostName=localhost', 'DeviceId=sim-000007', 'SharedAccessKey=', 'GatewayHostName=localhost:']) {
    assert.ok(conn.includes(part), `the connection string ${conn} lacks ${part}`);
  }
  // Disable and enable another device.
  await owner.goto(`${base}/ui/devices/sim-000299`);
  await owner.getByLabel('Reason').fill('e2e');
  await owner.getByRole('button', { name: 'Disable' }).click();
  assert.equal(await text(owner, 'device-status'), 'disabled');
  await owner.getByRole('button', { name: 'Enable' }).click();
  assert.equal(await text(owner, 'device-status'), 'enabled');
});

// herd runs the CLI against the suite's hub (its data folder says where
// the hub listens and holds the owner's key).
function herd(...args) {
  const r = spawnSync(process.env.HERD_UI_BIN, [...args, '--data', process.env.HERD_UI_DATA], { encoding: 'utf8' });
  assert.equal(r.status, 0, `herd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test("regenerate a device's primary key: the secondary stays", async () => {
  herd('device', 'create', 'e2e-keys');
  await owner.goto(`${base}/ui/devices/e2e-keys`);
  const keys = async () => {
    await owner.getByRole('button', { name: 'Show keys and connection strings' }).click();
    return [await owner.getByLabel('Primary key', { exact: true }).inputValue(), await owner.getByLabel('Secondary key', { exact: true }).inputValue()];
  };
  const [p1, s1] = await keys();
  assert.ok(p1.length > 0 && s1.length > 0);
  await owner.goto(`${base}/ui/devices/e2e-keys`);
  await owner.getByLabel('Regenerate').selectOption('primary');
  await owner.getByRole('button', { name: 'Regenerate' }).click();
  assert.match(await owner.getByRole('status').first().textContent(), /A new primary key replaced the old/);
  const [p2, s2] = await keys();
  assert.notEqual(p2, p1, 'the primary key did not change');
  assert.equal(s2, s1, 'the secondary key changed');
  herd('device', 'delete', 'e2e-keys'); // the later tests count the fleet
});

test("a device's modules and a module's page: its twin edited, a method to it", async () => {
  herd('module', 'create', 'sim-000011', 'thermostat', '--managed-by', 'e2e');
  await owner.goto(`${base}/ui/devices/sim-000011`);
  const row = owner.getByTestId('modules').getByRole('row', { name: /thermostat/ });
  assert.match(await row.textContent(), /e2e[\s\S]*sas[\s\S]*Disconnected/);
  await row.getByRole('link', { name: 'thermostat' }).click();
  await owner.waitForURL(/\/ui\/devices\/sim-000011\/modules\/thermostat$/);
  assert.equal(await owner.getByRole('heading', { level: 1 }).textContent(), 'thermostat');
  await owner.getByLabel('Tags (JSON)').fill('{"role": "hvac"}');
  await owner.getByLabel('Desired properties (JSON)').fill('{"setpoint": 21}');
  await owner.getByRole('button', { name: 'Save module twin' }).click();
  assert.match(await owner.getByRole('status').first().textContent(), /saved/);
  assert.match(await text(owner, 'pending'), /1 desired property is not reported back yet/);
  assert.match(await owner.getByTestId('diff').textContent(), /setpoint[\s\S]*21[\s\S]*not yet applied/);
  // The module is not connected: the method says so, as the API does.
  await owner.getByLabel('Method name').fill('setpoint');
  await owner.getByRole('button', { name: 'Invoke' }).click();
  assert.match(await owner.locator('main').textContent(), /DeviceNotOnline|not online/i);
  await shot(owner, 'module');
});

test('create a method job from its preview and watch it complete live', async () => {
  await owner.goto(`${base}/ui/jobs`);
  await owner.getByRole('link', { name: 'New job' }).click();
  await owner.getByLabel('Job id').fill('lockdoor-e2e');
  await owner.getByLabel('Condition').fill('tags.building = 43');
  // A few seconds ahead, so that the page is open before it runs.
  const start = new Date(Date.now() + 4000).toISOString().slice(0, 19);
  await owner.getByLabel('Start time (UTC; empty for now)').fill(start);
  await owner.getByLabel('Call a direct method').check();
  await owner.getByLabel('Method name').fill('lockDoor');
  await owner.getByLabel('Payload (JSON)').fill('{"lockTime": "10m"}');
  assert.ok(await owner.getByLabel('Tags to set').isHidden(), 'the twin fields show for a method job');
  await owner.getByRole('button', { name: 'Preview job' }).click();
  assert.equal(await text(owner, 'preview-count'), count(half));
  assert.equal(await text(owner, 'preview-connected'), count(half));
  assert.equal(await owner.getByTestId('sample').locator('li').count(), 10);
  await shot(owner, 'preview');
  await owner.getByRole('button', { name: 'Schedule job' }).click();
  await owner.waitForURL(`${base}/ui/jobs/lockdoor-e2e`);
  assert.match(await text(owner, 'job-status'), /queued|scheduled/);
  await owner.evaluate(() => { window.herdNotReloaded = true; });
  await eventually('the job page shows completed', async () => (await text(owner, 'job-status')) === 'completed', { ms: 30_000 });
  assert.equal(await text(owner, 'succeeded'), count(half));
  assert.equal(await owner.evaluate(() => window.herdNotReloaded), true, 'the page reloaded instead of following the job');
  // The link reloads the page from a click handler: wait for the new
  // document's load, not the current one's (already loaded).
  await Promise.all([
    owner.waitForEvent('load'),
    owner.getByRole('link', { name: 'Reload for the final device records' }).click(),
  ]);
  assert.equal(await owner.evaluate(() => window.herdNotReloaded), undefined, 'the page did not reload');
  assert.equal(await owner.locator('table.devicejobs tbody tr').count(), 50);
  await owner.evaluate(() => window.scrollTo(0, 0)); // a reload keeps the scroll position
  await shot(owner, 'job', { full: false });
  await owner.getByLabel('Outcome').selectOption('failed');
  await owner.getByRole('button', { name: 'Filter' }).click();
  assert.match(await owner.locator('table.devicejobs tbody').textContent(), /No device records with this outcome/);
});

test('a twin job in waves stops after its canary until resumed', async () => {
  await owner.goto(`${base}/ui/jobs/new`);
  await owner.getByLabel('Job id').fill('waves-e2e');
  await owner.getByLabel('Update twins').check();
  await owner.getByLabel('Tags to set').fill('{"wave": "e2e"}');
  await owner.getByLabel('Waves (cumulative percentages').fill('10, 100');
  await owner.getByLabel('Pause after each wave until resumed').check();
  await owner.getByRole('button', { name: 'Preview job' }).click();
  assert.equal(await text(owner, 'preview-count'), count(devices));
  await owner.getByRole('button', { name: 'Schedule job' }).click();
  await owner.waitForURL(`${base}/ui/jobs/waves-e2e`);
  await owner.evaluate(() => { window.herdNotReloaded = true; });
  assert.equal(await text(owner, 'rollout'), 'waves 10%, 100%, pausing between them');
  await eventually('paused after the canary', async () => (await text(owner, 'job-status')) === 'paused', { ms: 30_000 });
  assert.equal(await text(owner, 'succeeded'), count(Math.ceil(devices / 10)));
  assert.equal(await text(owner, 'wave'), '2 of 2');
  // The buttons follow the status live: Resume shows, Pause hides, with
  // no reload.
  await eventually('Resume shown', async () => await owner.getByRole('button', { name: 'Resume job' }).isVisible());
  assert.equal(await owner.getByRole('button', { name: 'Pause job' }).count(), 0, 'Pause job still shown on a paused job');
  assert.equal(await owner.evaluate(() => window.herdNotReloaded), true, 'the page reloaded instead of following the job');
  await owner.getByRole('button', { name: 'Resume job' }).click();
  await eventually('completed after resume', async () => (await text(owner, 'job-status')) === 'completed', { ms: 30_000 });
  assert.equal(await text(owner, 'succeeded'), count(devices));
});

test('cancel a scheduled job', async () => {
  await owner.goto(`${base}/ui/jobs/new`);
  await owner.getByLabel('Job id').fill('later-e2e');
  await owner.getByLabel('Update twins').check();
  await owner.getByLabel('Desired properties to set').fill('{"fw": "3.0"}');
  await owner.getByLabel('Start time (UTC; empty for now)').fill(new Date(Date.now() + 3600_000).toISOString().slice(0, 19));
  await owner.getByRole('button', { name: 'Preview job' }).click();
  assert.equal(await text(owner, 'preview-count'), count(devices));
  await owner.getByRole('button', { name: 'Schedule job' }).click();
  await owner.waitForURL(`${base}/ui/jobs/later-e2e`);
  await eventually('scheduled', async () => (await text(owner, 'job-status')) === 'scheduled');
  await owner.getByRole('button', { name: 'Cancel job' }).click();
  assert.equal(await text(owner, 'job-status'), 'cancelled');
  assert.equal(await owner.getByRole('button', { name: 'Cancel job' }).count(), 0);
});

test('a bulk action on devices selected across pages, through the preview', async () => {
  await owner.goto(`${base}/ui/devices?q=${encodeURIComponent('tags.building = 44')}`);
  await owner.getByLabel(`Select sim-${String(half).padStart(6, '0')}`).check();
  await owner.getByLabel(`Select sim-${String(half + 1).padStart(6, '0')}`).check();
  await owner.getByRole('button', { name: 'Update selection' }).click();
  assert.match(await text(owner, 'selected'), /^2 selected/);
  await owner.getByRole('link', { name: 'Next page' }).click();
  await owner.getByLabel(`Select sim-${String(half + 60).padStart(6, '0')}`).check();
  await owner.getByRole('button', { name: 'Update selection' }).click();
  assert.match(await text(owner, 'selected'), /^3 selected/);
  await owner.getByLabel('The 3 selected devices').check();
  await owner.getByLabel('Update twins').check();
  await owner.getByLabel('Tags to set').fill('{"ring": "canary"}');
  await owner.getByRole('button', { name: 'Preview job' }).click();
  assert.equal(await text(owner, 'preview-count'), '3');
  await owner.getByRole('button', { name: 'Schedule job' }).click();
  await eventually('the bulk job completed', async () => (await text(owner, 'job-status')) === 'completed', { ms: 30_000 });
  assert.equal(await text(owner, 'succeeded'), '3');
  await owner.goto(`${base}/ui/devices?q=${encodeURIComponent("tags.ring = 'canary'")}`);
  assert.match(await text(owner, 'count'), /^3 devices match/);
});

test('the jobs list and the monitor', async () => {
  await owner.goto(`${base}/ui/jobs`);
  for (const id of ['lockdoor-e2e', 'later-e2e']) await owner.getByRole('link', { name: id }).waitFor();
  // Newest first: later-e2e was created after lockdoor-e2e.
  const listed = await owner.locator('table.jobs tbody tr td:first-child a').allTextContents();
  assert.ok(listed.indexOf('later-e2e') < listed.indexOf('lockdoor-e2e'), `jobs not newest first: ${listed.join(', ')}`);
  await shot(owner, 'jobs');
  await owner.getByRole('link', { name: 'Monitor' }).click();
  await eventually('telemetry from several devices', async () => (await owner.locator('[data-telemetry] tbody tr').count()) >= 5);
  await shot(owner, 'monitor', { full: false });
  await owner.getByLabel('Device (empty for every device)').fill('sim-000003');
  await owner.getByRole('button', { name: 'Filter' }).click();
  await eventually('telemetry from sim-000003', async () => (await owner.locator('[data-telemetry] tbody tr').count()) >= 1);
  const ids = await owner.locator('[data-telemetry] tbody tr td:nth-child(2)').allTextContents();
  assert.deepEqual([...new Set(ids)], ['sim-000003']);
});

test('a registryRead policy sees no write actions, and the server refuses forged ones', async () => {
  const ro = await newPage();
  await signIn(ro, 'registryRead');
  await ro.goto(`${base}/ui/devices`);
  assert.equal(await ro.getByRole('heading', { name: 'Bulk action' }).count(), 0);
  await ro.goto(`${base}/ui/devices/sim-000001`);
  for (const name of ['Save twin', 'Invoke', 'Disable', 'Regenerate']) {
    assert.equal(await ro.getByRole('button', { name }).count(), 0, `registryRead sees "${name}"`);
  }
  assert.equal(await ro.getByRole('link', { name: 'Monitor' }).count(), 0);
  await shot(ro, 'readonly');
  await ro.goto(`${base}/ui/jobs`);
  assert.equal(await ro.getByRole('link', { name: 'New job' }).count(), 0);
  // A forged form with this session's own CSRF token.
  const csrf = await ro.locator('form[action="/ui/logout"] input[name="csrf"]').inputValue();
  const forged = await ro.request.post(`${base}/ui/devices/sim-000001/status`, {
    form: { csrf, status: 'disabled' }, headers: { Origin: base }, maxRedirects: 0,
  });
  assert.equal(forged.status(), 403);
  await ro.goto(`${base}/ui/devices/sim-000001`);
  assert.equal(await text(ro, 'device-status'), 'enabled');
  // Sign out: the session ends.
  await ro.getByRole('button', { name: 'Sign out' }).click();
  await ro.waitForURL(/\/ui\/login/);
  await ro.goto(`${base}/ui/devices`);
  await ro.waitForURL(/\/ui\/login/);
  await ro.context().close();
});

test('no page broke the Content-Security-Policy or threw', () => {
  assert.deepEqual(cspErrors, []);
});
