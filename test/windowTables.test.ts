import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DuckSession } from '../sources/duckdb/duckdb.js';
import { suiteDuck } from './fixtures/duck.js';
import { createWindowTables, type TakeTable } from '../sources/lake/windowTables.js';

/**
 * The held tables' budget never drops a table a running query may still read: at 10,000,000
 * invoices a 12-month segmentStats builds a table per month's file, and making room for a later
 * one dropped an earlier one before the query read it (DuckDB: "Table with name
 * segment_invoices_12 does not exist").
 */
describe('window tables held in DuckDB', () => {
  const { session } = suiteDuck('window-tables');

  /** A table of `rows` rows, each counting `value` invoices. */
  const take = (t: TakeTable, s: DuckSession, id: string, rows: number, value: number) =>
    t(s, id, rows, (name) => `CREATE TABLE ${name} AS SELECT ${value} AS invoices FROM range(${rows}) WHERE len($1) >= 0`, async () => []);

  it('keeps the tables a running query took, and reports no room instead', async () => {
    const tables = createWindowTables(10, 'held_busy');
    await session((s) =>
      tables.using(async (t) => {
        const first = await take(t, s, 'january', 6, 1);
        assert.ok(first);
        // The second does not fit beside the first, which this query is about to read.
        assert.equal(await take(t, s, 'february', 6, 2), undefined);
        // Nor does another query's, while this one runs.
        assert.equal(await tables.using((other) => take(other, s, 'march', 6, 3)), undefined);
        const [row] = await s.all<{ invoices: string }>(`SELECT sum(invoices)::VARCHAR AS invoices FROM ${first.name}`);
        assert.equal(row!.invoices, '6');
        assert.equal(first.invoices, '6');
      }),
    );
  });

  it('drops the least recently used table no running query holds', async () => {
    const tables = createWindowTables(10, 'held_idle');
    await session(async (s) => {
      const first = await tables.using((t) => take(t, s, 'january', 6, 1));
      const second = await tables.using((t) => take(t, s, 'february', 6, 2));
      assert.ok(first && second);
      await assert.rejects(s.all(`SELECT * FROM ${first.name}`), /does not exist/);
      assert.equal(second.invoices, '12');
      // Held again for the same id: the same table, not a new one.
      assert.equal((await tables.using((t) => take(t, s, 'february', 6, 2)))?.name, second.name);
    });
  });
});
