import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { suiteDuck } from './fixtures/duck.js';
import { compareKeys, createPageBounds, type GroupKey } from '../sources/lake/pageBounds.js';

/**
 * The bound a page in customer order takes from a held table's marks: at least `limit` of the
 * table's groups lie after the cursor and up to it, for cursors at, between and past the keys.
 */
describe('page bounds along a held table', () => {
  const duck = suiteDuck('page-bounds');

  it('marks a table once, with a stride from its size, and keeps the most recently used tables\u2019 marks', async () => {
    const bounds = createPageBounds({ tables: 2 });
    await duck.session(async (s) => {
      await s.run(`CREATE TABLE held_sized AS SELECT i AS customer_id, '' AS month FROM range(1, 1001) t(i)`);
      const table = { name: 'held_sized', rows: 1000 };
      // Concurrent first pages share one pass.
      await Promise.all([bounds.mark(s, 'a', table), bounds.mark(s, 'a', table)]);
      assert.equal(bounds.groups('a'), 1000);
      // 1,000 groups: the smallest stride, 16; the first page of 20 needs the second mark.
      assert.deepEqual(bounds.bound('a', null, 16), { customer: 16, month: '' });
      assert.deepEqual(bounds.bound('a', null, 20), { customer: 32, month: '' });
      // Past customer 500 the marks only say that fewer than 512 groups come before it: 20 more need rank 531, the mark at 544.
      assert.deepEqual(bounds.bound('a', { customer: 500, month: '' }, 20), { customer: 544, month: '' });
      assert.equal(bounds.bound('a', { customer: 990, month: '' }, 20), undefined, 'past the last mark');
      await bounds.mark(s, 'b', table);
      bounds.bound('a', null, 1);
      await bounds.mark(s, 'c', table);
      assert.ok(bounds.groups('a') !== undefined && bounds.groups('c') !== undefined, 'the used and the newest kept');
      assert.equal(bounds.groups('b'), undefined, 'the least recently used dropped');
      // A failed pass leaves the table unmarked, and the query goes on.
      await bounds.mark(s, 'gone', { name: 'no_such_table', rows: 10 });
      assert.equal(bounds.groups('gone'), undefined);
    });
  });

  for (const granularity of ['MONTH', 'TOTAL'] as const) {
    it(`bounds at least limit groups past any cursor, or none near the end (${granularity})`, async () => {
      const stride = 16;
      const bounds = createPageBounds({ stride });
      // Every third customer, some months missing: keys neither dense nor evenly spaced. Inserted
      // out of order: the marks follow the keys' order, not the table's.
      const monthOf = granularity === 'MONTH' ? `'2026-' || lpad(((i * 7) % 12 + 1)::VARCHAR, 2, '0')` : `''`;
      const keys = await duck.session(async (s) => {
        await s.run(`CREATE TABLE held_${granularity} AS SELECT DISTINCT (i % 400) * 3 AS customer_id, ${monthOf} AS month FROM range(2000) t(i) ORDER BY random()`);
        const [{ rows }] = (await s.all<{ rows: number }>(`SELECT count(*)::INTEGER AS rows FROM held_${granularity}`)) as [{ rows: number }];
        await bounds.mark(s, 'window', { name: `held_${granularity}`, rows });
        return s.all<{ customer: number; month: string }>(`SELECT customer_id::INTEGER AS customer, month FROM held_${granularity} ORDER BY 1, 2`);
      });
      assert.ok(keys.length > 300, `${keys.length} keys`);
      assert.equal(bounds.bound('another window', null, 5), undefined, 'nothing marked for another table');
      const between = (k: GroupKey): GroupKey => ({ customer: k.customer + 1, month: k.month });
      const cursors: (GroupKey | null)[] = [null, { customer: -1, month: '' }, ...keys.filter((_, i) => i % 7 === 0), ...keys.filter((_, i) => i % 11 === 0).map(between)];
      let bounded = 0;
      for (const cursor of cursors) {
        for (const limit of [1, 2, stride - 1, stride, stride + 1, 3 * stride + 5]) {
          const bound = bounds.bound('window', cursor, limit);
          const past = keys.filter((k) => cursor === null || compareKeys(k, cursor) > 0);
          if (bound === undefined) {
            // Only near the end: at most two strides and the limit remain after the cursor.
            assert.ok(past.length < 2 * stride + limit, `no bound with ${past.length} groups past ${JSON.stringify(cursor)}, limit ${limit}`);
            continue;
          }
          bounded++;
          const upTo = past.filter((k) => compareKeys(k, bound) <= 0).length;
          assert.ok(upTo >= limit, `${upTo} groups past ${JSON.stringify(cursor)} up to ${JSON.stringify(bound)}, limit ${limit}`);
          assert.ok(upTo < limit + 2 * stride, `the bound is near: ${upTo} groups for limit ${limit}`);
        }
      }
      assert.ok(bounded > cursors.length * 4, `${bounded} bounds`);
    });
  }
});
