import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { InvoiceStatsDocument } from './generated/graphql.js';
import { eventually } from './fixtures/eventually.js';

const skip = await missingServices('postgres');

/**
 * Analytics obey ANALYTICS_TIMEOUT_MS in Postgres too, not the lookups' shorter
 * DATABASE_STATEMENT_TIMEOUT_MS: the pool's client-side limit (that setting plus 1 s) used to cut
 * segmentStats' Postgres step at 10M invoices whatever the analytics limit said. Caused for real
 * by a lock that holds the statement.
 */
describe('analytics time limit in Postgres', { skip }, () => {
  let db: TestDatabase;
  let gw: TestGateway;
  let sql: pg.Pool;

  before(async () => {
    db = await createTestDatabase('analytics_timeout');
    gw = await startTestGateway({
      databaseUrl: db.url,
      env: { DATABASE_STATEMENT_TIMEOUT_MS: '500', ANALYTICS_TIMEOUT_MS: '4000' },
      seed: { customers: 20, invoices: 500, months: 6, seed: 3 },
    });
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
  });
  after(async () => {
    await sql?.end();
    await gw?.stop();
    await db?.drop();
  });

  /**
   * Takes an exclusive lock on invoices, so any read of it waits, and holds it for `ms`.
   * Resolves once the lock is held: queries sent before that could run first (and did, once in CI).
   */
  const lockFor = async (ms: number, table = 'invoices'): Promise<{ released: Promise<void> }> => {
    const client = await sql.connect();
    await client.query('BEGIN');
    await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
    const released = new Promise<void>((resolve) =>
      setTimeout(() => {
        void client.query('ROLLBACK').finally(() => {
          client.release();
          resolve();
        });
      }, ms),
    );
    return { released };
  };
  const stats = () => gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 6, granularity: 'TOTAL' });
  /** A few customers: one statement on the analytics pool, outside any transaction. */
  const few = () => gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 6, granularity: 'TOTAL', customerIds: ['1', '2'] });

  it('waits past the lookups\u2019 limit (0.5 s + 1 s) while within its own', async () => {
    const { released } = await lockFor(2_500);
    const answers = await Promise.all([stats(), few()]);
    await released;
    for (const answer of answers) {
      assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
      assert.ok(answer.data!.invoiceStats.rows.length > 0);
    }
    assert.equal(answers[1].data!.invoiceStats.freshness.engine, 'POSTGRES');
  });

  it('ends at its own limit with UPSTREAM_TIMEOUT', async () => {
    const { released } = await lockFor(7_000);
    const answers = await Promise.all([stats(), few()]);
    await released;
    for (const answer of answers) assert.equal(answer.errors?.[0]?.extensions?.code, 'UPSTREAM_TIMEOUT', JSON.stringify(answer.errors));
  });

  /**
   * The limit is the query's, not each statement's: a snapshot whose window waits 3.5 s for
   * lake_state and whose groups then wait 3.5 s more for invoices, each within 4 s, used to
   * answer after 7 s. Its running statement is cancelled at the limit, not left to wait.
   */
  it('ends the whole query at its limit, however its statements share it', async () => {
    const [invoicesLock, stateLock] = await Promise.all([lockFor(7_000), lockFor(3_500, 'lake_state')]);
    const answer = await stats();
    assert.equal(answer.errors?.[0]?.extensions?.code, 'UPSTREAM_TIMEOUT', JSON.stringify(answer.errors ?? answer.data));
    // Before the lock on invoices goes (7 s), the gateway's statement no longer waits for it: the
    // cancel is sent as the answer goes out, and takes a moment.
    const waiting = async () =>
      (await sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'invoice-gateway' AND wait_event_type = 'Lock'`)).rows[0]!.n;
    await eventually(async () => (await waiting()) === 0, 'no gateway statement waiting on the lock', 2_000);
    await Promise.all([invoicesLock.released, stateLock.released]);
    const after = await stats();
    assert.equal(after.errors, undefined, JSON.stringify(after.errors));
  });
});
