import type { Database, Queryable, Statement } from './database.js';

/**
 * The risk scorer's SQL: features computed set-based for a batch of invoices, scores written
 * with the running aggregates in one statement, and the reads behind `riskScored`, `riskScores`
 * and `Invoice.risk`. Features are "as of" each invoice: history is the issuer's invoices in the
 * 12 calendar months (UTC) before the invoice's month plus that month up to the invoice.
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
  readonly band: string;
  readonly reasons: unknown;
  readonly modelVersion: string;
}

/** A stored score, as the API and subscribers see it. */
export interface RiskScoreRecord {
  readonly invoiceId: string;
  readonly issuerId: string;
  readonly receiverId: string;
  readonly score: number;
  readonly band: 'LOW' | 'MEDIUM' | 'HIGH';
  readonly reasons: readonly { feature: string; value: number; contribution: number }[];
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

const SCORE_COLUMNS = `s.invoice_id::text AS "invoiceId", s.issuer_id::text AS "issuerId", s.receiver_id::text AS "receiverId",
  s.score, s.band, s.reasons, s.model_version AS "modelVersion",
  to_char(s.scored_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "scoredAt", s.seq::text AS seq,
  s.live_seq::text AS "liveSeq"`;

const LN_AMOUNT = (column: string) => `ln(greatest(${column}, 0.01))`;
const MONTH = (column: string) => `date_trunc('month', ${column} AT TIME ZONE 'UTC')::date`;

/**
 * Live invoices, as the feed delivered them (not re-read: the feed can deliver a commit a moment
 * before it is visible to other sessions). History from the running aggregates (at most 13 rows
 * an issuer), the last hour from the (issuer_id, issue_date) index plus the batch itself, the
 * pair from risk_customer_pairs; of one batch's invoices sharing a pair only the earliest is first.
 */
const LIVE_FEATURES: Statement = {
  name: 'risk_live_features',
  text: `WITH b AS (
      SELECT t.*, ${MONTH('t.issue_date')} AS month
      FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::numeric[]) AS t(invoice_id, issue_date, issuer_id, receiver_id, amount_usd)
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
      greatest(24, extract(epoch FROM b.issue_date - coalesce(h.first_month, b.month)::timestamp AT TIME ZONE 'UTC') / 3600)::float8 AS "historyHours"
    FROM b
    LEFT JOIN LATERAL (
      SELECT sum(m.invoices) AS n, sum(m.sum_log) AS s, sum(m.sumsq_log) AS ss, min(m.month) AS first_month
      FROM risk_customer_months m
      WHERE m.customer_id = b.issuer_id AND m.month BETWEEN (b.month - interval '12 months')::date AND b.month
    ) h ON true
    LEFT JOIN LATERAL (
      SELECT sum(m.invoices) AS n, sum(m.sum_log) AS s, sum(m.sumsq_log) AS ss
      FROM risk_global_months m WHERE m.month BETWEEN (b.month - interval '12 months')::date AND (b.month - interval '1 month')::date
    ) g ON true
    LEFT JOIN risk_customer_pairs p ON p.issuer_id = b.issuer_id AND p.receiver_id = b.receiver_id
    CROSS JOIN LATERAL (
      SELECT count(*) AS n FROM invoices x
      WHERE x.issuer_id = b.issuer_id AND x.issue_date > b.issue_date - interval '1 hour' AND x.issue_date <= b.issue_date
        AND x.invoice_id <> ALL($1::bigint[])
    ) hr
    ORDER BY b.invoice_id`,
};

/**
 * Live scores and the aggregates they feed, in one statement, under LIVE_LOCK: live_seq continues
 * from the highest one without gaps. An invoice scored before (a replay after a crash) is left
 * out, so nothing is counted twice; only rows inserted now update the aggregates.
 */
const WRITE_LIVE: Statement = {
  name: 'risk_write_live',
  text: `WITH incoming AS (
      SELECT t.* FROM unnest($1::bigint[], $2::int[], $3::int[], $4::float8[], $5::text[], $6::jsonb[], $8::timestamptz[], $9::numeric[])
        AS t(invoice_id, issuer_id, receiver_id, score, band, reasons, issue_date, amount_usd)
      WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = t.invoice_id)
    ), numbered AS (
      SELECT incoming.*, (SELECT coalesce(max(live_seq), 0) FROM invoice_risk_scores) + row_number() OVER (ORDER BY invoice_id) AS live_seq
      FROM incoming
    ), inserted AS (
      INSERT INTO invoice_risk_scores AS s (invoice_id, live_seq, issuer_id, receiver_id, score, band, reasons, model_version)
      SELECT invoice_id, live_seq, issuer_id, receiver_id, score, band, reasons, $7 FROM numbered ORDER BY live_seq
      ON CONFLICT (invoice_id) DO NOTHING
      RETURNING ${SCORE_COLUMNS}
    ), scored AS (
      SELECT i.issuer_id, i.receiver_id, i.issue_date, ${LN_AMOUNT('i.amount_usd')} AS l, ${MONTH('i.issue_date')} AS month
      FROM incoming i JOIN inserted n ON n."invoiceId"::bigint = i.invoice_id
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
    ), pairs AS (
      INSERT INTO risk_customer_pairs AS p (issuer_id, receiver_id, first_issue_date, invoices)
      SELECT issuer_id, receiver_id, min(issue_date), count(*) FROM scored GROUP BY 1, 2 ORDER BY 1, 2
      ON CONFLICT (issuer_id, receiver_id) DO UPDATE SET first_issue_date = least(p.first_issue_date, excluded.first_issue_date),
        invoices = p.invoices + excluded.invoices
    )
    SELECT * FROM inserted ORDER BY "liveSeq"::bigint`,
};

/** Serialises live score writers (the slot holder, and a previous holder still finishing). */
const LIVE_LOCK: Statement = { name: 'risk_live_lock', text: `SELECT pg_advisory_xact_lock(hashtext('invoice-gateway:risk-live'))` };

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
  text: `TRUNCATE invoice_risk_scores, risk_customer_months, risk_global_months, risk_customer_pairs, risk_backfill_queue, risk_backfill_issuers`,
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

/**
 * Inside the slot's snapshot: the aggregates as of the feed's start, and the backfill queue (the
 * unscored invoices the feed will never deliver). Rows committed after it come through the feed.
 */
const INITIALIZE: Statement[] = [
  {
    name: 'risk_init_reset',
    text: `TRUNCATE risk_customer_months, risk_global_months, risk_customer_pairs, risk_backfill_queue, risk_backfill_issuers`,
  },
  {
    name: 'risk_init_months',
    text: `INSERT INTO risk_customer_months (customer_id, month, invoices, sum_log, sumsq_log)
      SELECT issuer_id, ${MONTH('issue_date')}, count(*), sum(${LN_AMOUNT('amount_usd')}), sum(${LN_AMOUNT('amount_usd')} ^ 2)
      FROM invoices GROUP BY 1, 2`,
  },
  {
    name: 'risk_init_global',
    text: `INSERT INTO risk_global_months (month, invoices, sum_log, sumsq_log)
      SELECT month, sum(invoices), sum(sum_log), sum(sumsq_log) FROM risk_customer_months GROUP BY 1`,
  },
  {
    name: 'risk_init_pairs',
    text: `INSERT INTO risk_customer_pairs (issuer_id, receiver_id, first_issue_date, invoices)
      SELECT issuer_id, receiver_id, min(issue_date), count(*) FROM invoices GROUP BY 1, 2`,
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
const NEXT_BACKFILL_ISSUERS: Statement = {
  name: 'risk_backfill_next_issuers',
  text: `WITH per_issuer AS (
      SELECT issuer_id, invoices FROM risk_backfill_issuers ORDER BY issuer_id LIMIT 5000
    ), running AS (SELECT issuer_id, sum(invoices) OVER (ORDER BY issuer_id) - invoices AS before FROM per_issuer)
    SELECT array_agg(issuer_id ORDER BY issuer_id) AS issuers FROM running WHERE before < $1`,
};

/**
 * Backfill features for whole issuers, with window functions over their full history, each
 * invoice seeing only what came before it: prior months from a per-month running window, the
 * current month's earlier invoices from a row window, the last hour from a range window.
 */
const BACKFILL_FEATURES: Statement = {
  name: 'risk_backfill_features',
  text: `WITH inv AS (
      SELECT i.invoice_id, i.issue_date, i.issuer_id, i.receiver_id, i.amount_usd, ${LN_AMOUNT('i.amount_usd')} AS l,
        (extract(year FROM i.issue_date AT TIME ZONE 'UTC') * 12 + extract(month FROM i.issue_date AT TIME ZONE 'UTC') - 1)::int AS mi
      FROM invoices i WHERE i.issuer_id = ANY($1::int[])
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
      greatest(24, extract(epoch FROM w.issue_date - make_timestamptz(p.first_mi / 12, p.first_mi % 12 + 1, 1, 0, 0, 0, 'UTC')) / 3600)::float8 AS "historyHours"
    FROM w
    JOIN risk_backfill_queue q ON q.issuer_id = w.issuer_id AND q.invoice_id = w.invoice_id
    JOIN prior p ON p.issuer_id = w.issuer_id AND p.mi = w.mi
    LEFT JOIN gprior gp ON gp.mi = w.mi`,
};

const WRITE_BACKFILL: Statement = {
  name: 'risk_write_backfill',
  text: `INSERT INTO invoice_risk_scores (invoice_id, issuer_id, receiver_id, score, band, reasons, model_version)
    SELECT t.*, $7 FROM unnest($1::bigint[], $2::int[], $3::int[], $4::float8[], $5::text[], $6::jsonb[]) AS t
    ON CONFLICT (invoice_id) DO NOTHING`,
};

const DEQUEUE_ISSUERS: Statement = {
  name: 'risk_backfill_dequeue',
  text: `WITH issuers AS (DELETE FROM risk_backfill_issuers WHERE issuer_id = ANY($1::int[]))
    DELETE FROM risk_backfill_queue WHERE issuer_id = ANY($1::int[])`,
};

const MAX_LIVE_SEQ: Statement = { name: 'risk_max_live_seq', text: `SELECT coalesce(max(live_seq), 0)::text AS n FROM invoice_risk_scores` };

const BACKFILL_REMAINING: Statement = {
  name: 'risk_backfill_remaining',
  text: `SELECT coalesce(sum(invoices), 0)::float8 AS n FROM risk_backfill_issuers`,
};

export interface RiskStore {
  liveFeatures(invoices: readonly LiveInvoice[]): Promise<FeatureRow[]>;
  /**
   * Writes live scores; returns those inserted now, in cursor order (an invoice scored before is
   * not). `invoices` holds each scored invoice, for the aggregates.
   */
  writeLive(scores: readonly ScoreToWrite[], invoices: ReadonlyMap<string, LiveInvoice>): Promise<RiskScoreRecord[]>;
  byInvoiceIds(invoiceIds: readonly string[]): Promise<RiskScoreRecord[]>;
  deleteScores(invoiceIds: readonly string[]): Promise<void>;
  /** After TRUNCATE invoices: scores and aggregates describe rows that are gone. */
  reset(): Promise<void>;
  /** Builds the aggregates and the backfill queue, inside the feed slot's snapshot. */
  initialize(tx: Queryable): Promise<void>;
  /** Live scores with afterLiveSeq < live_seq < beforeLiveSeq, in cursor order. */
  replay(afterLiveSeq: string, beforeLiveSeq: string | null, filter: ScoreFilter, limit: number): Promise<RiskScoreRecord[]>;
  page(beforeSeq: string | null, filter: ScoreFilter, limit: number): Promise<RiskScoreRecord[]>;
  /** The newest live cursor position ("0" when none). */
  maxLiveSeq(): Promise<string>;
  backfillRemaining(): Promise<number>;
  /**
   * One backfill batch: the next whole issuers (about `invoices` invoices), scored with `score`
   * and written with the queue entries removed, in one transaction. Returns how many were scored
   * (0 when the queue is empty).
   */
  backfillBatch(invoices: number, score: (rows: FeatureRow[]) => ScoreToWrite[], modelVersion: string): Promise<number>;
}

export function createRiskStore(db: Database): RiskStore {
  const filterValues = (f: ScoreFilter) => [f.minScore ?? null, f.band ?? null, f.issuerId ?? null, f.receiverId ?? null];
  return {
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
      return db.transaction(async (tx) => {
        await tx.query(LIVE_LOCK);
        return tx.query<RiskScoreRecord>(WRITE_LIVE, [
          ...scoreArrays(scores),
          scores[0]!.modelVersion,
          scores.map((s) => of(s).issueDate),
          scores.map((s) => of(s).amountUsd),
        ]);
      });
    },

    byInvoiceIds: (ids) => db.query<RiskScoreRecord>(BY_INVOICE_IDS, [ids]),

    async deleteScores(ids) {
      if (ids.length > 0) await db.query(DELETE_SCORES, [ids]);
    },

    async reset() {
      await db.query(RESET);
    },

    async initialize(tx) {
      for (const statement of INITIALIZE) await tx.query(statement);
    },

    replay: (after, before, filter, limit) => db.query<RiskScoreRecord>(REPLAY, [after, ...filterValues(filter), limit, before]),

    page: (beforeSeq, filter, limit) => db.query<RiskScoreRecord>(PAGE, [beforeSeq, ...filterValues(filter), limit]),

    async maxLiveSeq() {
      const [row] = await db.query<{ n: string }>(MAX_LIVE_SEQ);
      return row!.n;
    },

    async backfillRemaining() {
      const [row] = await db.query<{ n: number }>(BACKFILL_REMAINING);
      return row!.n;
    },

    async backfillBatch(invoices, score, modelVersion) {
      const [next] = await db.query<{ issuers: number[] | null }>(NEXT_BACKFILL_ISSUERS, [invoices]);
      const issuers = next?.issuers ?? [];
      if (issuers.length === 0) return 0;
      const features = await db.query<FeatureRow>(BACKFILL_FEATURES, [issuers]);
      const scores = score(features);
      await db.transaction(async (tx) => {
        if (scores.length > 0) await tx.query(WRITE_BACKFILL, [...scoreArrays(scores), modelVersion]);
        await tx.query(DEQUEUE_ISSUERS, [issuers]);
      });
      // An issuer whose queued invoices were all deleted meanwhile still counts as progress.
      return Math.max(scores.length, 1);
    },
  };
}

function scoreArrays(scores: readonly ScoreToWrite[]): unknown[] {
  return [
    scores.map((s) => s.invoiceId),
    scores.map((s) => s.issuerId),
    scores.map((s) => s.receiverId),
    scores.map((s) => s.score),
    scores.map((s) => s.band),
    scores.map((s) => JSON.stringify(s.reasons)),
  ];
}
