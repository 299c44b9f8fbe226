// Jobs v2 through azure-iothub's JobClient: scheduling with a start time in
// the future, polling getJob to completion with exact statistics, listing,
// cancelling, and the errors Azure gives (§6 of the compatibility reference).
// The tutorial's targeted jobs over connected devices are in
// jobs-tutorial.test.mjs.

import { describe, test } from 'node:test';
import crypto from 'node:crypto';
import iothub from 'azure-iothub';

import { hub, expectSuccess, expectFailure, expectEqual, expectThat, mismatch } from '../lib/azure.mjs';
import { pollJob, deviceJobRecords } from '../lib/jobs.mjs';

const { JobClient, Registry } = iothub;
const reg = Registry.fromConnectionString(hub.cs('iothubowner'));
const jobs = JobClient.fromConnectionString(hub.cs('iothubowner'));
const run = crypto.randomBytes(4).toString('hex');

function jobId(name) {
  return `${name}-${run}-${crypto.randomBytes(3).toString('hex')}`;
}

describe('Jobs: scheduling, statistics, listing and cancel', () => {
  test('scheduleTwinUpdate over every device ("*") with a future start completes with exact statistics', async () => {
    // Some devices of this run, so that the hub is not empty.
    const mine = Array.from({ length: 5 }, (_, i) => `jobstar-${run}-${i}`);
    await expectSuccess(reg.addDevices(mine.map((deviceId) => ({ deviceId }))), 'Registry.addDevices creates devices');
    const { responseBody: stats } = await expectSuccess(reg.getRegistryStatistics(), 'Registry.getRegistryStatistics answers');
    const total = stats.totalDeviceCount;

    const id = jobId('stamp');
    const startTime = new Date(Date.now() + 3000);
    const { jobStatus: created, response } = await expectSuccess(jobs.scheduleTwinUpdate(id, '*',
      { etag: '*', properties: { desired: { stamp: run } } }, startTime, 300),
    'JobClient.scheduleTwinUpdate with queryCondition "*" and a start time schedules a job');
    expectEqual(response.statusCode, 200, 'Azure answers a job creation with 200');
    expectEqual([created.jobId, created.type, created.status], [id, 'scheduleUpdateTwin', 'queued'],
      'the create reply names the job and its type, with status "queued" (also for a future start)');

    const { jobStatus: got } = await expectSuccess(jobs.getJob(id), 'JobClient.getJob returns the job');
    expectEqual([got.jobId, got.type, got.queryCondition, got.maxExecutionTimeInSeconds], [id, 'scheduleUpdateTwin', '*', 300],
      'getJob echoes the job\'s id, type, queryCondition and maxExecutionTimeInSeconds');
    expectEqual(Date.parse(got.startTime), startTime.getTime(), 'getJob echoes the startTime');
    expectEqual(got.updateTwin?.properties?.desired, { stamp: run }, 'getJob echoes the updateTwin patch');

    const { job, seen } = await pollJob(jobs, id);
    expectEqual(job.status, 'completed', `the job completes (went through ${seen.join(' → ')})`);
    expectEqual(job.deviceJobStatistics,
      { deviceCount: total, failedCount: 0, succeededCount: total, runningCount: 0, pendingCount: 0 },
      `"*" targets every device: deviceJobStatistics counts all ${total} devices of the hub, all succeeded`);
    expectThat(Date.parse(job.endTime) >= startTime.getTime(), 'a completed job has an endTime after its startTime',
      `startTime ${startTime.toISOString()}, endTime ${job.endTime}`);

    for (const deviceId of mine) {
      const { responseBody: t } = await expectSuccess(reg.getTwin(deviceId), 'Registry.getTwin returns the twin');
      expectEqual(t.properties.desired.stamp, run, 'the job wrote its desired properties into every twin');
      const at = Date.parse(t.properties.desired.$metadata?.stamp?.$lastUpdated);
      expectThat(at >= startTime.getTime(), 'a job does not touch any twin before its startTime',
        `${deviceId} was written at ${t.properties.desired.$metadata?.stamp?.$lastUpdated}, before ${startTime.toISOString()}`);
    }
  });

  test('scheduleTwinUpdate with a twin-query condition updates exactly the matching twins, none early', async () => {
    const devs = Array.from({ length: 6 }, (_, i) => ({ id: `jobq-${run}-${i}`, role: i < 4 ? 'door' : 'window' }));
    await expectSuccess(reg.addDevices(devs.map((d) => ({ deviceId: d.id }))), 'Registry.addDevices creates devices');
    for (const d of devs) {
      await expectSuccess(reg.updateTwin(d.id, { tags: { jobsuite: run, role: d.role } }, '*'), 'Registry.updateTwin tags a device');
    }
    const id = jobId('building');
    const startTime = new Date(Date.now() + 3000);
    const condition = `tags.jobsuite = '${run}' AND tags.role = 'door'`;
    const { jobStatus: created } = await expectSuccess(jobs.scheduleTwinUpdate(id, condition,
      { etag: '*', properties: { desired: { building: 43, floor: 3 } } }, startTime, 300),
    'JobClient.scheduleTwinUpdate with a twin-query condition schedules a job');
    expectEqual(created.status, 'queued', 'the create reply says "queued"');
    const { job, seen } = await pollJob(jobs, id);
    expectEqual(job.status, 'completed', `the job completes (went through ${seen.join(' → ')})`);
    expectEqual(job.deviceJobStatistics, { deviceCount: 4, failedCount: 0, succeededCount: 4, runningCount: 0, pendingCount: 0 },
      'deviceJobStatistics counts exactly the four devices the condition selects, all succeeded');
    for (const d of devs) {
      const { responseBody: t } = await expectSuccess(reg.getTwin(d.id), 'Registry.getTwin returns the twin');
      const desired = t.properties.desired;
      if (d.role === 'door') {
        expectEqual([desired.building, desired.floor], [43, 3], `targeted twin ${d.id} has the job's desired properties`);
        expectThat(Date.parse(desired.$metadata.building.$lastUpdated) >= startTime.getTime(),
          'a job does not touch any twin before its startTime', `${d.id} was written at ${desired.$metadata.building.$lastUpdated}`);
        expectEqual(t.tags.role, 'door', 'the job leaves tags it does not name alone');
      } else {
        expectThat(!('building' in desired) && !('floor' in desired), `untargeted twin ${d.id} is untouched`,
          `has desired ${JSON.stringify(desired)}`);
      }
    }
    const records = await deviceJobRecords(reg, id);
    expectEqual(records.map((r) => [r.deviceId, r.jobId, r.jobType, r.status]),
      devs.filter((d) => d.role === 'door').map((d) => [d.id, id, 'scheduleUpdateTwin', 'completed']).sort(),
      'SELECT * FROM devices.jobs WHERE devices.jobs.jobId = … returns one completed scheduleUpdateTwin record per targeted device');
    for (const r of records) {
      expectThat(!Number.isNaN(Date.parse(r.createdDateTimeUtc)) && !Number.isNaN(Date.parse(r.lastUpdatedDateTimeUtc)),
        'a devices.jobs record carries createdDateTimeUtc and lastUpdatedDateTimeUtc', `record ${JSON.stringify(r)}`);
    }
  });

  test('a job whose condition does not parse is refused with ArgumentError (400)', async () => {
    // Azure accepts such a job and fails it when it runs
    // (Azure/azure-iot-sdk-csharp#40); Herd refuses it at once with the
    // parser's message and stores nothing (docs/jobs.md, docs/compat.md).
    const id = jobId('badquery');
    const err = await expectFailure(jobs.scheduleTwinUpdate(id, 'SELECT * FROM devices', { etag: '*', tags: { never: true } }),
      { name: 'ArgumentError', status: 400 },
      'JobClient.scheduleTwinUpdate with a whole SELECT as queryCondition fails with 400 (Herd: refused before it is stored)');
    expectThat(String(err.responseBody).includes('queryCondition'), 'the error says the queryCondition is not valid',
      `body ${err.responseBody}`);
    await expectFailure(jobs.getJob(id), { status: 404 }, 'JobClient.getJob of the refused job: 404, nothing was stored');
  });

  test('a job scheduled without a start time starts now', async () => {
    const id = jobId('now');
    await expectSuccess(reg.create({ deviceId: `jobnow-${run}` }), 'Registry.create creates a device');
    // The promise form without a start time sends "startTime": null and no
    // maxExecutionTimeInSeconds.
    const { jobStatus: created } = await expectSuccess(
      jobs.scheduleTwinUpdate(id, '*', { etag: '*', tags: { nowjob: run } }),
      'JobClient.scheduleTwinUpdate without a start time (startTime null) is accepted');
    expectEqual(created.status, 'queued', 'the create reply says "queued"');
    const { job } = await pollJob(jobs, id);
    expectEqual([job.status, job.deviceJobStatistics.failedCount], ['completed', 0], 'the job completes at once');
    const { responseBody: t } = await expectSuccess(reg.getTwin(`jobnow-${run}`), 'Registry.getTwin returns the twin');
    expectEqual(t.tags.nowjob, run, 'a twin job can set tags');
  });

  test('cancelJob cancels a job scheduled for later; nothing runs', async () => {
    const id = jobId('cancel');
    await expectSuccess(reg.create({ deviceId: `jobcancel-${run}` }), 'Registry.create creates a device');
    await expectSuccess(jobs.scheduleTwinUpdate(id, '*', { etag: '*', properties: { desired: { cancelled: run } } },
      new Date(Date.now() + 3600_000), 300), 'JobClient.scheduleTwinUpdate schedules a job an hour ahead');
    const { jobStatus: c } = await expectSuccess(jobs.cancelJob(id), 'JobClient.cancelJob cancels a scheduled job');
    expectEqual(c.jobId, id, 'cancelJob answers with the job');
    const { job } = await pollJob(jobs, id, 30_000);
    expectEqual(job.status, 'cancelled', 'a cancelled job ends with status "cancelled" (two l)');
    const { responseBody: t } = await expectSuccess(reg.getTwin(`jobcancel-${run}`), 'Registry.getTwin returns the twin');
    expectThat(!('cancelled' in t.properties.desired), 'a job cancelled before its start changes no twin',
      `desired ${JSON.stringify(t.properties.desired)}`);
  });

  test('JobClient.createQuery lists jobs, filtered by type and status', async () => {
    const list = async (type, status) => {
      const q = jobs.createQuery(type, status, 2);
      const all = [];
      for (let page = 0; q.hasMoreResults; page += 1) {
        if (page > 500) mismatch('the last page of a job list carries no x-ms-continuation header', 'kept sending one');
        const { result } = await expectSuccess(q.next(q.continuationToken), 'JobClient.createQuery(...).next(token) returns a page of jobs');
        expectThat(Array.isArray(result) && result.length <= 2, 'a page of jobs is a bare array of at most the page size',
          `gave ${JSON.stringify(result)}`);
        all.push(...result);
      }
      return all;
    };
    const completedTwin = await list('scheduleUpdateTwin', 'completed');
    expectThat(completedTwin.some((j) => j.jobId.startsWith(`stamp-${run}`)) && completedTwin.some((j) => j.jobId.startsWith(`now-${run}`)),
      'the completed twin jobs of this run are listed', `listed ${completedTwin.map((j) => j.jobId).join(', ')}`);
    expectThat(completedTwin.every((j) => j.type === 'scheduleUpdateTwin' && j.status === 'completed'),
      'only jobs of the requested type and status are listed', `listed ${JSON.stringify(completedTwin.map((j) => [j.type, j.status]))}`);
    const cancelled = await list(undefined, 'cancelled');
    expectThat(cancelled.some((j) => j.jobId.startsWith(`cancel-${run}`)), 'the cancelled job is listed under status cancelled',
      `listed ${cancelled.map((j) => j.jobId).join(', ')}`);
    const ids = (await list()).map((j) => j.jobId);
    expectEqual(new Set(ids).size, ids.length, 'paging through all jobs lists each job once');
    for (const prefix of ['stamp', 'building', 'now', 'cancel']) {
      expectThat(ids.some((x) => x.startsWith(`${prefix}-${run}`)), 'without filters every job is listed', `missing ${prefix}`);
    }
  });

  test('getJob and cancelJob of an unknown job fail with 404 JobNotFound', async () => {
    await expectFailure(jobs.getJob(`nosuchjob-${run}`), { status: 404, code: 'JobNotFound' },
      'JobClient.getJob of an unknown id fails with 404 ErrorCode:JobNotFound');
    await expectFailure(jobs.cancelJob(`nosuchjob-${run}`), { status: 404, code: 'JobNotFound' },
      'JobClient.cancelJob of an unknown id fails with 404 ErrorCode:JobNotFound');
  });

  test('a job id that is already used is refused, and the first job is kept', async () => {
    const id = jobId('dup');
    await expectSuccess(jobs.scheduleTwinUpdate(id, '*', { etag: '*', tags: { dup: 1 } }, new Date(Date.now() + 3600_000), 300),
      'JobClient.scheduleTwinUpdate schedules a job');
    await expectFailure(jobs.scheduleTwinUpdate(id, '*', { etag: '*', tags: { dup: 2 } }, new Date(Date.now() + 3600_000), 300),
      { status: 409 }, 'a second job with the same jobId is refused with 409 JobAlreadyExists');
    const { jobStatus: j } = await expectSuccess(jobs.getJob(id), 'JobClient.getJob returns the job');
    expectEqual(j.updateTwin?.tags, { dup: 1 }, 'the refused duplicate leaves the first job as it was');
    await expectSuccess(jobs.cancelJob(id), 'JobClient.cancelJob cancels it');
  });

  test('an updateTwin etag other than "*" is refused', async () => {
    await expectFailure(jobs.scheduleTwinUpdate(jobId('etag'), '*', { etag: 'AAAAAAAAAAE=', tags: { x: 1 } }),
      { status: [400, 412] }, 'a twin job must be a forced update: an etag other than "*" is refused (400 or 412)');
  });
});
