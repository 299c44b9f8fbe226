// The IoT Hub query language through azure-iothub's Registry.createQuery:
// paging with nextAsTwin and next, filters on tags and properties,
// projections and aggregates (§3.5, §7 of the compatibility reference).

import { before, describe, test } from 'node:test';
import crypto from 'node:crypto';
import iothub from 'azure-iothub';

import { hub, expectSuccess, expectFailure, expectEqual, expectThat, mismatch } from '../lib/azure.mjs';

const { Registry } = iothub;
const reg = Registry.fromConnectionString(hub.cs('iothubowner'));

// Seven devices of this run, tagged so that queries select exactly them.
const group = `q${crypto.randomBytes(4).toString('hex')}`;
const ids = Array.from({ length: 7 }, (_, i) => `${group}-d${i}`);

// drain runs a query to its end with nextAsTwin (or next), as the SDK's
// samples do, failing instead of looping forever if the hub keeps sending
// a continuation token.
async function drain(query, { asTwin = true, maxPages = 20 } = {}) {
  const pages = [];
  while (query.hasMoreResults) {
    if (pages.length >= maxPages) {
      mismatch('the last page of a query carries no x-ms-continuation header, so `while (query.hasMoreResults)` ends',
        `still announced more results after ${maxPages} pages (${pages.map((p) => p.length).join(', ')} items)`);
    }
    // Query.next() without an argument starts again at page 1 (an SDK
    // trap); next(query.continuationToken) and nextAsTwin() carry on.
    const { result } = await expectSuccess(asTwin ? query.nextAsTwin() : query.next(query.continuationToken),
      `Query.${asTwin ? 'nextAsTwin' : 'next'} returns the next page`);
    expectThat(Array.isArray(result), 'a query page is a bare JSON array', `gave ${JSON.stringify(result)}`);
    pages.push(result);
  }
  return pages;
}

describe('Queries over devices', () => {
  before(async () => {
    const { responseBody: r } = await expectSuccess(reg.addDevices(ids.map((deviceId) => ({ deviceId }))),
      'Registry.addDevices creates the devices to query');
    expectEqual(r.isSuccessful, true, 'bulk create of the query devices succeeds');
    for (const [i, id] of ids.entries()) {
      await expectSuccess(reg.updateTwin(id, {
        tags: { suite: group, n: i, even: i % 2 === 0, site: { city: i < 4 ? 'Oslo' : 'Bergen' } },
        properties: { desired: { level: i * 10 } },
      }, '*'), 'Registry.updateTwin tags a query device');
    }
  });

  test('SELECT * pages with nextAsTwin until hasMoreResults is false', async () => {
    const q = reg.createQuery(`SELECT * FROM devices WHERE tags.suite = '${group}'`, 3);
    const pages = await drain(q);
    expectEqual(pages.map((p) => p.length), [3, 3, 1],
      'with x-ms-max-item-count 3, seven matching twins come in pages of 3, 3 and 1');
    const twins = pages.flat();
    expectEqual(twins.map((t) => t.deviceId).sort(), [...ids].sort(),
      'the pages together hold every matching twin exactly once');
    const t = twins.find((x) => x.deviceId === ids[5]);
    expectThat(typeof t.update === 'function' && t.etag && t.etag !== '*',
      'nextAsTwin wraps each item in a Twin with its real etag', `gave ${JSON.stringify(t)}`);
    expectEqual([t.tags.n, t.tags.site.city, t.properties.desired.level], [5, 'Bergen', 50],
      'query results are whole twins with tags and desired properties');
    expectThat(!('jobs' in t), 'twins returned by queries have no jobs property', 'had one');
  });

  test('next(continuationToken) pages too, and a query without a page size returns everything', async () => {
    const q = reg.createQuery(`SELECT * FROM devices WHERE tags.suite = '${group}'`, 4);
    const first = await expectSuccess(q.next(), 'Query.next returns the first page');
    expectEqual(first.result.length, 4, 'the first page holds the 4 requested items');
    expectThat(q.hasMoreResults && q.continuationToken, 'a page with more to come carries x-ms-continuation',
      `continuationToken ${q.continuationToken}`);
    const second = await expectSuccess(q.next(q.continuationToken), 'Query.next(token) returns the next page');
    expectEqual(second.result.length, 3, 'the second page holds the remaining 3 items');
    expectEqual(q.hasMoreResults, false, 'the last page carries no x-ms-continuation header');
    const all = await drain(reg.createQuery(`SELECT * FROM devices WHERE tags.suite = '${group}'`));
    expectEqual(all.flat().length, 7, 'without x-ms-max-item-count, seven twins come back in all');
  });

  test('WHERE on tags and desired properties with AND, OR, NOT, IN and comparisons', async () => {
    const cases = [
      [`tags.suite = '${group}' AND tags.even = true AND tags.n >= 2`, [2, 4, 6]],
      [`tags.suite = '${group}' AND (tags.n < 1 OR tags.site.city = 'Bergen')`, [0, 4, 5, 6]],
      [`tags.suite = '${group}' AND NOT (tags.n > 1)`, [0, 1]],
      [`deviceId IN ['${ids[1]}', '${ids[3]}', 'nobody']`, [1, 3]],
      [`tags.suite = '${group}' AND tags.n NIN [0, 1, 2, 3, 4]`, [5, 6]],
      [`tags.suite = '${group}' AND properties.desired.level > 35`, [4, 5, 6]],
      [`tags.suite = '${group}' AND tags.n != 3 AND tags.n <> 4 AND tags.n <= 5`, [0, 1, 2, 5]],
      [`tags.suite = '${group}' AND IS_DEFINED(tags.site.city) AND STARTSWITH(tags.site.city, 'Os')`, [0, 1, 2, 3]],
    ];
    for (const [where, want] of cases) {
      const pages = await drain(reg.createQuery(`SELECT * FROM devices WHERE ${where}`, 100));
      expectEqual(pages.flat().map((t) => t.deviceId).sort(), want.map((i) => ids[i]).sort(),
        `SELECT * FROM devices WHERE ${where} selects exactly the matching twins`);
    }
  });

  test('projections and aggregates come back as raw objects', async () => {
    const proj = await drain(reg.createQuery(
      `SELECT deviceId, tags.n FROM devices WHERE tags.suite = '${group}' AND tags.n < 2`), { asTwin: false });
    expectEqual(proj.flat().sort((a, b) => a.n - b.n), [{ deviceId: ids[0], n: 0 }, { deviceId: ids[1], n: 1 }],
      'SELECT deviceId, tags.n returns objects with just those fields, named after the last path segment');
    const count = await drain(reg.createQuery(`SELECT COUNT() AS total FROM devices WHERE tags.suite = '${group}'`),
      { asTwin: false });
    expectEqual(count.flat(), [{ total: 7 }], 'SELECT COUNT() AS total returns one row with the count');
    const grouped = await drain(reg.createQuery(
      `SELECT tags.site.city AS city, COUNT() AS n FROM devices WHERE tags.suite = '${group}' GROUP BY tags.site.city`),
    { asTwin: false });
    expectEqual(grouped.flat().sort((a, b) => a.city.localeCompare(b.city)),
      [{ city: 'Bergen', n: 3 }, { city: 'Oslo', n: 4 }], 'GROUP BY returns one row per group with its count');
  });

  test('TOP caps the results across pages', async () => {
    const pages = await drain(reg.createQuery(`SELECT TOP 5 * FROM devices WHERE tags.suite = '${group}'`, 2));
    expectEqual(pages.flat().length, 5, 'SELECT TOP 5 returns 5 twins in all, across pages of 2');
  });

  test('an invalid query fails with ArgumentError (400)', async () => {
    await expectFailure(reg.createQuery('SELEKT * FROM devices').next(), { name: 'ArgumentError', status: 400 },
      'a query that does not parse fails with 400 (ArgumentError)');
    await expectFailure(reg.createQuery('SELECT * FROM nowhere').next(), { name: 'ArgumentError', status: 400 },
      'a query from an unknown collection fails with 400 (ArgumentError)');
  });

  test('queries need a permission: registryRead may query, device may not', async () => {
    const ro = Registry.fromConnectionString(hub.cs('registryRead'));
    const pages = await drain(ro.createQuery(`SELECT * FROM devices WHERE tags.suite = '${group}'`));
    expectEqual(pages.flat().length, 7, 'the registryRead policy may run twin queries');
    await expectFailure(Registry.fromConnectionString(hub.cs('device')).createQuery('SELECT * FROM devices').next(),
      { name: 'UnauthorizedError', status: 401 }, 'the device policy may not query: 401 (UnauthorizedError)');
  });
});
