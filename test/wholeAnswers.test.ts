import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createWholeAnswers } from '../sources/lake/wholeAnswers.js';
import type { StatsQuery, StatsWindow } from '../sources/postgres/statsStore.js';

const window: StatsWindow = { months: ['2026-11', '2026-12'], from: '2026-11-01T00:00:00Z', to: '2027-01-01T00:00:00Z', asOf: '2026-12-05T00:00:00Z', lakeGeneration: 3, lakeManifestKey: 'manifests/000000000003.json', lakeMaxId: '100', snapshot: '1:1:', wal: { insert: '0/1', flush: '0/1', blockSize: 8192, segmentSize: 16777216 },
  changes: { generation: 3, manifestKey: 'manifests/000000000003.json', exportedAt: null, version: '3 manifests/000000000003.json 7', seenBySnapshot: true, above: null, ids: [], changed: [] } };
const query = (over: Partial<StatsQuery> = {}): StatsQuery => ({
  role: 'issuer', months: 2, customerIds: null, granularity: 'MONTH', orderBy: 'TOTAL_DESC', limit: 3, after: null, ...over,
});
const about = { version: '3 m 7', generation: 3, allInvoices: '60', lakeRows: 50, liveRows: 10, lakeAsOf: null };
/** `customer month invoices total min max`, in TOTAL_DESC order. */
const records = ['7 2026-12 10 500.00 1.00 90.00', '3 2026-11 20 400.00 1.00 80.00', '3 2026-12 10 400.00 2.00 70.00', '9 2026-11 20 100.50 0.50 9.00'].join(',');

describe('whole answers kept for paging clients', () => {
  it('slices the page after a cursor, and refuses a cursor that names no group or another sort value', () => {
    const answers = createWholeAnswers(100);
    const kept = answers.keep(query(), window, { ...about, records });
    assert.equal(kept.start(null), 0);
    const start = kept.start({ sortValue: '400.00', customerId: 3, month: '2026-11' });
    assert.equal(start, 2);
    assert.deepEqual(kept.groups(start!, 3), [
      { customerId: 3, month: '2026-12', invoices: '10', totalUsd: '400.00', minUsd: '2.00', maxUsd: '70.00', allInvoices: '60' },
      { customerId: 9, month: '2026-11', invoices: '20', totalUsd: '100.50', minUsd: '0.50', maxUsd: '9.00', allInvoices: '60' },
    ]);
    assert.equal(kept.start({ sortValue: '399.00', customerId: 3, month: '2026-11' }), undefined, 'the group had another total');
    assert.equal(kept.start({ sortValue: '400.00', customerId: 4, month: '2026-11' }), undefined, 'no such group');
  });

  it('keeps one answer per shape and window, and drops the least recently used past its budget', () => {
    // Each of these weighs its 4 groups, 1 for itself and 1 for its key (under 64 characters).
    const answers = createWholeAnswers(12);
    answers.keep(query(), window, { ...about, records });
    answers.keep(query({ role: 'receiver' }), window, { ...about, records });
    assert.ok(answers.find(query({ after: { sortValue: '500.00', customerId: 7, month: '2026-12' }, limit: 10 }), window), 'the page and cursor are not part of the shape');
    assert.equal(answers.find(query({ orderBy: 'COUNT_DESC' }), window), undefined);
    assert.equal(answers.find(query(), { ...window, months: ['2026-12'] }), undefined);
    // The issuers' answer was used last: the receivers' goes to make room.
    answers.keep(query({ customerIds: [3, 7] }), window, { ...about, records });
    assert.equal(answers.find(query({ role: 'receiver' }), window), undefined);
    assert.ok(answers.find(query(), window));
    assert.ok(answers.find(query({ customerIds: [3, 7] }), window));
    assert.ok(answers.find(query({ customerIds: [7, 3] }), window), 'the same customers in another order');
    // Kept again at a new version: replaced, not added.
    answers.keep(query(), window, { ...about, version: '3 m 8', records });
    assert.equal(answers.find(query(), window)!.version, '3 m 8');
    assert.ok(answers.find(query({ customerIds: [3, 7] }), window));
  });

  it('does not keep an answer larger than the budget, but still pages it', () => {
    const answers = createWholeAnswers(3);
    const kept = answers.keep(query(), window, { ...about, records });
    assert.equal(answers.find(query(), window), undefined);
    assert.equal(kept.groups(0, 10).length, 4);
  });

  it('counts empty answers and long id lists against the budget, so ever new id lists stay bounded', () => {
    const answers = createWholeAnswers(1_000);
    const ids = (n: number) => Array.from({ length: 100 }, (_, i) => n * 1_000 + i);
    for (let n = 0; n < 1_000; n++) answers.keep(query({ customerIds: ids(n) }), window, { ...about, records: '' });
    const kept = Array.from({ length: 1_000 }, (_, n) => answers.find(query({ customerIds: ids(n) }), window)).filter(Boolean).length;
    // Each weighs 1 + its key's 64-character blocks (100 ids of up to 6 digits: about 11): about 80 stay.
    assert.ok(kept > 50 && kept < 200, `${kept} empty answers kept`);
    assert.ok(answers.find(query({ customerIds: ids(999) }), window), 'the newest stays');
  });
});
