import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { ADMIN_DATABASE_URL, createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { postGraphQL, startTestGateway } from './fixtures/gateway.js';
import { freePort } from './fixtures/network.js';
import { spawnGateway } from './fixtures/process.js';
import { unreachableForPostgresUser } from '../sources/postgres/embedded.js';
import { CreateInvoiceDocument, InvoiceByIdDocument } from './generated/graphql.js';

describe('the gateway process', () => {
  it('stops on a bad setting with one line naming it, before listening', async () => {
    const gateway = spawnGateway({ PORT: 'eighty', DATABASE_URL: 'postgres://u:topsecret@nowhere/x' });
    assert.equal(await gateway.exited, 1);
    assert.equal(gateway.output(), 'invalid configuration: PORT must be a whole number\n');
  });
});

const skip = await missingServices('postgres');

describe('start-up against a configured Postgres', { skip }, () => {
  it('stops with one line when DATABASE_URL names a database that does not exist', async () => {
    const url = new URL(ADMIN_DATABASE_URL);
    url.pathname = '/ig_no_such_database';
    const gateway = spawnGateway({ DATABASE_URL: url.toString(), PORT: String(await freePort()) });
    assert.equal(await gateway.exited, 1);
    assert.match(gateway.output(), /gateway failed to start: database "ig_no_such_database" does not exist\n$/);
  });
});

describe('graceful shutdown', { skip }, () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase('shutdown');
    // Migrate and seed through the fixture, then let the real process serve the database.
    const setup = await startTestGateway({ databaseUrl: db.url, seed: { customers: 3, invoices: 20, months: 1, seed: 4 } });
    await setup.stop();
  });

  after(async () => {
    await db?.drop();
  });

  it('on SIGTERM finishes in-flight requests, refuses new ones, closes pools and exits 0', async () => {
    const port = await freePort();
    const gateway = spawnGateway({ DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production' });
    const locker = new pg.Client({ connectionString: db.url });
    try {
      await gateway.waitFor(/gateway listening/);
      const url = `http://127.0.0.1:${port}/graphql`;
      await locker.connect();
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE');
      const inFlight = postGraphQL(url, InvoiceByIdDocument, { id: '7' });
      await new Promise((r) => setTimeout(r, 300));
      gateway.child.kill('SIGTERM');
      await gateway.waitFor(/draining in-flight requests/);
      await assert.rejects(fetch(url, { method: 'POST' }), 'a new connection is refused while draining');
      await locker.query('ROLLBACK');

      const answered = await inFlight.catch((err: Error) => assert.fail(`${err.message} ${String(err.cause)}\n${gateway.output()}`));
      assert.equal(answered.errors, undefined);
      assert.equal(answered.data!.invoice!.id, '7');
      assert.equal(await gateway.exited, 0);
      // Backends leave pg_stat_activity a moment after their client disconnects.
      let open = -1;
      for (let i = 0; i < 40 && open !== 0; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 50));
        const { rows } = await locker.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'invoice-gateway'`,
        );
        open = rows[0].n;
      }
      assert.equal(open, 0, 'the pool was closed');
    } finally {
      gateway.child.kill('SIGKILL');
      await locker.end().catch(() => undefined);
    }
  });
});

// As root the embedded Postgres runs as the postgres user, which must reach node_modules.
const embeddedBlocked = process.getuid?.() === 0 ? unreachableForPostgresUser(tmpdir()) : undefined;
if (embeddedBlocked && process.env.REQUIRE_SERVICES === '1') console.warn(`embedded Postgres tests skipped: the postgres user cannot enter ${embeddedBlocked}`);

describe('npm start on embedded defaults', { skip: embeddedBlocked ? `the postgres user cannot enter ${embeddedBlocked}` : false }, () => {
  let dataDir: string;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'ig-embedded-'));
    // One test uses a DATA_DIR below this one, which the postgres user must be able to traverse.
    await chmod(dataDir, 0o755);
  });

  after(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('stops the embedded Postgres it started when a signal arrives during start-up', async () => {
    const env = { DATA_DIR: path.join(dataDir, 'interrupted'), EMBEDDED_PG_PORT: String(await freePort()), PORT: String(await freePort()), HOST: '127.0.0.1' };
    const gateway = spawnGateway(env);
    try {
      await gateway.waitFor(/embedded Postgres started/, 120_000);
      gateway.child.kill('SIGTERM');
      assert.equal(await gateway.exited, 0);
      const probe = new pg.Client({ host: '127.0.0.1', port: Number(env.EMBEDDED_PG_PORT), user: 'postgres', password: 'gateway', database: 'postgres' });
      await assert.rejects(probe.connect(), 'the embedded Postgres is stopped');
    } finally {
      // SIGTERM, not SIGKILL: the gateway must stop its Postgres before the data is removed.
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
  });

  it('starts embedded Postgres, seeds demo data once, and reuses it on the next start', async () => {
    const env = async () => ({ DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()), PORT: String(await freePort()), HOST: '127.0.0.1' });

    const firstEnv = await env();
    const first = spawnGateway(firstEnv);
    let createdId: string;
    try {
      await first.waitFor(/gateway listening/, 120_000);
      assert.match(first.output(), /seeding demo data/);
      const url1 = `http://127.0.0.1:${firstEnv.PORT}/graphql`;
      const last = await postGraphQL(url1, InvoiceByIdDocument, { id: '100000' });
      assert.equal(last.data?.invoice?.id, '100000', 'the demo data has 100,000 invoices');
      const created = await postGraphQL(url1, CreateInvoiceDocument, { input: { issuerId: '1', receiverId: '2', amountUsd: '1.23' } });
      createdId = created.data!.createInvoice.id;
    } finally {
      // SIGTERM even on failure: the gateway stops its embedded Postgres before the data is removed.
      first.child.kill('SIGTERM');
    }
    assert.equal(await first.exited, 0);

    const secondEnv = await env();
    const second = spawnGateway(secondEnv);
    try {
      await second.waitFor(/gateway listening/, 120_000);
      assert.doesNotMatch(second.output(), /seeding demo data|initialising embedded Postgres/);
      const kept = await postGraphQL(`http://127.0.0.1:${secondEnv.PORT}/graphql`, InvoiceByIdDocument, { id: createdId });
      assert.equal(kept.data?.invoice?.amountUsd, '1.23');
    } finally {
      second.child.kill('SIGTERM');
    }
    assert.equal(await second.exited, 0);
  });
});
