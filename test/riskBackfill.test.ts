import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { eventually } from './fixtures/eventually.js';
import { amountZScore, DEFAULT_MODEL } from '../pipelines/riskModel.js';

const skip = await missingServices('postgres');

/**
 * The backfill scores invoices that existed before the feed, each as of its own issue date: no
 * feature may look at a later invoice. Checked against features recomputed here from the rows
 * that came before each invoice.
 */
describe('risk backfill, as of each invoice\'s own date', { skip }, () => {
  const f = useTestGateway('risk_backfill', { env: () => ({ CHANGE_FEED: '0' }) });

  /** Issuer 1's history: ordinary amounts, a first invoice to 3, then a huge one, then more. */
  const history: [days: number, receiver: number, amount: string][] = [
    ...Array.from({ length: 10 }, (_, i) => [-60 + i, 2, `${95 + i}.00`] as [number, number, string]),
    [-49, 2, '5000.00'],
    [-45, 3, '100.00'],
    [-40, 2, '1000000.00'],
    [-35, 3, '100.00'],
    [-30, 2, '100.00'],
  ];
  let ids: string[] = [];

  before(async () => {
    await f.sql.query(`INSERT INTO customers (customer_name) SELECT 'Customer ' || g FROM generate_series(1, 5) g`);
    ids = [];
    for (const [days, receiver, amount] of history) {
      const { rows } = await f.sql.query(
        `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now() + make_interval(days => $1), 1, $2, $3) RETURNING invoice_id::text AS id`,
        [days, receiver, amount],
      );
      ids.push(rows[0].id);
    }
    // Another issuer, for the global prior.
    await f.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
      SELECT now() - make_interval(days => 100 + g), 4, 5, 400 + g FROM generate_series(1, 30) g`);
    // The feed starts now: everything above existed before it.
    await f.gw.stop();
    const { startTestGateway } = await import('./fixtures/gateway.js');
    const gw = await startTestGateway({ databaseUrl: f.db.url, env: { CHANGE_FEED: '1' } });
    try {
      await eventually(async () => (await f.sql.query(`SELECT count(*)::int AS n FROM invoice_risk_scores`)).rows[0].n === history.length + 30, 'the backfill');
    } finally {
      await gw.stop();
    }
  });

  const reasonsOf = async (id: string) => {
    const { rows } = await f.sql.query(
      `SELECT m.features, s.feature_values::float8[] AS values, s.live_seq FROM invoice_risk_scores s JOIN risk_models m USING (model_version) WHERE invoice_id = $1`,
      [id],
    );
    assert.equal(rows[0].live_seq, null, 'backfilled scores are not live');
    return Object.fromEntries((rows[0].features as string[]).map((feature, i) => [feature, rows[0].values[i] as number]));
  };

  it('a first invoice between two customers is first only for the earliest of them', async () => {
    assert.equal((await reasonsOf(ids[0]!)).firstPair, 1, 'the very first invoice 1 -> 2');
    assert.equal((await reasonsOf(ids[1]!)).firstPair, 0);
    assert.equal((await reasonsOf(ids[11]!)).firstPair, 1, 'the first invoice 1 -> 3');
    assert.equal((await reasonsOf(ids[13]!)).firstPair, 0, 'the second 1 -> 3');
  });

  it('amount z-scores use only the issuer\'s earlier invoices, never the huge one that came after', async () => {
    for (const index of [10, 12, 14]) {
      const id = ids[index]!;
      const { rows: earlier } = await f.sql.query(
        `SELECT count(*)::float8 AS n, coalesce(sum(ln(x.amount_usd)), 0) AS sum, coalesce(sum(ln(x.amount_usd) ^ 2), 0) AS sq
         FROM invoices x, invoices t WHERE t.invoice_id = $1 AND x.issuer_id = t.issuer_id
           AND (x.issue_date, x.invoice_id) < (t.issue_date, t.invoice_id)
           AND x.issue_date >= date_trunc('month', t.issue_date AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '12 months'`,
        [id],
      );
      const { rows: global } = await f.sql.query(
        `SELECT coalesce(sum(g.invoices), 0)::float8 AS n, coalesce(sum(g.sum_log), 0) AS sum, coalesce(sum(g.sumsq_log), 0) AS sq
         FROM risk_global_months g, invoices t WHERE t.invoice_id = $1
           AND g.month BETWEEN (date_trunc('month', t.issue_date AT TIME ZONE 'UTC') - interval '12 months')::date
                           AND (date_trunc('month', t.issue_date AT TIME ZONE 'UTC') - interval '1 month')::date`,
        [id],
      );
      const stats = (r: { n: number; sum: number; sq: number }) => ({ n: r.n, sum: r.sum, sumSquares: r.sq });
      const expected = amountZScore(Math.log(Number(history[index]![2])), stats(earlier[0]), stats(global[0]), DEFAULT_MODEL.priorWeight);
      const stored = (await reasonsOf(id)).amountZScore!;
      assert.ok(Math.abs(stored - expected) < 1e-3, `invoice ${index}: stored z ${stored}, as of its date ${expected}`);
    }
    assert.ok((await reasonsOf(ids[10]!)).amountZScore! > 3, '5,000 after ten invoices near 100 stands out');
    assert.ok((await reasonsOf(ids[12]!)).amountZScore! > 3, 'so does 1,000,000');
  });
});
