import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { createDuck, type Duck, type DuckSession } from '../sources/duckdb/duckdb.js';
import { createWindowTables } from '../sources/lake/windowTables.js';

/**
 * The held tables' budget never drops a table a query may still read: at 10,000,000 invoices a
 * 12-month segmentStats builds a table per month's file, and making room for the twelfth dropped
 * the first one before the query read it (DuckDB: "Table with name segment_invoices_12 does not exist").
 */
describe('window tables held in DuckDB', () => {
  let dir: string;
  let duck: Duck;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'ig-window-tables-'));
    duck = await createDuck({ memoryLimit: '256MB', threads: 1, tempDir: path.join(dir, 'duck') }, pino({ level: 'silent' }));
  });
  after(async () => {
    duck?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A table of `rows` rows with value `value`, under the set's budget. */
  const take = (tables: ReturnType<typeof createWindowTables>, s: DuckSession, id: string, rows: number, value: number) =>
    tables.table(s, id, rows, (name) => `CREATE TABLE ${name} AS SELECT ${value} AS invoices FROM range(${rows}) WHERE len($1) >= 0`, async () => []);

  it('keeps the tables a query took within the time limit, and reports no room instead', async () => {
    const tables = createWindowTables(10, 60_000, 'held_busy');
    await duck.session(
      async (s) => {
        const first = await take(tables, s, 'january', 6, 1);
        assert.ok(first);
        // The second does not fit beside the first, which this query is about to read.
        assert.equal(await take(tables, s, 'february', 6, 2), undefined);
        const [row] = await s.all<{ invoices: string }>(`SELECT sum(invoices)::VARCHAR AS invoices FROM ${first.name}`);
        assert.equal(row!.invoices, '6');
        assert.equal(first.invoices, '6');
      },
      { timeoutMs: 10_000, label: 'test' },
    );
  });

  it('drops the least recently used table once it has not been handed out for the time limit', async () => {
    const tables = createWindowTables(10, 0, 'held_idle');
    await duck.session(
      async (s) => {
        const first = await take(tables, s, 'january', 6, 1);
        const second = await take(tables, s, 'february', 6, 2);
        assert.ok(first && second);
        await assert.rejects(s.all(`SELECT * FROM ${first.name}`), /does not exist/);
        assert.equal(second.invoices, '12');
      },
      { timeoutMs: 10_000, label: 'test' },
    );
  });
});
