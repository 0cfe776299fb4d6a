import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { missingServices } from './fixtures/services.js';
import type { TestGateway } from './fixtures/gateway.js';
import { exportSettled, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { eventually } from './fixtures/eventually.js';
import { directStats, type Granularity, type Order, type Role } from './fixtures/statsCheck.js';
import { InvoiceStatsDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

/** The largest amount an invoice takes (numeric(14,2)). */
const LARGEST = '999999999999.99';

/**
 * An invoice amount has at most 12 integer digits, a total of several has more. Answering one
 * used to fail the whole field ("a stored value cannot be represented as Decimal"): the Decimal
 * scalar checked answers against the input's limit.
 */
describe('invoiceStats with totals past an amount\u2019s 12 integer digits', { skip }, () => {
  let side: FeedGateway;
  let gw: TestGateway;
  let sql: pg.Pool;

  before(async () => {
    side = await startFeedGateway('large_totals', { seed: { customers: 12, invoices: 300, months: 3, seed: 4 } });
    ({ gw, sql } = side);
  });
  after(() => side?.stop());

  /** Issuer 1 to receiver 2, this month: three of the largest amount and one a cent less (an average to round). */
  const insertLargest = () =>
    sql.query(
      `INSERT INTO invoices (issuer_id, receiver_id, amount_usd, issue_date)
       SELECT 1, 2, amount, now() FROM unnest($1::numeric[]) AS amount`,
      [[LARGEST, LARGEST, LARGEST, '999999999999.98']],
    );

  /** Every shape asked equals Postgres; returns the engines that answered and the invoices read live. */
  const assertEqualToPostgres = async (label: string) => {
    const made: string[] = [];
    for (const groupBy of ['ISSUER', 'RECEIVER'] as Role[]) {
      for (const granularity of ['MONTH', 'TOTAL'] as Granularity[]) {
        for (const orderBy of ['TOTAL_DESC', 'CUSTOMER_ASC'] as Order[]) {
          for (const customerIds of [undefined, [groupBy === 'ISSUER' ? '1' : '2']]) {
            const res = await gw.request(InvoiceStatsDocument, { groupBy, months: 3, granularity, orderBy, customerIds, first: 1_000 });
            const shape = `${label}: ${groupBy} ${granularity} ${orderBy} ${customerIds ? 'one customer' : 'all'}`;
            assert.equal(res.errors, undefined, `${shape}: ${JSON.stringify(res.errors)}`);
            const stats = res.data!.invoiceStats;
            assert.deepEqual(stats.rows, await directStats(sql, groupBy, 3, granularity, customerIds, orderBy), shape);
            made.push(`${stats.freshness.engine} ${stats.freshness.liveRows > 0 ? 'live' : 'lake only'}`);
          }
        }
      }
    }
    return new Set(made);
  };

  it('answers them exactly from Postgres, from the lake with them read live, and from the lake alone', async () => {
    await exportSettled(gw);
    await insertLargest();
    // The feed records the inserts; until then the answer is Postgres's alone (also exact).
    const live = await assertEqualToPostgres('read live beside the lake');
    assert.ok(live.has('POSTGRES live'), `a few customers go to Postgres: ${[...live].join(', ')}`);

    const [{ total }] = (await sql.query<{ total: string }>(`SELECT sum(amount_usd)::text AS total FROM invoices WHERE issuer_id = 1`)).rows as [{ total: string }];
    assert.ok(total.split('.')[0]!.length > 12, `the issuer's total ${total} has more than 12 integer digits`);

    await eventually(async () => (await assertEqualToPostgres('read live beside the lake')).has('LAKE live'), 'the lake to answer with the inserts read live');
    await exportSettled(gw);
    const lake = await assertEqualToPostgres('exported');
    assert.ok(lake.has('LAKE lake only'), `the lake answers alone after the export: ${[...lake].join(', ')}`);
  });
});
