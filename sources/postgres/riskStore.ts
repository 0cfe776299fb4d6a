import type { Database, Queryable, Statement } from './database.js';
import { riskSql } from './riskSql.js';

/**
 * The risk scorer's live SQL and the reads behind `riskScored`, `riskScores` and `Invoice.risk`.
 * Features are "as of" each invoice: history is the issuer's invoices in the 12 calendar months
 * (UTC) before the invoice's month plus that month up to the invoice.
 */

/** One invoice's feature inputs, as the model takes them (see pipelines/riskModel.ts). */
export interface FeatureRow {
  readonly invoiceId: string;
  readonly issuerId: string;
  readonly receiverId: string;
  readonly amountUsd: string;
  readonly issuerN: number;
  readonly issuerSum: number;
  readonly issuerSumSquares: number;
  readonly globalN: number;
  readonly globalSum: number;
  readonly globalSumSquares: number;
  readonly firstPair: boolean;
  readonly lastHourInvoices: number;
  readonly historyHours: number;
  /** The receiver's invoices that fell due in the 12 months before this invoice's month. */
  readonly receiverDueInvoices: number;
  /** Of those, the ones not settled by their due date. */
  readonly receiverLateInvoices: number;
  /** The receiver's invoices settled late in those months, and their days past due summed. */
  readonly receiverSettledLate: number;
  readonly receiverDaysLate: number;
  /** The same four over all receivers. */
  readonly allDueInvoices: number;
  readonly allLateInvoices: number;
  readonly allSettledLate: number;
  readonly allDaysLate: number;
}

/** An inserted invoice as the feed delivered it. */
export interface LiveInvoice {
  readonly invoiceId: string;
  /** ISO 8601. */
  readonly issueDate: string;
  readonly issuerId: string;
  readonly receiverId: string;
  readonly amountUsd: string;
}

export interface ScoreToWrite {
  readonly invoiceId: string;
  readonly issuerId: string;
  readonly receiverId: string;
  readonly score: number;
  readonly band: RiskScoreRecord['band'];
  readonly modelVersion: string;
  /** Largest contribution first, as the API shows them. */
  readonly reasons: readonly RiskReasonRecord[];
  /** In the order of the model's features (risk_models). */
  readonly featureValues: readonly number[];
  readonly contributions: readonly number[];
}

export interface RiskReasonRecord {
  readonly feature: string;
  readonly value: number;
  readonly contribution: number;
}

/** A stored score, as the API and subscribers see it. */
export interface RiskScoreRecord {
  readonly invoiceId: string;
  readonly issuerId: string;
  readonly receiverId: string;
  readonly score: number;
  readonly band: 'LOW' | 'MEDIUM' | 'HIGH';
  /** Every feature, largest contribution first. */
  readonly reasons: readonly RiskReasonRecord[];
  readonly modelVersion: string;
  /** ISO 8601 UTC with microseconds. */
  readonly scoredAt: string;
  /** Order of all scores (riskScores pages). */
  readonly seq: string;
  /** Position among live scores, gap-free in commit order (the riskScored cursor); null for the backfill's. */
  readonly liveSeq: string | null;
}

export interface ScoreFilter {
  readonly minScore?: number | null;
  readonly band?: string | null;
  readonly issuerId?: string | null;
  readonly receiverId?: string | null;
}

/** A row as SCORE_COLUMNS selects it, before its reasons are assembled. */
type ScoreRow = Omit<RiskScoreRecord, 'reasons'> & { features: string[]; featureValues: number[]; contributions: number[] };

const SCORE_COLUMNS = `s.invoice_id::text AS "invoiceId", s.issuer_id::text AS "issuerId", s.receiver_id::text AS "receiverId",
  s.score, s.band, s.model_version AS "modelVersion",
  (SELECT m.features FROM risk_models m WHERE m.model_version = s.model_version) AS features,
  s.feature_values AS "featureValues", s.contributions,
  to_char(s.scored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "scoredAt", s.seq::text AS seq,
  s.live_seq::text AS "liveSeq"`;

/**
 * Live invoices, as the feed delivered them (not re-read: the feed can deliver a commit a moment
 * before it is visible to other sessions). History from the running aggregates (at most 13 rows
 * an issuer), the last hour from the minute buckets plus the batch itself (or, for an invoice
 * dated over two hours back, the (issuer_id, issue_date) index), the pair from
 * risk_customer_pairs; of one batch's invoices sharing a pair only the earliest is first.
 */
const LIVE_FEATURES: Statement = {
  name: 'risk_live_features',
  text: `WITH b AS (
      SELECT t.*, ${riskSql.month('t.issue_date')} AS month
      FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::numeric[]) AS t(invoice_id, issue_date, issuer_id, receiver_id, amount_usd)
    ), global AS (
      SELECT months.month, sum(m.invoices) AS n, sum(m.sum_log) AS s, sum(m.sumsq_log) AS ss
      FROM (SELECT DISTINCT month FROM b) months
      JOIN risk_global_months m ON m.month BETWEEN (months.month - interval '12 months')::date AND (months.month - interval '1 month')::date
      GROUP BY months.month
    )
    SELECT b.invoice_id::text AS "invoiceId", b.issuer_id::text AS "issuerId", b.receiver_id::text AS "receiverId",
      b.amount_usd::text AS "amountUsd",
      coalesce(h.n, 0)::float8 AS "issuerN", coalesce(h.s, 0) AS "issuerSum", coalesce(h.ss, 0) AS "issuerSumSquares",
      coalesce(g.n, 0)::float8 AS "globalN", coalesce(g.s, 0) AS "globalSum", coalesce(g.ss, 0) AS "globalSumSquares",
      (p.first_issue_date IS NULL OR p.first_issue_date > b.issue_date)
        AND count(*) OVER (PARTITION BY b.issuer_id, b.receiver_id ORDER BY b.issue_date, b.invoice_id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) = 0 AS "firstPair",
      (hr.n + count(*) OVER (PARTITION BY b.issuer_id ORDER BY b.issue_date RANGE BETWEEN interval '1 hour' PRECEDING AND CURRENT ROW))::int
        AS "lastHourInvoices",
      greatest(24, extract(epoch FROM b.issue_date - coalesce(h.first_month, b.month)::timestamp AT TIME ZONE 'UTC') / 3600)::float8 AS "historyHours",
      ${riskSql.RECEIVER_PAYMENT_COLUMNS}
    FROM b
    LEFT JOIN global g ON g.month = b.month
    LEFT JOIN LATERAL (
      SELECT sum(m.invoices) AS n, sum(m.sum_log) AS s, sum(m.sumsq_log) AS ss, min(m.month) AS first_month
      FROM risk_customer_months m
      WHERE m.customer_id = b.issuer_id AND m.month BETWEEN (b.month - interval '12 months')::date AND b.month
    ) h ON true
    LEFT JOIN risk_customer_pairs p ON p.issuer_id = b.issuer_id AND p.receiver_id = b.receiver_id
    ${riskSql.receiverPaymentsJoin('b.receiver_id', 'b.month')}
    CROSS JOIN LATERAL (
      SELECT CASE WHEN b.issue_date >= now() - ${riskSql.MINUTES_KEPT} THEN
        (SELECT coalesce(sum(mi.invoices), 0) FROM risk_issuer_minutes mi
         WHERE mi.issuer_id = b.issuer_id AND mi.minute > b.issue_date - interval '1 hour' AND mi.minute <= b.issue_date)
      ELSE
        (SELECT count(*) FROM invoices x
         WHERE x.issuer_id = b.issuer_id AND x.issue_date > b.issue_date - interval '1 hour' AND x.issue_date <= b.issue_date
           AND x.invoice_id <> ALL($1::bigint[]))
      END AS n
    ) hr
    ORDER BY b.invoice_id`,
};

/**
 * Live scores and the aggregates they feed, in one statement, under LIVE_LOCK: live_seq continues
 * from the highest one without gaps. An invoice scored before (a replay after a crash) is left
 * out, so nothing is counted twice; only rows inserted now update the aggregates. A known pair
 * is written only when this invoice predates its first one.
 */
const WRITE_LIVE: Statement = {
  name: 'risk_write_live',
  text: `WITH incoming AS (
      SELECT t.* FROM unnest($1::bigint[], $2::int[], $3::int[], $4::float8[], $5::text[], $6::text[], $7::text[], $9::timestamptz[], $10::numeric[])
        AS t(invoice_id, issuer_id, receiver_id, score, band, feature_values, contributions, issue_date, amount_usd)
      WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = t.invoice_id)
    ), numbered AS (
      SELECT incoming.*, (SELECT coalesce(max(live_seq), 0) FROM invoice_risk_scores) + row_number() OVER (ORDER BY invoice_id) AS live_seq
      FROM incoming
    ), inserted AS (
      INSERT INTO invoice_risk_scores AS s (invoice_id, live_seq, issuer_id, receiver_id, score, band, model_version, feature_values, contributions)
      SELECT invoice_id, live_seq, issuer_id, receiver_id, score, band, $8, feature_values::float8[], contributions::float8[] FROM numbered ORDER BY live_seq
      ON CONFLICT (invoice_id) DO NOTHING
      RETURNING s.invoice_id, s.seq, s.live_seq, s.scored_at
    ), scored AS (
      SELECT i.issuer_id, i.receiver_id, i.issue_date, ${riskSql.lnAmount('i.amount_usd')} AS l, ${riskSql.month('i.issue_date')} AS month
      FROM incoming i JOIN inserted n USING (invoice_id)
    ), months AS (
      INSERT INTO risk_customer_months AS m (customer_id, month, invoices, sum_log, sumsq_log)
      SELECT issuer_id, month, count(*), sum(l), sum(l * l) FROM scored GROUP BY 1, 2 ORDER BY 1, 2
      ON CONFLICT (customer_id, month) DO UPDATE SET invoices = m.invoices + excluded.invoices,
        sum_log = m.sum_log + excluded.sum_log, sumsq_log = m.sumsq_log + excluded.sumsq_log
    ), global AS (
      INSERT INTO risk_global_months AS m (month, invoices, sum_log, sumsq_log)
      SELECT month, count(*), sum(l), sum(l * l) FROM scored GROUP BY 1 ORDER BY 1
      ON CONFLICT (month) DO UPDATE SET invoices = m.invoices + excluded.invoices,
        sum_log = m.sum_log + excluded.sum_log, sumsq_log = m.sumsq_log + excluded.sumsq_log
    ), minutes AS (
      INSERT INTO risk_issuer_minutes AS m (issuer_id, minute, invoices)
      SELECT issuer_id, date_trunc('minute', issue_date), count(*) FROM scored
      WHERE issue_date >= now() - ${riskSql.MINUTES_KEPT} GROUP BY 1, 2 ORDER BY 1, 2
      ON CONFLICT (issuer_id, minute) DO UPDATE SET invoices = m.invoices + excluded.invoices
    ), pairs AS (
      INSERT INTO risk_customer_pairs AS p (issuer_id, receiver_id, first_issue_date)
      SELECT issuer_id, receiver_id, min(issue_date) FROM scored GROUP BY 1, 2 ORDER BY 1, 2
      ON CONFLICT (issuer_id, receiver_id) DO UPDATE SET first_issue_date = excluded.first_issue_date
        WHERE excluded.first_issue_date < p.first_issue_date
    )
    SELECT invoice_id::text AS "invoiceId", seq::text AS seq, live_seq::text AS "liveSeq",
      to_char(scored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "scoredAt"
    FROM inserted ORDER BY live_seq`,
};

/** Serialises live score writers (the slot holder, and a previous holder still finishing). */
const LIVE_LOCK: Statement = { name: 'risk_live_lock', text: `SELECT pg_advisory_xact_lock(hashtext('invoice-gateway:risk-live'))` };

const REGISTER_MODEL: Statement = {
  name: 'risk_register_model',
  text: `WITH registered AS (
      INSERT INTO risk_models (model_version, features) VALUES ($1, $2) ON CONFLICT (model_version) DO NOTHING RETURNING features
    ) SELECT features FROM registered UNION ALL SELECT features FROM risk_models WHERE model_version = $1`,
};

const PRUNE_MINUTES: Statement = {
  name: 'risk_prune_minutes',
  text: `DELETE FROM risk_issuer_minutes WHERE minute < now() - ${riskSql.MINUTES_KEPT}`,
};

const BY_INVOICE_IDS: Statement = {
  name: 'risk_by_invoice_ids',
  text: `SELECT ${SCORE_COLUMNS} FROM invoice_risk_scores s WHERE s.invoice_id = ANY($1::bigint[])`,
};

const DELETE_SCORES: Statement = {
  name: 'risk_delete_scores',
  text: `DELETE FROM invoice_risk_scores WHERE invoice_id = ANY($1::bigint[])`,
};

const RESET: Statement = {
  name: 'risk_reset',
  text: `TRUNCATE invoice_risk_scores, ${riskSql.DERIVED_TABLES}`,
};

const FILTER = (first: number) => `($${first}::float8 IS NULL OR s.score >= $${first})
  AND ($${first + 1}::text IS NULL OR s.band = $${first + 1})
  AND ($${first + 2}::int IS NULL OR s.issuer_id = $${first + 2})
  AND ($${first + 3}::int IS NULL OR s.receiver_id = $${first + 3})`;

/** Live scores after a cursor (and before an optional bound), in cursor (= commit) order. */
const REPLAY: Statement = {
  name: 'risk_replay',
  text: `SELECT ${SCORE_COLUMNS} FROM invoice_risk_scores s
    WHERE s.live_seq > $1 AND ($7::bigint IS NULL OR s.live_seq < $7) AND ${FILTER(2)}
    ORDER BY s.live_seq LIMIT $6`,
};

/** All scores, newest first, keyset-paged by seq. */
const PAGE: Statement = {
  name: 'risk_page',
  text: `SELECT ${SCORE_COLUMNS} FROM invoice_risk_scores s
    WHERE ($1::bigint IS NULL OR s.seq < $1) AND ${FILTER(2)}
    ORDER BY s.seq DESC LIMIT $6`,
};

const MAX_LIVE_SEQ: Statement = { name: 'risk_max_live_seq', text: `SELECT coalesce(max(live_seq), 0)::text AS n FROM invoice_risk_scores` };

export interface RiskStore {
  /** Records the model's features, once per version; refuses a version already used for other features. */
  registerModel(version: string, features: readonly string[]): Promise<void>;
  liveFeatures(invoices: readonly LiveInvoice[]): Promise<FeatureRow[]>;
  /**
   * Writes live scores; returns those inserted now, in cursor order (an invoice scored before is
   * not). `invoices` holds each scored invoice, for the aggregates.
   */
  writeLive(scores: readonly ScoreToWrite[], invoices: ReadonlyMap<string, LiveInvoice>): Promise<RiskScoreRecord[]>;
  /** Drops minute buckets too old to matter for "the last hour". */
  pruneMinutes(): Promise<void>;
  byInvoiceIds(invoiceIds: readonly string[]): Promise<RiskScoreRecord[]>;
  deleteScores(invoiceIds: readonly string[]): Promise<void>;
  /** After TRUNCATE invoices: scores and aggregates describe rows that are gone. */
  reset(): Promise<void>;
  /** Live scores with afterLiveSeq < live_seq < beforeLiveSeq, in cursor order. */
  replay(afterLiveSeq: string, beforeLiveSeq: string | null, filter: ScoreFilter, limit: number): Promise<RiskScoreRecord[]>;
  page(beforeSeq: string | null, filter: ScoreFilter, limit: number): Promise<RiskScoreRecord[]>;
  /** The newest live cursor position ("0" when none). */
  maxLiveSeq(): Promise<string>;
}

export function createRiskStore(db: Database): RiskStore {
  const filterValues = (f: ScoreFilter) => [f.minScore ?? null, f.band ?? null, f.issuerId ?? null, f.receiverId ?? null];
  const read = async (q: Queryable, statement: Statement, values: unknown[]) => (await q.query<ScoreRow>(statement, values)).map(toRecord);
  return {
    async registerModel(version, features) {
      const [row] = await db.query<{ features: string[] }>(REGISTER_MODEL, [version, features]);
      if (row!.features.join() !== features.join()) {
        throw new Error(`risk model version ${version} was recorded with other features (${row!.features.join(', ')}); give the model a new version`);
      }
    },

    liveFeatures: (invoices) =>
      db.query<FeatureRow>(LIVE_FEATURES, [
        invoices.map((i) => i.invoiceId),
        invoices.map((i) => i.issueDate),
        invoices.map((i) => i.issuerId),
        invoices.map((i) => i.receiverId),
        invoices.map((i) => i.amountUsd),
      ]),

    async writeLive(scores, invoices) {
      if (scores.length === 0) return [];
      const of = (s: ScoreToWrite) => invoices.get(s.invoiceId)!;
      const written = await db.transaction(async (tx) => {
        await tx.query(LIVE_LOCK);
        return tx.query<{ invoiceId: string; seq: string; liveSeq: string; scoredAt: string }>(WRITE_LIVE, [
          ...scoreArrays(scores),
          scores[0]!.modelVersion,
          scores.map((s) => of(s).issueDate),
          scores.map((s) => of(s).amountUsd),
        ]);
      });
      // The records are made from what was written, not read back: the model's reasons, the
      // database's cursor and time.
      const byId = new Map(scores.map((s) => [s.invoiceId, s]));
      return written.map(({ invoiceId, seq, liveSeq, scoredAt }) => {
        const s = byId.get(invoiceId)!;
        return { invoiceId, issuerId: s.issuerId, receiverId: s.receiverId, score: s.score, band: s.band, reasons: s.reasons, modelVersion: s.modelVersion, scoredAt, seq, liveSeq };
      });
    },

    async pruneMinutes() {
      await db.query(PRUNE_MINUTES);
    },

    byInvoiceIds: (ids) => read(db, BY_INVOICE_IDS, [ids]),

    async deleteScores(ids) {
      if (ids.length > 0) await db.query(DELETE_SCORES, [ids]);
    },

    async reset() {
      await db.query(RESET);
    },

    replay: (after, before, filter, limit) => read(db, REPLAY, [after, ...filterValues(filter), limit, before]),

    page: (beforeSeq, filter, limit) => read(db, PAGE, [beforeSeq, ...filterValues(filter), limit]),

    async maxLiveSeq() {
      const [row] = await db.query<{ n: string }>(MAX_LIVE_SEQ);
      return row!.n;
    },
  };
}

function toRecord({ features, featureValues, contributions, ...score }: ScoreRow): RiskScoreRecord {
  const reasons = features
    .map((feature, i) => ({ feature, value: featureValues[i]!, contribution: contributions[i]! }))
    .sort((a, b) => b.contribution - a.contribution || a.feature.localeCompare(b.feature));
  return { ...score, reasons };
}

/** The score columns as arrays for unnest; the float8[] columns travel as array literals. */
export function scoreArrays(scores: readonly ScoreToWrite[]): unknown[] {
  const literal = (values: readonly number[]) => `{${values.join(',')}}`;
  return [
    scores.map((s) => s.invoiceId),
    scores.map((s) => s.issuerId),
    scores.map((s) => s.receiverId),
    scores.map((s) => s.score),
    scores.map((s) => s.band),
    scores.map((s) => literal(s.featureValues)),
    scores.map((s) => literal(s.contributions)),
  ];
}
