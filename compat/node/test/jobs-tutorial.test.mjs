// Jobs v2 through azure-iothub's JobClient: the "Schedule and broadcast
// jobs" tutorial — a direct-method job and a twin-update job, each with a
// twin-query condition and a start time in the future — polled with getJob
// to completion with exact statistics, per-device results from
// devices.jobs, and cancelJob of a method job (§6 of the compatibility
// reference). Listing and errors are in jobs.test.mjs.

import { after, before, describe, test } from 'node:test';
import crypto from 'node:crypto';
import iothub from 'azure-iothub';

import { hub, expectSuccess, expectEqual, expectThat } from '../lib/azure.mjs';
import { Fleet, Mqtt, MqttWs, ownerRegistry, nextEvent, expectEvent } from '../lib/device.mjs';
import { pollJob, deviceJobRecords, terminal } from '../lib/jobs.mjs';

const { JobClient } = iothub;
const reg = ownerRegistry();
const jobs = JobClient.fromConnectionString(hub.cs('iothubowner'));
const fleet = new Fleet();
after(() => fleet.closeAll());

const run = crypto.randomBytes(4).toString('hex');
const startDelayMs = 4000;

function jobId(name) {
  return `${name}-${run}-${crypto.randomBytes(3).toString('hex')}`;
}

// Six devices: four doors (the jobs' target) and two windows (never
// touched). Each records when it got which method call.
const devices = Array.from({ length: 6 }, (_, i) => ({
  id: `job-${run}-${i < 4 ? 'door' : 'window'}${i}`,
  role: i < 4 ? 'door' : 'window',
  calls: [],
  client: null,
  twin: null,
}));
const doors = devices.filter((d) => d.role === 'door');
const windows = devices.filter((d) => d.role === 'window');
const condition = `tags.jobsuite = '${run}' AND tags.role = 'door'`;

describe('Jobs (the Schedule and broadcast jobs tutorial)', () => {
  before(async () => {
    for (const [i, d] of devices.entries()) {
      const { responseBody: dev } = await expectSuccess(reg.create({ deviceId: d.id }), 'Registry.create creates a device');
      await expectSuccess(reg.updateTwin(d.id, { tags: { jobsuite: run, role: d.role } }, '*'), 'Registry.updateTwin tags a device');
      d.client = await fleet.open(hub.deviceCS(d.id, dev.authentication.symmetricKey.primaryKey), i % 2 ? MqttWs : Mqtt);
      d.client.onDeviceMethod('lockDoor', (request, response) => {
        d.calls.push({ at: Date.now(), payload: request.payload });
        response.send(200, { Response: 'lockDoor called successfully' }, () => {});
      });
      d.twin = await expectSuccess(d.client.getTwin(), 'client.getTwin returns the twin');
      d.twin.on('properties.desired', () => {});
      await expectSuccess(d.client.getTwin(), 'client.getTwin returns the twin'); // subscriptions processed
    }
  });

  test('scheduleDeviceMethod: every targeted device is called exactly once, none early, others never', async () => {
    const id = jobId('lockdoor');
    const startTime = new Date(Date.now() + startDelayMs);
    const { jobStatus: created } = await expectSuccess(jobs.scheduleDeviceMethod(id, condition,
      { methodName: 'lockDoor', payload: { lockTime: '10m' }, responseTimeoutInSeconds: 60 }, startTime, 300),
    'JobClient.scheduleDeviceMethod schedules a method job');
    expectEqual([created.jobId, created.type, created.status], [id, 'scheduleDeviceMethod', 'queued'],
      'the create reply names the job, its type, and status "queued" (also for a future start)');

    const { jobStatus: early } = await expectSuccess(jobs.getJob(id), 'JobClient.getJob returns a scheduled job');
    expectThat(!terminal.has(early.status) && early.status !== 'running' || Date.now() >= startTime.getTime(),
      'a job does not run before its startTime', `was ${early.status} ${startTime.getTime() - Date.now()} ms early`);
    expectEqual(early.queryCondition, condition, 'getJob echoes the queryCondition');
    expectEqual(early.cloudToDeviceMethod?.methodName, 'lockDoor', 'getJob echoes cloudToDeviceMethod');

    const { job, seen } = await pollJob(jobs, id);
    expectEqual(job.status, 'completed', `the job completes (went through ${seen.join(' → ')})`);
    expectEqual(job.deviceJobStatistics, { deviceCount: 4, failedCount: 0, succeededCount: 4, runningCount: 0, pendingCount: 0 },
      'deviceJobStatistics counts the four targeted devices, all succeeded');
    expectThat(job.endTime && Date.parse(job.endTime) >= startTime.getTime(), 'a finished job has an endTime after its start',
      `endTime ${job.endTime}`);
    for (const d of doors) {
      expectEqual(d.calls.length, 1, `targeted device ${d.id} is called exactly once`);
      expectEqual(d.calls[0].payload, { lockTime: '10m' }, 'the job passes the method payload unchanged');
      expectThat(d.calls[0].at >= startTime.getTime(), `no device is called before the job's startTime`,
        `${d.id} was called ${startTime.getTime() - d.calls[0].at} ms early`);
    }
    for (const w of windows) expectEqual(w.calls.length, 0, `untargeted device ${w.id} is never called`);

    const records = await deviceJobRecords(reg, id);
    expectEqual(records.map((r) => r.deviceId), doors.map((d) => d.id).sort(),
      'devices.jobs holds one record per targeted device');
    for (const r of records) {
      expectEqual([r.jobId, r.jobType, r.status], [id, 'scheduleDeviceMethod', 'completed'],
        'each devices.jobs record names the job and type, status completed');
      expectEqual(r.outcome?.deviceMethodResponse, { status: 200, payload: { Response: 'lockDoor called successfully' } },
        'outcome.deviceMethodResponse is what the device answered');
    }
    for (const d of doors) d.calls.length = 0;
  });

  test('scheduleTwinUpdate: targeted twins get the desired patch (and devices the push), others untouched', async () => {
    const id = jobId('building');
    const startTime = new Date(Date.now() + startDelayMs);
    const pushes = doors.map((d) => nextEvent(d.twin, 'properties.desired', (p) => p?.building === 43));
    const pushedAt = doors.map(() => 0);
    pushes.forEach((p, i) => p.then(() => { pushedAt[i] = Date.now(); }));
    const { jobStatus: created } = await expectSuccess(jobs.scheduleTwinUpdate(id, condition,
      { etag: '*', properties: { desired: { building: 43, floor: 3 } } }, startTime, 300),
    'JobClient.scheduleTwinUpdate schedules a twin job');
    expectEqual([created.type, created.status], ['scheduleUpdateTwin', 'queued'], 'the create reply says queued');

    const { job, seen } = await pollJob(jobs, id);
    expectEqual(job.status, 'completed', `the job completes (went through ${seen.join(' → ')})`);
    expectEqual(job.deviceJobStatistics, { deviceCount: 4, failedCount: 0, succeededCount: 4, runningCount: 0, pendingCount: 0 },
      'deviceJobStatistics counts the four targeted devices, all succeeded');
    for (const [i, d] of doors.entries()) {
      await expectEvent(pushes[i], `connected device ${d.id} gets the job's desired change as a push`);
      expectThat(pushedAt[i] >= startTime.getTime(), 'no twin is updated before the job\'s startTime',
        `${d.id} got its push ${startTime.getTime() - pushedAt[i]} ms early`);
      const { responseBody: t } = await expectSuccess(reg.getTwin(d.id), 'Registry.getTwin returns the twin');
      expectEqual([t.properties.desired.building, t.properties.desired.floor], [43, 3],
        `targeted twin ${d.id} has the job's desired properties`);
      expectEqual(t.tags.role, 'door', 'the job leaves tags it does not name alone');
    }
    for (const w of windows) {
      const { responseBody: t } = await expectSuccess(reg.getTwin(w.id), 'Registry.getTwin returns the twin');
      expectThat(!('building' in t.properties.desired), `untargeted twin ${w.id} is untouched`,
        `has desired ${JSON.stringify(t.properties.desired)}`);
    }
    const records = await deviceJobRecords(reg, id);
    expectEqual(records.map((r) => [r.deviceId, r.jobType, r.status]),
      doors.map((d) => [d.id, 'scheduleUpdateTwin', 'completed']).sort(),
      'devices.jobs holds a completed scheduleUpdateTwin record per targeted device');
  });

  test('cancelJob stops a scheduled method job before it starts; no device is called', async () => {
    const id = jobId('cancel');
    await expectSuccess(jobs.scheduleDeviceMethod(id, condition, { methodName: 'lockDoor', payload: null },
      new Date(Date.now() + 3600_000), 300), 'JobClient.scheduleDeviceMethod schedules a job an hour ahead');
    const { jobStatus: c } = await expectSuccess(jobs.cancelJob(id), 'JobClient.cancelJob cancels a scheduled job');
    expectEqual(c.jobId, id, 'cancelJob returns the job');
    const { job } = await pollJob(jobs, id, 30_000);
    expectEqual(job.status, 'cancelled', 'a cancelled job ends with status "cancelled" (two l)');
    for (const d of devices) expectEqual(d.calls.length, 0, 'no device is called by a cancelled job');
  });
});
