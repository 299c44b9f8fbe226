// Helpers for the jobs tests: polling a job to a terminal status, and
// reading its per-device records through a devices.jobs query.

import { expectSuccess, mismatch } from './azure.mjs';

/** The statuses a job ends in; pollers stop only on these. */
export const terminal = new Set(['completed', 'failed', 'cancelled']);

/** Calls getJob until the job is terminal; returns it and the statuses seen. */
export async function pollJob(client, id, deadlineMs = 90_000) {
  const deadline = Date.now() + deadlineMs;
  const seen = [];
  for (;;) {
    const { jobStatus: j } = await expectSuccess(client.getJob(id), `JobClient.getJob(${id}) returns the job`);
    if (seen.at(-1) !== j.status) seen.push(j.status);
    if (terminal.has(j.status)) return { job: j, seen };
    if (Date.now() > deadline) {
      mismatch('every job reaches completed, failed or cancelled (pollers stop only then)',
        `job ${id} went through ${seen.join(' → ')} and was still ${j.status} after ${deadlineMs / 1000} s`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The devices.jobs records of a job, sorted by deviceId. */
export async function deviceJobRecords(registry, id) {
  const q = registry.createQuery(`SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${id}'`, 100);
  const out = [];
  for (let page = 0; q.hasMoreResults; page += 1) {
    if (page > 10) mismatch('the last page of a devices.jobs query carries no x-ms-continuation header', 'kept sending one');
    const { result } = await expectSuccess(q.next(q.continuationToken), 'a devices.jobs query returns its page');
    out.push(...result);
  }
  return out.sort((a, b) => a.deviceId.localeCompare(b.deviceId));
}
