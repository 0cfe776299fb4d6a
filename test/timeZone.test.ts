import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { missingServices } from './fixtures/services.js';
import type { TestGateway } from './fixtures/gateway.js';
import { exportSettled, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { assertExact, assertFirstPagesByCustomer, directStats } from './fixtures/statsCheck.js';
import { InvoiceStatsDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

/** West of UTC: a UTC month's first instant is the evening before in local time. */
const ZONE = 'America/New_York';

/**
 * "The last n months" are UTC calendar months whatever the server's TimeZone. The window's
 * months were computed on timestamptz values, which follow the session's zone: in New York the
 * lake read the previous month's rollups for this month, and the few-customer statement began
 * its window 5 hours early.
 */
describe(`invoiceStats on a Postgres whose sessions are in ${ZONE}`, { skip }, () => {
  let side: FeedGateway;
  let gw: TestGateway;
  let sql: pg.Pool;

  before(async () => {
    side = await startFeedGateway('time_zone', {
      seed: { customers: 20, invoices: 2_000, months: 14, seed: 6 },
      // Before the gateway connects: a database's setting applies to sessions begun after it.
      prepare: async (url) => {
        const admin = new pg.Client({ connectionString: url });
        await admin.connect();
        try {
          await admin.query(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), '${ZONE}'); END $$`);
        } finally {
          await admin.end();
        }
      },
    });
    ({ gw, sql } = side);
  });
  after(() => side?.stop());

  /**
   * Invoices an hour either side of the UTC month boundaries the windows start at: in New York's
   * time they fall in the month before, so an answer in the session's months differs.
   */
  const insertAtBoundaries = () =>
    sql.query(
      `INSERT INTO invoices (issuer_id, receiver_id, amount_usd, issue_date)
       SELECT 1 + n % 5, 6 + n % 5, 100 + n, (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => n)) AT TIME ZONE 'UTC' + make_interval(hours => h)
       FROM generate_series(0, 12) AS n, unnest(ARRAY[-1, 1]) AS h`,
    );

  it('answers UTC calendar months from the lake, with fresh invoices read live, and from Postgres', async () => {
    assert.equal((await sql.query<{ TimeZone: string }>('SHOW TimeZone')).rows[0]!.TimeZone, ZONE, 'the sessions are in the zone');
    await insertAtBoundaries();
    await exportSettled(gw);
    await assertExact(gw, sql, `exported, ${ZONE}`, [1, 3, 12], 1_000);
    await assertFirstPagesByCustomer(gw, sql, `exported, ${ZONE}`, 12, [5]);

    await insertAtBoundaries();
    await assertExact(gw, sql, `fresh invoices at the boundaries, ${ZONE}`, [1, 3, 12], 1_000);

    // A few customers: one Postgres statement with the window's bounds of its own.
    for (const months of [1, 3, 12]) {
      const res = await gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months, granularity: 'MONTH', customerIds: ['1', '2'], first: 1_000 });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      assert.equal(res.data!.invoiceStats.freshness.engine, 'POSTGRES');
      assert.deepEqual(res.data!.invoiceStats.rows, await directStats(sql, 'ISSUER', months, 'MONTH', ['1', '2']), `two issuers over ${months} months`);
    }
  });
});
