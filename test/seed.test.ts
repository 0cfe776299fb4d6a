import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { tmpdir } from 'node:os';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTcpProxy } from './fixtures/network.js';
import { spawnGateway } from './fixtures/process.js';
import { memoryLogger } from './fixtures/gateway.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { migrate } from '../sources/postgres/migrate.js';
import { seedDatabase, type SeedOptions } from '../sources/postgres/seeder.js';

const skip = await missingServices('postgres');
const SEED_COMMAND = fileURLToPath(new URL('../server/commands/seed.js', import.meta.url));

describe('npm run seed', { skip }, () => {
  const { logger } = memoryLogger();
  const opened: { database: TestDatabase; db: Database }[] = [];

  async function seeded(label: string, options: SeedOptions): Promise<Database> {
    const database = await createTestDatabase(`seed_${label}`);
    const db = createDatabase({ url: database.url, poolMax: 3, statementTimeoutMs: 0 }, logger);
    opened.push({ database, db });
    await migrate(db, logger);
    await seedDatabase(db, options, logger);
    return db;
  }

  after(async () => {
    for (const { db, database } of opened) {
      await db.close();
      await database.drop();
    }
  });

  // Dates end at the moment of seeding, so two runs differ by the time between them; their order
  // (ids rise with dates, ties aside) and everything else must be identical.
  const fingerprint = async (db: Database) =>
    (
      await db.pool.query(`SELECT md5(string_agg(concat_ws(',', invoice_id, issuer_id, receiver_id, amount_usd), ';' ORDER BY invoice_id))
        || md5(string_agg(invoice_id::text, ';' ORDER BY issue_date, invoice_id))
        || md5((SELECT string_agg(customer_name, ';' ORDER BY customer_id) FROM customers)) AS f FROM invoices`)
    ).rows[0].f as string;

  it('loads the same data for the same seed, and other data for another seed', async () => {
    // 60,000 rows: two chunks, so chunk boundaries are covered.
    const options = { customers: 40, invoices: 60_000, months: 6, seed: 99 };
    const [a, b, c] = await Promise.all([seeded('a', options), seeded('b', options), seeded('c', { ...options, seed: 100 })]);
    assert.equal(await fingerprint(a), await fingerprint(b));
    assert.notEqual(await fingerprint(a), await fingerprint(c));
  });

  it('makes realistic data: skewed parties, positive log-normal amounts, dates in the last K months, growing', async () => {
    const db = await seeded('shape', { customers: 100, invoices: 20_000, months: 4, seed: 5 });
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n,
        count(*) FILTER (WHERE issuer_id = receiver_id)::int AS self,
        min(amount_usd)::float AS min_amount,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY amount_usd) AS median,
        avg(amount_usd)::float AS mean,
        min(issue_date) >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '3 months' AS after_start,
        max(issue_date) <= now() AS before_now,
        count(DISTINCT to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM'))::int AS months,
        (SELECT count(*) FROM customers)::int AS customers
      FROM invoices`);
    const s = rows[0];
    assert.equal(s.n, 20_000);
    assert.equal(s.customers, 100);
    assert.equal(s.self, 0, 'nobody invoices themselves');
    assert.ok(s.min_amount > 0);
    assert.ok(s.median > 300 && s.median < 650, `median ${s.median}`);
    assert.ok(s.mean > s.median, 'log-normal: mean above median');
    assert.ok(s.after_start && s.before_now, 'dates within the last 4 months');
    assert.equal(s.months, 4);
    const top = await db.pool.query(`SELECT sum(n)::float / 20000 AS share FROM (SELECT count(*) AS n FROM invoices GROUP BY issuer_id ORDER BY n DESC LIMIT 10) t`);
    assert.ok(top.rows[0].share > 0.2, `top 10% of issuers have ${top.rows[0].share} of invoices`);
    const growth = await db.pool.query(`SELECT count(*) FILTER (WHERE issue_date > now() - interval '30 days')::int AS recent,
      count(*) FILTER (WHERE issue_date < (SELECT min(issue_date) FROM invoices) + interval '30 days')::int AS oldest FROM invoices`);
    assert.ok(growth.rows[0].recent > growth.rows[0].oldest, 'more invoices recently than at the start');
  });

  it('rebuilds the indexes and moves the id sequence past the loaded rows', async () => {
    const db = await seeded('indexes', { customers: 10, invoices: 3_000, months: 2, seed: 1, rebuildIndexes: true });
    const indexes = await db.pool.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'invoices' ORDER BY 1`);
    assert.deepEqual(indexes.rows.map((r) => r.indexname), ['invoices_gw_issue_date_brin', 'invoices_gw_issuer_date_id_idx', 'invoices_gw_receiver_date_id_idx', 'invoices_pkey']);
    const inserted = await db.pool.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (1, 2, 1) RETURNING invoice_id::int AS id`);
    assert.equal(inserted.rows[0].id, 3_001);
  });

  it('refuses tables that hold rows unless asked to reset them', async () => {
    const db = await seeded('refuse', { customers: 5, invoices: 50, months: 1, seed: 1 });
    await assert.rejects(seedDatabase(db, { customers: 5, invoices: 50, months: 1, seed: 1 }, logger), /already hold rows.*--reset/);
    await seedDatabase(db, { customers: 6, invoices: 60, months: 1, seed: 1, reset: true }, logger);
    const { rows } = await db.pool.query(`SELECT (SELECT count(*) FROM customers)::int AS c, (SELECT count(*) FROM invoices)::int AS i`);
    assert.deepEqual(rows[0], { c: 6, i: 60 });
  });

  it('npm run seed: loads, skips with --if-empty, refuses a second load, names a bad flag', async () => {
    const database = await createTestDatabase('seed_cli');
    opened.push({ database, db: createDatabase({ url: database.url, poolMax: 1, statementTimeoutMs: 0 }, logger) });
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [SEED_COMMAND, ...args], { cwd: tmpdir(), env: { PATH: process.env.PATH ?? '', DATABASE_URL: database.url }, encoding: 'utf8' });
    const first = run('--customers', '4', '--invoices', '25', '--months', '2');
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /seeded 4 customers and 25 invoices/);
    const skipped = run('--customers', '4', '--invoices', '25', '--if-empty');
    assert.equal(skipped.status, 0, skipped.stderr);
    assert.match(skipped.stdout, /nothing seeded/);
    const refused = run('--customers', '4', '--invoices', '25');
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /already hold rows/);
    const bad = run('--customers', 'many', '--invoices', '25');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /--customers must be a whole number/);
  });

  it('npm run seed waits for a Postgres that is not up yet (docker compose) instead of failing at once', async () => {
    const database = await createTestDatabase('seed_wait');
    opened.push({ database, db: createDatabase({ url: database.url, poolMax: 1, statementTimeoutMs: 0 }, logger) });
    const target = new URL(database.url);
    const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    await proxy.cut();
    target.port = String(proxy.port);
    const seed = spawnGateway({ DATABASE_URL: target.toString() }, { command: [process.execPath, SEED_COMMAND, '--customers', '3', '--invoices', '10'] });
    try {
      await seed.waitFor(/Postgres not reachable yet; retrying/, 20_000);
      await proxy.restore();
      assert.equal(await seed.exited, 0, seed.output());
      assert.match(seed.output(), /seeded 3 customers and 10 invoices/);
    } finally {
      seed.child.kill('SIGKILL');
      await proxy.cut();
    }
  });
});
