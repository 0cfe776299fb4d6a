import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createKeptAnalytics, replayedBody } from '../server/keptAnalytics.js';

/*
 * Which responses the lean path may replay, and how one is made again at a new moment.
 * lake.test.ts replays them behind the real change feed and compares every answer with Postgres.
 */

const ASKED_AT = '2026-12-07T10:00:00.123456Z';
const basis = { kind: 'few', held: { key: 'issuer 12 MONTH 7', serial: 1 } } as const;
const served = [{ basis, asOf: ASKED_AT }];
const headers = [['content-type', 'application/json; charset=utf-8']] as const;
const columns = 'rows { customerId month invoiceCount totalUsd avgUsd minUsd maxUsd } pageInfo { hasNextPage endCursor }';
const body = (freshness: string) => `{"data":{"invoiceStats":{"rows":[{"customerId":"7","month":"2026-12"}],${freshness}}}}\n`;

describe('kept analytics responses', () => {
  it('replays a response of invoiceStats’s columns served from one kept answer, every asOf at the new moment', () => {
    const kept = createKeptAnalytics();
    const query = `query Q($id: ID!) { invoiceStats(groupBy: ISSUER, months: 12, customerIds: [$id]) { ${columns} freshness { asOf at: asOf engine } } }`;
    kept.offer('k', { query, operationName: 'Q' }, { body: body(`"freshness":{"asOf":"${ASKED_AT}","at":"${ASKED_AT}","engine":"POSTGRES"}`), headers, cost: 12, stats: served });
    const response = kept.get('k');
    assert.ok(response, 'kept');
    assert.equal(response.basis, basis);
    assert.equal(response.operationName, 'Q');
    assert.equal(response.cost, 12);
    const later = '2026-12-07T10:00:01.000001Z';
    assert.equal(replayedBody(response, later).toString('utf8'), body(`"freshness":{"asOf":"${later}","at":"${later}","engine":"POSTGRES"}`));
    kept.forget('k');
    assert.equal(kept.get('k'), undefined, 'forgotten');
  });

  it('replays a 10,000-row page of the lake, keeps no answer larger than a page of every column, and pushes no few customers\u2019 answer out', () => {
    // Room for two pages of the lake, and the few customers' usual room.
    const kept = createKeptAnalytics({ few: { total: 32 * 2 ** 20, body: 64 * 1024 }, lake: { total: 3 * 2 ** 20, body: 4 * 2 ** 20 } });
    const few = `query Q($id: ID!) { invoiceStats(groupBy: ISSUER, months: 12, customerIds: [$id]) { ${columns} freshness { asOf } } }`;
    kept.offer('few', { query: few, operationName: 'Q' }, { body: body(`"freshness":{"asOf":"${ASKED_AT}"}`), headers, cost: 12, stats: served });
    const lake = [{ basis: { kind: 'lake', version: '3 lake/manifest-3.json 17', thisMonth: '2026-12', batchesHere: 4 } as const, asOf: ASKED_AT }];
    const row = '{"customerId":"100000","month":null,"invoiceCount":1000,"totalUsd":"123456789.12","avgUsd":"123456.79","minUsd":"1.00","maxUsd":"999999.99"}';
    const page = (rows: number) => body(`"rows":[${Array(rows).fill(row).join(',')}],"freshness":{"asOf":"${ASKED_AT}","lakeAsOf":"2026-12-07T09:00:00.000001Z"}`);
    const query = `{ invoiceStats(groupBy: ISSUER, months: 12, granularity: TOTAL, first: 10000) { ${columns} freshness { asOf lakeAsOf } } }`;
    // More pages than the lake's room: the oldest go, the few customers' answer (kept first) stays.
    for (let i = 0; i < 8; i++) kept.offer(`page ${i}`, { query }, { body: page(10_000), headers, cost: 10_020, stats: lake });
    assert.equal(kept.get('page 0'), undefined, 'the oldest page pushed out');
    const response = kept.get('page 7');
    assert.ok(response, 'a full page kept');
    const later = '2026-12-07T10:00:01.000001Z';
    assert.equal(replayedBody(response, later).toString('utf8'), page(10_000).replace(ASKED_AT, later), 'only the asOf is new; the lakeAsOf stays');
    assert.ok(kept.get('few'), 'the few customers\u2019 answer kept beside the pages');
    kept.offer('aliased', { query }, { body: page(40_000), headers, cost: 10_020, stats: lake });
    assert.equal(kept.get('aliased'), undefined, 'past a page of every column');
  });

  it('keeps nothing that depends on more than the kept answer', () => {
    const kept = createKeptAnalytics();
    const offer = (query: string, stats: typeof served | null[] | undefined) =>
      kept.offer('k', { query }, { body: body(`"freshness":{"asOf":"${ASKED_AT}"}`), headers, cost: 1, stats });
    const stats = (more: string) => `{ invoiceStats(groupBy: ISSUER, months: 12, customerIds: ["7"]) { ${columns} ${more} } }`;
    offer(stats('rows { customer { name } }'), served);
    assert.equal(kept.get('k'), undefined, 'a row’s customer: read apart from the invoices');
    offer(`{ invoiceStats(groupBy: ISSUER, months: 12, customerIds: ["7"]) { ${columns} } invoice(id: "1") { id } }`, served);
    assert.equal(kept.get('k'), undefined, 'another root field');
    offer(`mutation { __typename }`, served);
    assert.equal(kept.get('k'), undefined, 'not a query');
    offer(stats('freshness { asOf }'), [null]);
    assert.equal(kept.get('k'), undefined, 'computed, not served from a kept answer');
    offer(stats('freshness { asOf }'), [...served, ...served]);
    assert.equal(kept.get('k'), undefined, 'two invoiceStats fields run');
    offer(stats('freshness { asOf }'), undefined);
    assert.equal(kept.get('k'), undefined, 'no invoiceStats field run');
    offer(stats('freshness { asOf } ... on Query { __typename }'), served);
    assert.equal(kept.get('k'), undefined, 'a fragment on the wrong type');
    offer(`{ ...F } fragment F on Query { invoiceStats(groupBy: ISSUER, months: 12, customerIds: ["7"]) { ${columns} freshness { asOf } } }`, served);
    assert.ok(kept.get('k'), 'through a fragment');
  });
});
