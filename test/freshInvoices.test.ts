import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createFreshInvoices, visibility, parseSnapshot, type FreshRead } from '../sources/lake/freshInvoices.js';
import type { FeedTransaction } from '../sources/postgres/replication.js';
import type { StatsQuery } from '../sources/postgres/statsStore.js';

/*
 * The in-memory fresh invoices' rules, on transactions written out by hand: which transactions a
 * snapshot sees, when what was kept is complete, and the groups' text. lake.test.ts runs the same
 * code behind the real change feed and compares every answer with Postgres.
 */

const invoice = (id: number, date: string, issuer: number, receiver: number, amount: string) => ({
  invoice_id: String(id),
  issue_date: new Date(date),
  issuer_id: issuer,
  receiver_id: receiver,
  amount_usd: amount,
});

let lsn = 100n;
function tx(xid: number, ...changes: FeedTransaction['changes']): FeedTransaction {
  return { lsn: lsn++, xid, commitTime: new Date(), changes, messages: [] };
}
const insert = (row: ReturnType<typeof invoice>) => ({ table: 'invoices' as const, op: 'insert' as const, row, key: null });
const update = (row: ReturnType<typeof invoice>, oldId?: number) => ({ table: 'invoices' as const, op: 'update' as const, row, key: oldId === undefined ? null : { invoice_id: String(oldId) } });
const remove = (id: number) => ({ table: 'invoices' as const, op: 'delete' as const, row: null, key: { invoice_id: String(id) } });

const query = (over: Partial<StatsQuery> = {}): StatsQuery => ({
  role: 'issuer',
  months: 12,
  customerIds: null,
  granularity: 'MONTH',
  orderBy: 'TOTAL_DESC',
  limit: 101,
  after: null,
  ...over,
});

const exported = { generation: 1, snapshot: '1000:1000:' };
const read = (snapshot: string, over: Partial<FreshRead> = {}): FreshRead => ({
  snapshot,
  exported,
  maxId: '100',
  from: '2026-01-01T00:00:00Z',
  to: '2027-01-01T00:00:00Z',
  query: query(),
  scope: 'all',
  ...over,
});

const sorted = (records: string | undefined) => (records ?? '').split(',').filter(Boolean).sort();

describe('fresh invoices kept from the change feed', () => {
  it('groups the invoices above the export’s highest id as the query’s snapshot sees them, in Postgres’s text', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([
      tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '-5.10')), insert(invoice(102, '2026-11-30T23:59:59.999Z', 1, 3, '12.00'))),
      tx(1001, insert(invoice(103, '2026-12-01T00:00:00Z', 1, 2, '0.05')), insert(invoice(99, '2026-12-01T00:00:00Z', 1, 2, '7.00'))),
      tx(1002, update(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '1.00'))),
      tx(1003, remove(102)),
    ]);
    // 1000 below xmin; 1001 completed; 1002 in progress; 1003 begun after the snapshot.
    const seen = fresh.liveGroups(read('1001:1003:1002'))!;
    assert.deepEqual(sorted(seen.records), ['2026-11 1 2 6.90 -5.10 12.00', '2026-12 1 1 0.05 0.05 0.05'], 'id 99 is at or below the highest id: the change list reads it');
    assert.equal(seen.invoices, 3);
    assert.equal(seen.groups, 2);
    assert.equal(seen.partial, false);
    const later = fresh.liveGroups(read('1004:1004:'))!;
    assert.deepEqual(sorted(later.records), ['2026-11 1 1 1.00 1.00 1.00', '2026-12 1 1 0.05 0.05 0.05']);
    const byReceiver = fresh.liveGroups(read('1004:1004:', { query: query({ role: 'receiver', customerIds: [2] }) }))!;
    assert.deepEqual(sorted(byReceiver.records), ['2026-11 2 1 1.00 1.00 1.00', '2026-12 2 1 0.05 0.05 0.05']);
    const outside = fresh.liveGroups(read('1004:1004:', { from: '2026-12-01T00:00:00Z' }))!;
    assert.deepEqual(sorted(outside.records), ['2026-12 1 1 0.05 0.05 0.05'], 'the window’s first instant is in it');
  });

  it('follows an invoice given a new id, and a TRUNCATE', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00'))), tx(1001, update(invoice(150, '2026-11-03T10:00:00Z', 4, 2, '3.00'), 101))]);
    assert.deepEqual(sorted(fresh.liveGroups(read('1002:1002:'))!.records), ['2026-11 4 1 3.00 3.00 3.00']);
    fresh.add([tx(1002, { table: 'invoices', op: 'truncate', row: null, key: null }), tx(1003, insert(invoice(151, '2026-11-04T10:00:00Z', 5, 2, '4.00')))]);
    assert.deepEqual(sorted(fresh.liveGroups(read('1004:1004:'))!.records), ['2026-11 5 1 4.00 4.00 4.00']);
    assert.deepEqual(sorted(fresh.liveGroups(read('1002:1002:'))!.records), ['2026-11 4 1 3.00 3.00 3.00'], 'a snapshot before the TRUNCATE');
  });

  it('answers only for an export that began after the stream did, and not while no stream runs', () => {
    const fresh = createFreshInvoices(1000);
    assert.equal(fresh.liveGroups(read('1001:1001:')), undefined, 'before any stream');
    fresh.begin('1200');
    assert.equal(fresh.covers(exported), false);
    assert.equal(fresh.liveGroups(read('1300:1300:')), undefined, 'an export whose snapshot may not see a transaction committed before the stream');
    const after = { generation: 1, snapshot: '1200:1210:1205' };
    assert.equal(fresh.covers(after), true);
    assert.deepEqual(fresh.liveGroups(read('1300:1300:', { exported: after }))?.records, '');
    fresh.end();
    assert.equal(fresh.liveGroups(read('1300:1300:', { exported: after })), undefined, 'the stream ended');
  });

  it('drops what an export saw, and then answers no query of an older export', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00'))), tx(1001, insert(invoice(102, '2026-11-03T10:00:00Z', 1, 2, '4.00')))]);
    assert.equal(fresh.size(), 2);
    const newer = { generation: 2, snapshot: '1001:1001:' };
    assert.deepEqual(sorted(fresh.liveGroups(read('1002:1002:', { exported: newer, maxId: '101' }))!.records), ['2026-11 1 1 4.00 4.00 4.00']);
    assert.equal(fresh.size(), 1, 'the export’s transaction dropped');
    assert.equal(fresh.liveGroups(read('1002:1002:')), undefined, 'a query of the older export would lack it');
  });

  it('keeps at most its bound of changes: past it, nothing until the stream begins again', () => {
    const fresh = createFreshInvoices(3);
    fresh.begin('1000');
    assert.equal(fresh.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00')), insert(invoice(102, '2026-11-03T10:00:00Z', 1, 2, '3.00')))]), true);
    assert.equal(fresh.add([tx(1001, insert(invoice(103, '2026-11-03T10:00:00Z', 1, 2, '3.00')), insert(invoice(104, '2026-11-03T10:00:00Z', 1, 2, '3.00')))]), false);
    assert.equal(fresh.liveGroups(read('1002:1002:')), undefined);
    fresh.begin('1000');
    assert.equal(fresh.liveGroups(read('1002:1002:'))?.records, '');
    assert.equal(fresh.add([tx(1002, insert({ ...invoice(2 ** 60, '2026-11-03T10:00:00Z', 1, 2, '3.00'), invoice_id: String(2n ** 60n) }))]), false, 'an id past 2^53');
  });

  it('answers a snapshot that sees every kept change again without grouping again, until a change is kept', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00'))), tx(1001, insert(invoice(102, '2026-11-04T10:00:00Z', 1, 2, '4.00')))]);
    const first = fresh.liveGroups(read('1002:1002:'))!;
    assert.equal(fresh.liveGroups(read('1005:1005:')), first, 'another snapshot that sees every kept change');
    const nextPage = query({ granularity: 'TOTAL', after: { sortValue: '3.00', customerId: 1, month: null } });
    assert.equal(fresh.liveGroups(read('1005:1005:', { query: nextPage })), first, 'every group, whatever the order and cursor');
    assert.notEqual(fresh.liveGroups(read('1002:1002:', { scope: 'page', query: query({ orderBy: 'CUSTOMER_ASC' }) })), first, 'another question');
    const partly = fresh.liveGroups(read('1001:1002:1001'))!;
    assert.equal(partly.records, '2026-11 1 1 3.00 3.00 3.00');
    assert.notEqual(fresh.liveGroups(read('1001:1002:1001')), partly, 'a snapshot that misses a kept change is grouped each time');
    fresh.add([tx(1002, insert(invoice(103, '2026-11-05T10:00:00Z', 1, 2, '5.00')))]);
    assert.equal(fresh.liveGroups(read('1003:1003:'))!.records, '2026-11 1 3 12.00 3.00 5.00', 'grouped again once a change is kept');
  });

  it('keeps nothing, and asks for no new anchor, before a stream begins or with a bound of 0', () => {
    const idle = createFreshInvoices(1000);
    assert.equal(idle.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00')))]), true);
    assert.equal(idle.size(), 0);
    const off = createFreshInvoices(0);
    off.begin('1000');
    assert.equal(off.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '3.00')))]), true);
    assert.equal(off.liveGroups(read('1001:1001:')), undefined);
  });

  it('sends a page in customer order only the first keys past its cursor, and counts every invoice', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([
      tx(
        1000,
        ...[1, 2, 3, 4].flatMap((customer) => [
          insert(invoice(100 + customer * 2, '2026-10-05T00:00:00Z', customer, 9, `${customer}.00`)),
          insert(invoice(101 + customer * 2, '2026-11-05T00:00:00Z', customer, 9, `${customer}.50`)),
        ]),
      ),
    ]);
    const page = (over: Partial<StatsQuery>, upTo?: number) =>
      fresh.liveGroups(read('1001:1001:', { maxId: '0', scope: 'page', upTo, query: query({ orderBy: 'CUSTOMER_ASC', limit: 3, ...over }) }))!;
    const monthly = page({ after: { sortValue: null, customerId: 2, month: '2026-10' } });
    assert.equal(monthly.records, '2026-11 2 1 2.50 2.50 2.50,2026-10 3 1 3.00 3.00 3.00,2026-11 3 1 3.50 3.50 3.50');
    assert.equal(monthly.invoices, 8);
    assert.equal(monthly.partial, true);
    const totals = page({ granularity: 'TOTAL', limit: 2, after: { sortValue: null, customerId: 1, month: null } });
    assert.deepEqual(sorted(totals.records), ['2026-10 2 1 2.00 2.00 2.00', '2026-10 3 1 3.00 3.00 3.00', '2026-11 2 1 2.50 2.50 2.50', '2026-11 3 1 3.50 3.50 3.50']);
    const bounded = page({}, 1);
    assert.equal(bounded.records, '2026-10 1 1 1.00 1.00 1.00,2026-11 1 1 1.50 1.50 1.50', 'customers past the bound are counted, not grouped');
    assert.equal(bounded.invoices, 8);
  });

  it('sees transactions across an xid epoch as Postgres does', () => {
    const epoch = 2 ** 32;
    const seen = visibility(parseSnapshot(`${epoch + 5}:${epoch + 10}:${epoch + 7}`));
    assert.equal(seen(4_294_967_290), true, 'the last epoch’s xid');
    assert.equal(seen(6), true);
    assert.equal(seen(7), false, 'in progress');
    assert.equal(seen(10), false, 'begun after');
  });

  it('sums a total past 2^53 cents exactly', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    fresh.add([tx(1000, ...Array.from({ length: 91 }, (_, i) => insert(invoice(101 + i, '2026-11-03T10:00:00Z', 1, 2, '999999999999.99'))))]);
    const groups = fresh.liveGroups(read('1001:1001:'))!;
    // 91 * 99,999,999,999,999 cents, past Number.MAX_SAFE_INTEGER.
    assert.equal(groups.records, '2026-11 1 91 90999999999999.09 999999999999.99 999999999999.99');
    assert.equal(groups.small, true);
  });

  it('keeps nothing it could not sum exactly: an amount past numeric(14,2)\u2019s range', () => {
    const fresh = createFreshInvoices(1000);
    fresh.begin('1000');
    assert.equal(fresh.add([tx(1000, insert(invoice(101, '2026-11-03T10:00:00Z', 1, 2, '-0.05')))]), true);
    assert.equal(fresh.liveGroups(read('1001:1001:'))!.records, '2026-11 1 1 -0.05 -0.05 -0.05');
    assert.equal(fresh.add([tx(1001, insert(invoice(102, '2026-11-03T10:00:00Z', 1, 2, '99999999999999999.99')))]), false);
    assert.equal(fresh.liveGroups(read('1002:1002:')), undefined);
  });
});
