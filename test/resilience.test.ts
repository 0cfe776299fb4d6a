import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { memoryLogger, startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { createStatsStore } from '../sources/postgres/statsStore.js';
import { deadlineIn } from '../core/deadline.js';
import { startTcpProxy, type TcpProxy } from './fixtures/network.js';
import { eventually } from './fixtures/eventually.js';
import { CustomerByIdDocument, InvoiceByIdDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

describe('Postgres failures reach clients as clear, masked errors', { skip }, () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  let gw: TestGateway;
  let sql: pg.Pool;

  before(async () => {
    db = await createTestDatabase('resilience');
    const target = new URL(db.url);
    proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
    const viaProxy = new URL(db.url);
    viaProxy.port = String(proxy.port);
    viaProxy.hostname = '127.0.0.1';
    gw = await startTestGateway({
      databaseUrl: viaProxy.toString(),
      env: { DATABASE_STATEMENT_TIMEOUT_MS: '300' },
      seed: { customers: 10, invoices: 200, months: 2, seed: 5 },
    });
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
  });

  after(async () => {
    await sql?.end();
    await gw?.stop();
    await proxy?.cut();
    await db?.drop();
  });

  const readyz = async () => (await fetch(new URL('/readyz', gw.url))).status;

  it('answers SERVICE_UNAVAILABLE while Postgres is unreachable and recovers by itself', async () => {
    assert.equal((await gw.request(InvoiceByIdDocument, { id: '1' })).data!.invoice!.id, '1');
    assert.equal(await readyz(), 200);

    await proxy.cut();
    const down = await gw.request(InvoiceByIdDocument, { id: '2' });
    assert.equal(down.errors?.[0]?.extensions?.code, 'SERVICE_UNAVAILABLE');
    assert.doesNotMatch(JSON.stringify(down.errors), /ECONNREFUSED|127\.0\.0\.1|postgres:\/\/|at .*\.js/);
    assert.equal(await readyz(), 503);

    await proxy.restore();
    const up = await gw.request(InvoiceByIdDocument, { id: '2' });
    assert.equal(up.errors, undefined, JSON.stringify(up.errors));
    assert.equal(up.data!.invoice!.id, '2');
    assert.equal(await readyz(), 200);
  });

  it('an analytics snapshot whose connection is lost after its reads answers, and its connection is not pooled again', async () => {
    const { logger, logs } = memoryLogger();
    const stats = createStatsStore(gw.gateway.db, logger);
    try {
      // Read in the snapshot before the loss: the answer is settled; only its COMMIT fails.
      const answer = await stats.withSnapshot(3, async ({ window }) => {
        assert.ok(window.from, 'the snapshot read its window');
        await proxy.cut();
        return window.from;
      }, deadlineIn(30_000));
      assert.match(answer, /^\d{4}-\d{2}-01T00:00:00Z$/);
      await eventually(() => logs.some((l) => l.msg === 'an answered analytics snapshot failed to commit'), 'the failed COMMIT logged');
    } finally {
      await proxy.restore();
    }
    // The lost connection was not pooled again: the next snapshot gets a working one.
    assert.equal(await stats.withSnapshot(3, async () => 'read', deadlineIn(30_000)), 'read');
  });

  it('an analytics snapshot whose connection is lost during its reads is SERVICE_UNAVAILABLE', async () => {
    const stats = createStatsStore(gw.gateway.db, memoryLogger().logger);
    try {
      await assert.rejects(
        stats.withSnapshot(3, async (snapshot) => {
          await proxy.cut();
          return snapshot.unknownInvoices(['1']);
        }, deadlineIn(30_000)),
        (err: { code?: string }) => err.code === 'SERVICE_UNAVAILABLE',
      );
    } finally {
      await proxy.restore();
    }
    assert.equal(await stats.withSnapshot(3, async () => 'read', deadlineIn(30_000)), 'read');
  });

  it('answers UPSTREAM_TIMEOUT when a statement outlasts DATABASE_STATEMENT_TIMEOUT_MS', async () => {
    const locker = await sql.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE');
      const res = await gw.request(InvoiceByIdDocument, { id: '3' });
      assert.equal(res.errors?.[0]?.extensions?.code, 'UPSTREAM_TIMEOUT');
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
    assert.equal((await gw.request(InvoiceByIdDocument, { id: '3' })).data!.invoice!.id, '3');
  });

  it('masks unexpected errors: INTERNAL_SERVER_ERROR with an errorId that is also logged', async () => {
    await sql.query('ALTER TABLE customers RENAME COLUMN customer_name TO customer_label');
    try {
      const res = await gw.request(CustomerByIdDocument, { id: '4' });
      const error = res.errors?.[0];
      assert.equal(error?.extensions?.code, 'INTERNAL_SERVER_ERROR');
      const errorId = error?.extensions?.errorId;
      assert.match(String(errorId), /^[0-9a-f-]{36}$/);
      assert.doesNotMatch(JSON.stringify(res.errors), /customer_name|does not exist|SELECT|stacktrace/);
      const logged = gw.logs.find((l) => l.errorId === errorId);
      assert.ok(logged, 'the error id is in the log');
      assert.match(JSON.stringify(logged), /customer_name/);
    } finally {
      await sql.query('ALTER TABLE customers RENAME COLUMN customer_label TO customer_name');
    }
  });
});

describe('the EXPOSE_ERRORS dev flag', { skip }, () => {
  let db: TestDatabase;
  let gw: TestGateway;

  before(async () => {
    db = await createTestDatabase('expose_errors');
    gw = await startTestGateway({ databaseUrl: db.url, env: { EXPOSE_ERRORS: '1' }, seed: { customers: 3, invoices: 3, months: 1, seed: 1 } });
  });

  after(async () => {
    await gw?.stop();
    await db?.drop();
  });

  it('shows the original message of an unexpected error, still with an errorId', async () => {
    await gw.gateway.db.pool.query('DROP TABLE invoices');
    const res = await gw.request(InvoiceByIdDocument, { id: '1' });
    assert.equal(res.errors?.[0]?.extensions?.code, 'INTERNAL_SERVER_ERROR');
    assert.match(String(res.errors?.[0]?.extensions?.originalMessage), /relation "invoices" does not exist/);
    assert.ok(res.errors?.[0]?.extensions?.errorId);
  });
});
