import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createFewAnswers, type FewAnswers } from '../sources/lake/fewAnswers.js';
import type { FeedTransaction } from '../sources/postgres/replication.js';
import type { StatsGroup } from '../sources/postgres/statsStore.js';

/*
 * The kept few-customer answers' rules, on transactions written out by hand: which commits drop
 * an answer, and when one is not kept at all. lake.test.ts runs the same code behind the real
 * change feed and compares every answer with Postgres.
 */

let lsn = 100n;
function tx(xid: number, ...changes: FeedTransaction['changes']): FeedTransaction {
  return { lsn: lsn++, xid, commitTime: new Date(), changes, messages: [] };
}
const row = (id: number, issuer: number, receiver: number) => ({ invoice_id: String(id), issue_date: new Date(), issuer_id: issuer, receiver_id: receiver, amount_usd: '1.00' });
const insert = (id: number, issuer: number, receiver: number) => ({ table: 'invoices' as const, op: 'insert' as const, row: row(id, issuer, receiver), key: null });
const update = (id: number, issuer: number, receiver: number) => ({ table: 'invoices' as const, op: 'update' as const, row: row(id, issuer, receiver), key: null });
const customerRow = { table: 'customers' as const, op: 'update' as const, row: { customer_id: 7, name: 'x' }, key: null };

const groups: StatsGroup[] = [{ customerId: 7, month: '2026-12', invoices: '2', totalUsd: '3.00', minUsd: '1.00', maxUsd: '2.00', allInvoices: '2' }];
const MONTH = '2026-12';
/** A later query's moment: its snapshot (after every transaction of these tests) and month. */
const NOW = { snapshot: '1500:1500:', thisMonth: MONTH };

/** What a query asking again at `moment` is served (held first, then checked, as statsEngine does). */
function served(few: FewAnswers, moment = NOW, key = 'k') {
  const held = few.held(key);
  return held && few.answer(held, moment);
}

/** Answers kept for issuer 7 under `key`, the statement's snapshot being `snapshot`. */
function keptFor(snapshot: string, { anchor = '1000', key = 'k' } = {}) {
  const few = createFewAnswers();
  few.begin(anchor);
  const watch = few.watch(key, 'issuer', [7])!;
  return { few, watch, keep: () => watch.keep({ snapshot, thisMonth: MONTH, groups }) };
}

describe('kept few-customer answers', () => {
  it('are served while no commit the answer did not see touches their customers', () => {
    const { few, keep } = keptFor('1005:1010:1007');
    assert.equal(keep(), true);
    assert.deepEqual(served(few), groups);
    // Seen by the answer's snapshot (below xmin, or below xmax and not running), another issuer, a receiver, another table.
    few.add([tx(1004, insert(1, 7, 8)), tx(1006, insert(2, 7, 8)), tx(1011, insert(3, 8, 7)), tx(1012, insert(4, 9, 7)), tx(1013, customerRow)]);
    assert.deepEqual(served(few), groups);
    // Another month: another window, and the answer is never asked for again.
    const held = few.held('k')!;
    assert.equal(few.holds(held), true);
    assert.equal(served(few, { ...NOW, thisMonth: '2027-01' }), undefined);
    assert.equal(few.holds(held), false, 'dropped in a later month');
    assert.equal(few.size(), 0);
  });

  it('are dropped by a commit their snapshot did not see that touches their customers', () => {
    for (const [label, commit] of [
      ['running when the answer was made', tx(1007, insert(5, 7, 8))],
      ['begun after it', tx(1010, insert(6, 7, 8))],
      ['an update, whose old parties the feed does not name', tx(1011, update(3, 8, 9))],
    ] as const) {
      const { few, keep } = keptFor('1005:1010:1007');
      assert.equal(keep(), true, label);
      few.add([commit]);
      assert.equal(served(few), undefined, label);
      assert.equal(few.size(), 0, label);
    }
  });

  it('are not kept when a commit delivered before the statement touched them unseen (decoded, not yet visible)', () => {
    const few = createFewAnswers();
    few.begin('1000');
    // Decoded and delivered, but its commit waits (a synchronous standby): not yet visible.
    few.add([tx(1003, insert(7, 7, 8))]);
    const watch = few.watch('k', 'issuer', [7])!;
    assert.equal(watch.keep({ snapshot: '1003:1004:1003', thisMonth: MONTH, groups }), false);
    // Once a snapshot sees it, an answer is kept.
    const again = few.watch('k', 'issuer', [7])!;
    assert.equal(again.keep({ snapshot: '1004:1004:', thisMonth: MONTH, groups }), true);
  });

  it('keep a delivered commit in view while a statement runs, even if a snapshot then prunes it', () => {
    const few = createFewAnswers();
    few.begin('1000');
    const watch = few.watch('k', 'issuer', [7])!;
    few.add([tx(1003, insert(7, 7, 8))]);
    // A later query's snapshot sees 1003 finished: the list drops it, but the running statement's snapshot may predate that.
    few.observed('1005:1005:');
    assert.equal(watch.keep({ snapshot: '1003:1004:1003', thisMonth: MONTH, groups }), false);
    // A statement begun after the prune: its snapshot sees 1003.
    const later = few.watch('k', 'issuer', [7])!;
    assert.equal(later.keep({ snapshot: '1005:1005:', thisMonth: MONTH, groups }), true);
  });

  it('are not kept from a snapshot older than the stream, nor across streams', () => {
    // A transaction below the anchor may have committed before the stream began: never delivered here.
    assert.equal(keptFor('999:1010:999', { anchor: '1000' }).keep(), false);

    const { few, keep } = keptFor('1005:1010:');
    assert.equal(keep(), true);
    const held = few.held('k')!;
    few.end();
    assert.equal(few.held('k'), undefined);
    assert.equal(few.answer(held, NOW), undefined);
    few.begin('2000');
    assert.equal(served(few), undefined, 'dropped with the stream');
    // Kept again in the new stream: an answer held in the old one is still not served.
    assert.equal(few.watch('k', 'issuer', [7])!.keep({ snapshot: '2001:2001:', thisMonth: MONTH, groups }), true);
    assert.equal(few.answer(held, { ...NOW, snapshot: '2100:2100:' }), undefined);
    assert.deepEqual(served(few, { ...NOW, snapshot: '2100:2100:' }), groups);

    // A statement that began in the stream before: not kept in this one.
    const { few: other, watch } = keptFor('1005:1010:');
    other.end();
    other.begin('1001');
    assert.equal(watch.keep({ snapshot: '1005:1010:', thisMonth: MONTH, groups }), false);
  });

  it('serve only the answer held before the moment, and none from a snapshot 2^30 xids before it', () => {
    const { few, keep } = keptFor('1005:1010:');
    assert.equal(keep(), true);
    // Held by a query, then dropped by a commit, then kept again by a statement begun later: that
    // answer may see commits after the first query's moment.
    const held = few.held('k')!;
    few.add([tx(1010, insert(8, 7, 8))]);
    assert.equal(few.holds(held), false, 'dropped by the commit');
    assert.equal(few.watch('k', 'issuer', [7])!.keep({ snapshot: '1011:1011:', thisMonth: MONTH, groups }), true);
    assert.equal(few.answer(held, NOW), undefined);
    assert.deepEqual(served(few), groups);
    // A commit 2^31 xids on would read as one the snapshot saw: past 2^30 the answer goes.
    assert.equal(served(few, { ...NOW, snapshot: `${1011 + 2 ** 30 + 1}:${1011 + 2 ** 30 + 1}:` }), undefined);
    assert.equal(few.size(), 0);
  });

  it('drops everything once too many commits wait for a snapshot to see them', () => {
    const { few, keep } = keptFor('1005:1010:');
    assert.equal(keep(), true);
    // Each seen by the answer (below its xmin), listed until a query's snapshot prunes them.
    for (let i = 0; i <= 100_000; i++) few.add([tx(1001, insert(10 + i, 8, 9))]);
    assert.equal(served(few), undefined);
  });
});
