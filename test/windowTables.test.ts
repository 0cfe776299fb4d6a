import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DuckSession } from '../sources/duckdb/duckdb.js';
import { suiteDuck } from './fixtures/duck.js';
import { eventually } from './fixtures/eventually.js';
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

  it('makes a table again in its own session when the query making it was interrupted first', async () => {
    const tables = createWindowTables(1_000, 'held_shared');
    let builds = 0;
    // The first build runs until its query's limit interrupts it; the second is quick.
    const build = (name: string) =>
      builds++ === 0
        ? `CREATE TABLE ${name} AS SELECT count(*) AS invoices FROM range(1000000000000) t(a) WHERE a % 7 = 3 AND len($1) >= 0`
        : `CREATE TABLE ${name} AS SELECT 1 AS invoices FROM range(5) WHERE len($1) >= 0`;
    const april = (t: TakeTable, s: DuckSession) => t(s, 'april', 5, build, async () => []);
    const first = session((s) => tables.using((t) => april(t, s)), 300);
    // Asked once the first query is making it: it waits for that table.
    await eventually(() => builds === 1, 'the first query to make the table');
    const second = session((s) => tables.using((t) => april(t, s)));
    await assert.rejects(first, (err: { code?: string }) => err.code === 'UPSTREAM_TIMEOUT');
    const table = await second;
    assert.equal(table?.invoices, '5', 'the second query answered, with the table made in its own session');
    assert.equal(builds, 2);
  });

  it('drops again, in the next session, a table whose drop was refused at its query\'s time limit', async () => {
    const tables = createWindowTables(1_000, 'held_orphan');
    const held = () => session(async (s) => (await s.all<{ n: number }>(`SELECT count(*)::INTEGER AS n FROM duckdb_tables() WHERE table_name LIKE 'held_orphan_%'`))[0]!.n);
    await session((s) => tables.using((t) => take(t, s, 'may', 5, 1)));
    assert.equal(await held(), 1);
    // Released by a query past its limit: its DROP is refused, and the table forgotten.
    // (The refused DROP is kept in the drop queue, not thrown: the release itself succeeds.)
    await session(async (s) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      await tables.release(s, () => false, 0);
    }, 50);
    assert.equal(await held(), 1, 'the refused drop left the table');
    await session((s) => tables.release(s, () => false, 0));
    assert.equal(await held(), 0, 'the next release dropped it');
  });
});
