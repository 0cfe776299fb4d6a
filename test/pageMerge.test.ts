import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatCents } from '../core/money.js';
import { compareKeys, type GroupKey } from '../sources/lake/pageBounds.js';
import { mergePage } from '../sources/lake/pageMerge.js';
import { seededRandom } from './fixtures/random.js';

interface Invoice {
  readonly customer: number;
  readonly month: string;
  readonly cents: bigint;
}

/** Groups of invoices by (customer, month), or by customer (month ''), in customer order, as records. */
function grouped(invoices: readonly Invoice[], byMonth: boolean, liveOrder = false): string[] {
  const groups = new Map<string, { key: GroupKey; month: string; n: number; total: bigint; min: bigint; max: bigint }>();
  for (const i of invoices) {
    const key = { customer: i.customer, month: byMonth ? i.month : '' };
    const id = `${key.customer} ${key.month}`;
    const g = groups.get(id) ?? { key, month: i.month, n: 0, total: 0n, min: i.cents, max: i.cents };
    g.n++;
    g.total += i.cents;
    if (i.cents < g.min) g.min = i.cents;
    if (i.cents > g.max) g.max = i.cents;
    groups.set(id, g);
  }
  return [...groups.values()]
    .sort((a, b) => compareKeys(a.key, b.key))
    .map((g) =>
      liveOrder
        ? `${g.month} ${g.key.customer} ${g.n} ${formatCents(g.total)} ${formatCents(g.min)} ${formatCents(g.max)}`
        : `${g.key.customer} ${g.key.month} ${g.n} ${formatCents(g.total)} ${formatCents(g.min)} ${formatCents(g.max)}`,
    );
}

const keyOf = (record: string): GroupKey => {
  const [customer, month] = record.split(' ');
  return { customer: Number(customer), month: month! };
};

/** Live records as Postgres sends them for a page: the groups of the first `limit` keys past the cursor (by TOTAL, their months). */
function partialLive(live: readonly Invoice[], byMonth: boolean, after: GroupKey | null, limit: number): string[] {
  const past = (key: GroupKey) => after === null || compareKeys(key, after) > 0;
  const keys = grouped(live, byMonth).map(keyOf).filter(past).slice(0, limit);
  const wanted = new Set(keys.map((k) => `${k.customer} ${k.month}`));
  return grouped(live, true, true).filter((r) => {
    const [month, customer] = r.split(' ');
    return wanted.has(`${customer} ${byMonth ? month : ''}`);
  });
}

/**
 * A page in customer order merged from held and live groups must be the page of every invoice,
 * held and live alike, grouped directly: the first `limit` groups past the cursor.
 */
describe('a page in customer order merged from held and live groups', () => {
  it('adds a key\u2019s held and live parts exactly, in customer order, past the cursor, for both granularities', () => {
    const next = seededRandom(7);
    const months = ['2026-01', '2026-02', '2026-03'];
    for (let round = 0; round < 300; round++) {
      const invoice = (): Invoice => ({
        customer: 1 + Math.floor(next() * 12),
        month: months[Math.floor(next() * months.length)]!,
        // Negative amounts too (credit notes): min, max and sums keep their sign.
        cents: BigInt(Math.floor(next() * 200_000) - 20_000),
      });
      const held = Array.from({ length: Math.floor(next() * 40) }, invoice);
      // Two live reads (fresh inserts above the export's highest id, listed changes): one group may come from both.
      const [above, listed] = [Array.from({ length: Math.floor(next() * 12) }, invoice), Array.from({ length: Math.floor(next() * 4) }, invoice)];
      for (const byMonth of [true, false]) {
        const all = grouped([...held, ...above, ...listed], byMonth);
        const cursorAt = Math.floor(next() * (all.length + 1)) - 1;
        const after = cursorAt < 0 ? null : keyOf(all[cursorAt]!);
        const limit = 1 + Math.floor(next() * 6);
        const past = (r: string) => after === null || compareKeys(keyOf(r), after) > 0;
        const expected = all.filter(past).slice(0, limit).join(',');
        const heldGroups = grouped(held, byMonth);
        // What the held table's page read gives: its first `limit` groups past the cursor; and, as
        // mergePage allows, with every held group before and after them too.
        for (const heldPage of [heldGroups.filter(past).slice(0, limit), heldGroups]) {
          // The whole live list (keys before the cursor included), and a page's (LiveGroups.partial).
          for (const live of [[...grouped(above, true, true), ...grouped(listed, true, true)], [...partialLive(above, byMonth, after, limit), ...partialLive(listed, byMonth, after, limit)]]) {
            assert.equal(mergePage(heldPage.join(','), live.join(','), { byMonth, after, limit }), expected, `round ${round}, ${byMonth ? 'MONTH' : 'TOTAL'}`);
          }
        }
      }
    }
  });

  it('gives an empty page when nothing follows the cursor, and prints cents as the engines print them', () => {
    assert.equal(mergePage('', '', { byMonth: true, after: null, limit: 5 }), '');
    assert.equal(mergePage('3 2026-01 1 5.00 5.00 5.00', '2026-01 2 1 1.00 1.00 1.00', { byMonth: true, after: { customer: 3, month: '2026-01' }, limit: 5 }), '');
    // By TOTAL the live months of a customer add up; written out by hand, signs and zeros included.
    assert.equal(
      mergePage('1  2 -0.50 -1.25 0.75,2  1 0.00 0.00 0.00', '2026-02 1 1 0.45 0.45 0.45,2026-03 1 2 10.00 3.00 7.00,2026-03 2 1 -0.05 -0.05 -0.05', {
        byMonth: false,
        after: null,
        limit: 2,
      }),
      '1  5 9.95 -1.25 7.00,2  2 -0.05 -0.05 0.00',
    );
  });
});
