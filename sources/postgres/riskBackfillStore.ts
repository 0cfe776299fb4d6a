import type { Database, Queryable, Statement } from './database.js';
import { riskSql } from './riskSql.js';
import { scoreArrays, type FeatureRow, type ScoreToWrite } from './riskStore.js';

/**
 * The risk scorer's start: the running aggregates as of the feed's first snapshot, and the
 * backfill of the invoices that existed then, each scored as of its own issue date.
 */

/**
 * Inside the slot's snapshot: the aggregates as of the feed's start, and the backfill queue (the
 * unscored invoices the feed will never deliver). Rows committed after it come through the feed.
 */
const INITIALIZE: Statement[] = [
  {
    name: 'risk_init_reset',
    text: `TRUNCATE ${riskSql.DERIVED_TABLES}`,
  },
  {
    name: 'risk_init_months',
    text: `INSERT INTO risk_customer_months (customer_id, month, invoices, sum_log, sumsq_log)
      SELECT issuer_id, ${riskSql.month('issue_date')}, count(*), sum(${riskSql.lnAmount('amount_usd')}), sum(${riskSql.lnAmount('amount_usd')} ^ 2)
      FROM invoices GROUP BY 1, 2`,
  },
  {
    name: 'risk_init_global',
    text: `INSERT INTO risk_global_months (month, invoices, sum_log, sumsq_log)
      SELECT month, sum(invoices), sum(sum_log), sum(sumsq_log) FROM risk_customer_months GROUP BY 1`,
  },
  {
    name: 'risk_init_pairs',
    text: `INSERT INTO risk_customer_pairs (issuer_id, receiver_id, first_issue_date)
      SELECT issuer_id, receiver_id, min(issue_date) FROM invoices GROUP BY 1, 2`,
  },
  {
    name: 'risk_init_minutes',
    text: `INSERT INTO risk_issuer_minutes (issuer_id, minute, invoices)
      SELECT issuer_id, date_trunc('minute', issue_date), count(*) FROM invoices
      WHERE issue_date >= now() - ${riskSql.MINUTES_KEPT} GROUP BY 1, 2`,
  },
  {
    // Invoices scored before (a slot dropped and created again) keep their scores.
    name: 'risk_init_queue',
    text: `INSERT INTO risk_backfill_queue (issuer_id, invoice_id)
      SELECT i.issuer_id, i.invoice_id FROM invoices i
      WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = i.invoice_id)`,
  },
  {
    name: 'risk_init_queue_issuers',
    text: `INSERT INTO risk_backfill_issuers (issuer_id, invoices) SELECT issuer_id, count(*) FROM risk_backfill_queue GROUP BY 1`,
  },
];

/** The next issuers of the backfill queue, whole, up to about $1 invoices (at least one issuer). */
const NEXT_ISSUERS: Statement = {
  name: 'risk_backfill_next_issuers',
  text: `WITH per_issuer AS (
      SELECT issuer_id, invoices FROM risk_backfill_issuers ORDER BY issuer_id LIMIT 5000
    ), running AS (SELECT issuer_id, sum(invoices) OVER (ORDER BY issuer_id) - invoices AS before FROM per_issuer)
    SELECT array_agg(issuer_id ORDER BY issuer_id) AS issuers FROM running WHERE before < $1`,
};

/** The batch's issuers, for the cursor below (DECLARE takes no parameters). Local to the transaction. */
const SET_ISSUERS: Statement = {
  name: 'risk_backfill_set_issuers',
  text: `SELECT set_config('invoice_gateway.backfill_issuers', $1::int[]::text, true)`,
};

/**
 * Backfill features for whole issuers, with window functions over their full history, each
 * invoice seeing only what came before it: prior months from a per-month running window, the
 * current month's earlier invoices from a row window, the last hour from a range window.
 */
const DECLARE_FEATURES: Statement = {
  name: 'risk_backfill_declare',
  text: `DECLARE risk_backfill_features NO SCROLL CURSOR FOR WITH inv AS (
      SELECT i.invoice_id, i.issue_date, i.issuer_id, i.receiver_id, i.amount_usd, ${riskSql.lnAmount('i.amount_usd')} AS l,
        (extract(year FROM i.issue_date AT TIME ZONE 'UTC') * 12 + extract(month FROM i.issue_date AT TIME ZONE 'UTC') - 1)::int AS mi
      FROM invoices i WHERE i.issuer_id = ANY(current_setting('invoice_gateway.backfill_issuers')::int[])
    ), mon AS (
      SELECT issuer_id, mi, count(*) AS n, sum(l) AS s, sum(l * l) AS ss FROM inv GROUP BY 1, 2
    ), prior AS (
      SELECT issuer_id, mi,
        coalesce(sum(n) OVER w, 0) AS n, coalesce(sum(s) OVER w, 0) AS s, coalesce(sum(ss) OVER w, 0) AS ss,
        min(mi) OVER (PARTITION BY issuer_id ORDER BY mi RANGE BETWEEN 12 PRECEDING AND CURRENT ROW) AS first_mi
      FROM mon WINDOW w AS (PARTITION BY issuer_id ORDER BY mi RANGE BETWEEN 12 PRECEDING AND 1 PRECEDING)
    ), g AS (
      SELECT (extract(year FROM month) * 12 + extract(month FROM month) - 1)::int AS mi, invoices AS n, sum_log AS s, sumsq_log AS ss
      FROM risk_global_months
    ), gprior AS (
      SELECT mi, sum(n) OVER w AS n, sum(s) OVER w AS s, sum(ss) OVER w AS ss FROM g
      WINDOW w AS (ORDER BY mi RANGE BETWEEN 12 PRECEDING AND 1 PRECEDING)
    ), w AS (
      SELECT inv.*,
        count(*) OVER m - 1 AS mn, sum(l) OVER m - l AS ms, sum(l * l) OVER m - l * l AS mss,
        count(*) OVER hr AS last_hour,
        row_number() OVER (PARTITION BY issuer_id, receiver_id ORDER BY issue_date, invoice_id) = 1 AS first_pair
      FROM inv
      WINDOW m AS (PARTITION BY issuer_id, mi ORDER BY issue_date, invoice_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
             hr AS (PARTITION BY issuer_id ORDER BY issue_date RANGE BETWEEN interval '1 hour' PRECEDING AND CURRENT ROW)
    )
    SELECT w.invoice_id::text AS "invoiceId", w.issuer_id::text AS "issuerId", w.receiver_id::text AS "receiverId",
      w.amount_usd::text AS "amountUsd",
      (p.n + w.mn)::float8 AS "issuerN", (p.s + w.ms)::float8 AS "issuerSum", (p.ss + w.mss)::float8 AS "issuerSumSquares",
      coalesce(gp.n, 0)::float8 AS "globalN", coalesce(gp.s, 0)::float8 AS "globalSum", coalesce(gp.ss, 0)::float8 AS "globalSumSquares",
      w.first_pair AS "firstPair", w.last_hour::int AS "lastHourInvoices",
      greatest(24, extract(epoch FROM w.issue_date - make_timestamptz(p.first_mi / 12, p.first_mi % 12 + 1, 1, 0, 0, 0, 'UTC')) / 3600)::float8 AS "historyHours",
      ${riskSql.RECEIVER_PAYMENT_COLUMNS}
    FROM w
    JOIN risk_backfill_queue q ON q.issuer_id = w.issuer_id AND q.invoice_id = w.invoice_id
    JOIN prior p ON p.issuer_id = w.issuer_id AND p.mi = w.mi
    LEFT JOIN gprior gp ON gp.mi = w.mi
    ${riskSql.receiverPaymentsJoin('w.receiver_id', 'make_date(w.mi / 12, w.mi % 12 + 1, 1)')}`,
};

/** Rows at a time from the cursor: an issuer with 200,000 invoices must not be held in memory whole. */
const FETCH_ROWS = 5_000;
const FETCH: Statement = { name: 'risk_backfill_fetch', text: `FETCH ${FETCH_ROWS} FROM risk_backfill_features` };

const WRITE: Statement = {
  name: 'risk_write_backfill',
  text: `INSERT INTO invoice_risk_scores (invoice_id, issuer_id, receiver_id, score, band, feature_values, contributions, model_version)
    SELECT t.invoice_id, t.issuer_id, t.receiver_id, t.score, t.band, t.feature_values::float8[], t.contributions::float8[], $8
    FROM unnest($1::bigint[], $2::int[], $3::int[], $4::float8[], $5::text[], $6::text[], $7::text[])
      AS t(invoice_id, issuer_id, receiver_id, score, band, feature_values, contributions)
    ON CONFLICT (invoice_id) DO NOTHING`,
};

const DEQUEUE: Statement = {
  name: 'risk_backfill_dequeue',
  text: `WITH issuers AS (DELETE FROM risk_backfill_issuers WHERE issuer_id = ANY($1::int[]))
    DELETE FROM risk_backfill_queue WHERE issuer_id = ANY($1::int[])`,
};

const REMAINING: Statement = {
  name: 'risk_backfill_remaining',
  text: `SELECT coalesce(sum(invoices), 0)::float8 AS n FROM risk_backfill_issuers`,
};

export interface RiskBackfillStore {
  /** Builds the aggregates and the backfill queue, inside the feed slot's snapshot. */
  initialize(tx: Queryable): Promise<void>;
  remaining(): Promise<number>;
  /**
   * One batch: the next whole issuers (about `invoices` invoices), scored with `score` and
   * written with their queue entries removed, in one transaction. Returns how many were scored
   * (0 when the queue is empty).
   */
  batch(invoices: number, score: (rows: FeatureRow[]) => ScoreToWrite[]): Promise<number>;
}

export function createRiskBackfillStore(db: Database): RiskBackfillStore {
  return {
    async initialize(tx) {
      for (const statement of INITIALIZE) await tx.query(statement);
    },

    async remaining() {
      const [row] = await db.query<{ n: number }>(REMAINING);
      return row!.n;
    },

    async batch(invoices, score) {
      const [next] = await db.query<{ issuers: number[] | null }>(NEXT_ISSUERS, [invoices]);
      const issuers = next?.issuers ?? [];
      if (issuers.length === 0) return 0;
      const scored = await db.transaction(async (tx) => {
        await tx.query(SET_ISSUERS, [issuers]);
        await tx.query(DECLARE_FEATURES);
        let total = 0;
        for (;;) {
          const rows = await tx.query<FeatureRow>(FETCH);
          const scores = score(rows);
          if (scores.length > 0) await tx.query(WRITE, [...scoreArrays(scores), scores[0]!.modelVersion]);
          total += scores.length;
          if (rows.length < FETCH_ROWS) break;
        }
        await tx.query(DEQUEUE, [issuers]);
        return total;
      });
      // An issuer whose queued invoices were all deleted meanwhile still counts as progress.
      return Math.max(scored, 1);
    },
  };
}
