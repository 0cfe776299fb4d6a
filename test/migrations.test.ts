import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { memoryLogger } from './fixtures/gateway.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { MIGRATIONS_DIR, migrate, readMigrations, splitStatements } from '../sources/postgres/migrate.js';

const skip = await missingServices('postgres');

describe('migrations', { skip }, () => {
  const { logger } = memoryLogger();
  const databases: TestDatabase[] = [];
  const pools: Database[] = [];

  async function fresh(label: string): Promise<{ db: Database; sql: (text: string) => Promise<pg.QueryResult> }> {
    const database = await createTestDatabase(`migrations_${label}`);
    databases.push(database);
    const db = createDatabase({ url: database.url, poolMax: 4, statementTimeoutMs: 0 }, logger);
    pools.push(db);
    return { db, sql: (text) => db.pool.query(text) };
  }

  const tempDirs: string[] = [];
  after(async () => {
    await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
    await Promise.all(pools.map((p) => p.close()));
    await Promise.all(databases.map((d) => d.drop()));
  });

  it('creates the tables and indexes on an empty database, then does nothing the second time', async () => {
    const { db, sql } = await fresh('empty');
    const files = await readMigrations();
    assert.equal(await migrate(db, logger), files.length);
    assert.equal(await migrate(db, logger), 0);
    const columns = await sql(`SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
      WHERE table_name IN ('customers', 'invoices') ORDER BY table_name, ordinal_position`);
    assert.deepEqual(
      columns.rows.map((c) => `${c.table_name}.${c.column_name} ${c.data_type} ${c.is_nullable}`),
      [
        'customers.customer_id integer NO',
        'customers.customer_name text NO',
        'invoices.invoice_id bigint NO',
        'invoices.issue_date timestamp with time zone NO',
        'invoices.issuer_id integer NO',
        'invoices.receiver_id integer NO',
        'invoices.amount_usd numeric NO',
      ],
    );
    const indexes = await sql(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'invoices' ORDER BY indexname`);
    const defs = indexes.rows.map((r) => r.indexdef as string);
    assert.ok(defs.some((d) => /\(issuer_id, issue_date/.test(d)), defs.join('\n'));
    assert.ok(defs.some((d) => /\(receiver_id, issue_date/.test(d)), defs.join('\n'));
    const invalid = await sql(`SELECT count(*)::int AS n FROM pg_index WHERE NOT indisvalid`);
    assert.equal(invalid.rows[0].n, 0);
  });

  it('brings back a gateway index that was dropped, at the next start', async () => {
    const { db, sql } = await fresh('restore_index');
    await migrate(db, logger);
    await sql('DROP INDEX invoices_gw_issuer_date_id_idx');
    await migrate(db, logger);
    const { rows } = await sql(`SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'invoices_gw_issuer_date_id_idx'`);
    assert.equal(rows[0].n, 1);
  });

  it('is safe when several gateways migrate the same database at once', async () => {
    const { db, sql } = await fresh('concurrent');
    const others = [0, 1].map(() => {
      const extra = createDatabase({ url: (db.pool.options as { connectionString: string }).connectionString, poolMax: 2, statementTimeoutMs: 0 }, logger);
      pools.push(extra);
      return extra;
    });
    const applied = await Promise.all([db, ...others].map((d) => migrate(d, logger)));
    assert.equal(applied.reduce((a, b) => a + b, 0), (await readMigrations()).length);
    const rows = await sql('SELECT count(*)::int AS n FROM gateway_schema_migrations');
    assert.equal(rows.rows[0].n, (await readMigrations()).length);
  });

  it("accepts the user's existing tables and rows as they are", async () => {
    const { db, sql } = await fresh('existing');
    await sql(`CREATE TABLE customers (customer_id serial PRIMARY KEY, customer_name text NOT NULL)`);
    await sql(`CREATE TABLE invoices (invoice_id bigserial PRIMARY KEY, issue_date timestamptz NOT NULL DEFAULT now(),
      issuer_id int NOT NULL REFERENCES customers, receiver_id int NOT NULL REFERENCES customers, amount_usd numeric(14,2) NOT NULL)`);
    await sql(`INSERT INTO customers (customer_name) VALUES ('A'), ('B')`);
    await sql(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (1, 2, 999.90)`);
    await migrate(db, logger);
    const rows = await sql(`SELECT amount_usd::text FROM invoices`);
    assert.deepEqual(rows.rows, [{ amount_usd: '999.90' }]);
    const indexes = await sql(`SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'invoices'`);
    assert.equal(indexes.rows[0].n, 4, 'the primary key, two (party, issue_date) indexes and the issue_date BRIN');
  });

  it("builds its own indexes beside a user's index of the same columns", async () => {
    const { db, sql } = await fresh('user_index');
    await sql(`CREATE TABLE customers (customer_id serial PRIMARY KEY, customer_name text NOT NULL)`);
    await sql(`CREATE TABLE invoices (invoice_id bigserial PRIMARY KEY, issue_date timestamptz NOT NULL DEFAULT now(),
      issuer_id int NOT NULL REFERENCES customers, receiver_id int NOT NULL REFERENCES customers, amount_usd numeric(14,2) NOT NULL)`);
    await sql(`CREATE INDEX ON invoices (issuer_id, issue_date)`);
    await migrate(db, logger);
    const { rows } = await sql(`SELECT indexname FROM pg_indexes WHERE tablename = 'invoices' ORDER BY 1`);
    assert.deepEqual(rows.map((r) => r.indexname), [
      'invoices_gw_issue_date_brin',
      'invoices_gw_issuer_date_id_idx',
      'invoices_gw_receiver_date_id_idx',
      'invoices_issuer_id_issue_date_idx',
      'invoices_pkey',
    ]);
  });

  it('treats CRLF line endings as the same migration, and refuses two files with one version', async () => {
    const { db } = await fresh('crlf');
    await migrate(db, logger);
    const dir = await mkdtemp(path.join(tmpdir(), 'ig-migrations-'));
    tempDirs.push(dir);
    for (const file of await readMigrations()) await writeFile(path.join(dir, file.name), file.sql.replace(/\n/g, '\r\n'));
    assert.equal(await migrate(db, logger, pathToFileURL(dir + '/')), 0);
    await writeFile(path.join(dir, '001_duplicate.sql'), 'SELECT 1;');
    await assert.rejects(readMigrations(pathToFileURL(dir + '/')), /share version 1/);
  });

  it('refuses an existing invoices table that lacks a column the gateway reads', async () => {
    const { db, sql } = await fresh('lacking');
    await sql(`CREATE TABLE customers (customer_id serial PRIMARY KEY, customer_name text NOT NULL)`);
    await sql(`CREATE TABLE invoices (invoice_id bigserial PRIMARY KEY, issuer_id int NOT NULL, receiver_id int NOT NULL, amount numeric)`);
    await assert.rejects(migrate(db, logger), /invoices table lacks column\(s\) issue_date, amount_usd/);
  });

  it('refuses to run when an applied migration was edited', async () => {
    const { db } = await fresh('edited');
    await migrate(db, logger);
    const dir = await mkdtemp(path.join(tmpdir(), 'ig-migrations-'));
    tempDirs.push(dir);
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const first = (await readMigrations())[0]!.name;
    const file = path.join(dir, first);
    await writeFile(file, (await readFile(file, 'utf8')) + '\n-- edited\n');
    await assert.rejects(migrate(db, logger, pathToFileURL(dir + '/')), new RegExp(`${first} was changed after it was applied`));
  });

  it('splits no-transaction files into statements, keeping dollar-quoted bodies whole', () => {
    const statements = splitStatements(`-- migrate:no-transaction
DO $$
BEGIN
  PERFORM 1;
END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS a ON t (x);
CREATE INDEX CONCURRENTLY IF NOT EXISTS b ON t (y);
`);
    assert.equal(statements.length, 3);
    assert.match(statements[0]!, /^DO \$\$[\s\S]*END \$\$;$/);
  });
});
