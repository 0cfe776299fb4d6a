import { BIGINT, INTEGER, LIST, VARCHAR, listValue, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import { namedParameters, utcMonth, type Duck } from '../duckdb/duckdb.js';
import { deadlineIn } from '../../core/deadline.js';
import { groupBy } from '../../core/groupBy.js';
import type { DatasetKind, Datasets, DatasetWarning, LoadedDatasets } from './datasets.js';
import type { InvoiceSet, StatsEngine } from './statsEngine.js';
import { createWindowTables } from './windowTables.js';

export interface ProfileRecord {
  readonly customerId: string;
  readonly legalName: string | null;
  readonly industry: string | null;
  readonly country: string | null;
  /** JSON text. */
  readonly address: string | null;
  readonly tags: string[] | null;
  /** JSON text. */
  readonly contacts: string | null;
  readonly employees: number | null;
  readonly paymentTermsDays: number | null;
  readonly updatedAt: string | null;
  /** The whole JSON object, as text. */
  readonly raw: string;
}

export interface RatingRecord {
  readonly customerId: string;
  readonly rating: string | null;
  readonly score: number | null;
  readonly asOf: string;
}

export interface PaymentRecord {
  readonly paymentId: string;
  readonly invoiceId: string;
  readonly paidAt: string;
  readonly amountUsd: string;
  readonly method: string | null;
}

export type SegmentDimension =
  | 'ISSUER_INDUSTRY'
  | 'ISSUER_COUNTRY'
  | 'ISSUER_RATING'
  | 'RECEIVER_INDUSTRY'
  | 'RECEIVER_COUNTRY'
  | 'RECEIVER_RATING'
  | 'MONTH'
  | 'ISSUER'
  | 'RECEIVER';
export type SegmentOrder = 'TOTAL_DESC' | 'COUNT_DESC' | 'OUTSTANDING_DESC' | 'DIMENSIONS_ASC';

/** Filters: each a list of allowed values of one column. */
export interface SegmentFilter {
  readonly issuerIndustries?: readonly string[] | null;
  readonly receiverIndustries?: readonly string[] | null;
  readonly issuerCountries?: readonly string[] | null;
  readonly receiverCountries?: readonly string[] | null;
  readonly issuerRatings?: readonly string[] | null;
  readonly receiverRatings?: readonly string[] | null;
  readonly issuerIds?: readonly number[] | null;
  readonly receiverIds?: readonly number[] | null;
  /** Invoices with any of these customers on either side. */
  readonly partyIds?: readonly number[] | null;
}

export interface SegmentQuery {
  readonly dimensions: readonly SegmentDimension[];
  readonly months: number;
  readonly filter: SegmentFilter;
  readonly orderBy: SegmentOrder;
  readonly offset: number;
  /** Rows wanted plus one. */
  readonly limit: number;
}

/** One group; dimensions not asked for are null. Money as exact decimal text. */
export interface SegmentGroup {
  readonly issuerIndustry: string | null;
  readonly issuerCountry: string | null;
  readonly issuerRating: string | null;
  readonly receiverIndustry: string | null;
  readonly receiverCountry: string | null;
  readonly receiverRating: string | null;
  readonly month: string | null;
  readonly issuerId: string | null;
  readonly receiverId: string | null;
  readonly invoiceCount: number;
  readonly totalUsd: string;
  readonly paidUsd: string;
  readonly outstandingUsd: string;
  readonly avgDaysToPay: number | null;
  readonly lateShare: number | null;
}

export interface SegmentAnswer {
  readonly groups: SegmentGroup[];
  readonly set: Omit<InvoiceSet, 'unknownInvoices' | 'lakeFiles'>;
  /** Invoices the filter kept (0 on a page past the last), and how many of them were read live. */
  readonly invoices: number;
  readonly liveInvoices: number;
  readonly warnings: DatasetWarning[];
}

/** Allow-lists: the only SQL a dimension, filter or order becomes (over ENRICHED's columns). */
export const DIMENSION_SQL: Record<SegmentDimension, { readonly column: string; readonly expression: string }> = {
  ISSUER_INDUSTRY: { column: 'issuerIndustry', expression: 'i.issuer_industry' },
  ISSUER_COUNTRY: { column: 'issuerCountry', expression: 'i.issuer_country' },
  ISSUER_RATING: { column: 'issuerRating', expression: 'i.issuer_rating' },
  RECEIVER_INDUSTRY: { column: 'receiverIndustry', expression: 'i.receiver_industry' },
  RECEIVER_COUNTRY: { column: 'receiverCountry', expression: 'i.receiver_country' },
  RECEIVER_RATING: { column: 'receiverRating', expression: 'i.receiver_rating' },
  MONTH: { column: 'month', expression: utcMonth('i.issue_date') },
  ISSUER: { column: 'issuerId', expression: 'i.issuer_id::VARCHAR' },
  RECEIVER: { column: 'receiverId', expression: 'i.receiver_id::VARCHAR' },
};
const anyOf = (expression: string) => (list: string) => `${expression} = ANY(${list})`;
const FILTER_SQL: Record<keyof SegmentFilter, { readonly sql: (list: string) => string; readonly type: DuckDBType }> = {
  issuerIndustries: { sql: anyOf('i.issuer_industry'), type: LIST(VARCHAR) },
  receiverIndustries: { sql: anyOf('i.receiver_industry'), type: LIST(VARCHAR) },
  issuerCountries: { sql: anyOf('i.issuer_country'), type: LIST(VARCHAR) },
  receiverCountries: { sql: anyOf('i.receiver_country'), type: LIST(VARCHAR) },
  issuerRatings: { sql: anyOf('i.issuer_rating'), type: LIST(VARCHAR) },
  receiverRatings: { sql: anyOf('i.receiver_rating'), type: LIST(VARCHAR) },
  issuerIds: { sql: anyOf('i.issuer_id'), type: LIST(INTEGER) },
  receiverIds: { sql: anyOf('i.receiver_id'), type: LIST(INTEGER) },
  partyIds: { sql: (list) => `(i.issuer_id = ANY(${list}) OR i.receiver_id = ANY(${list}))`, type: LIST(INTEGER) },
};
/** Ties, and DIMENSIONS_ASC, go by the dimensions in the order asked. */
const ORDER_SQL: Record<SegmentOrder, string> = {
  TOTAL_DESC: '_total DESC',
  COUNT_DESC: '_count DESC',
  OUTSTANDING_DESC: '_outstanding DESC',
  DIMENSIONS_ASC: '',
};
/** Terms when a receiver's profile does not say. */
export const DEFAULT_PAYMENT_TERMS_DAYS = 30;

/**
 * Invoices (`source`: invoice_id, issue_date, issuer_id, receiver_id, amount_usd, and any more
 * columns, kept) with what segmentStats groups and sums and the risk model's receiver history
 * counts: the paid sum, when it was settled and when it fell due (UTC microseconds: days in UTC
 * are 86,400 s, integer arithmetic rather than ICU's calendar per row), both parties' profile
 * fields and current ratings.
 */
export const ENRICHED = (source: string, tables: LoadedDatasets) => `WITH src AS (${source}),
  settled_in_parts AS (
    SELECT r.invoice_id, min(r.paid_at) AS settled_at FROM ${tables.paymentSteps} r JOIN src USING (invoice_id) WHERE r.cumulative >= src.amount_usd GROUP BY r.invoice_id)
  SELECT i.*, coalesce(p.paid, 0) AS paid_usd,
    epoch_us(CASE WHEN p.events = 1 THEN CASE WHEN p.paid >= i.amount_usd THEN p.last_paid_at END ELSE s.settled_at END) AS settled_us,
    epoch_us(i.issue_date) + coalesce(rp.payment_terms_days, ${DEFAULT_PAYMENT_TERMS_DAYS}) * 86400000000 AS due_us,
    ip.industry AS issuer_industry, ip.country AS issuer_country, ir.rating AS issuer_rating,
    rp.industry AS receiver_industry, rp.country AS receiver_country, rr.rating AS receiver_rating
  FROM src i
    LEFT JOIN ${tables.profiles} ip ON ip.customer_id = i.issuer_id
    LEFT JOIN ${tables.profiles} rp ON rp.customer_id = i.receiver_id
    LEFT JOIN ${tables.currentRatings} ir ON ir.customer_id = i.issuer_id
    LEFT JOIN ${tables.currentRatings} rr ON rr.customer_id = i.receiver_id
    LEFT JOIN ${tables.paidInvoices} p ON p.invoice_id = i.invoice_id
    LEFT JOIN settled_in_parts s ON s.invoice_id = i.invoice_id`;

/**
 * Enriched invoices held in DuckDB, a table per raw file and dataset tables: a query then scans
 * and groups instead of joining every invoice with the payments again (a 12-month window at 10M
 * invoices is about 3.3M rows, some 130 bytes each). Past it, a query enriches the files itself.
 */
const ENRICHED_ROWS_HELD = 4_000_000;
const RAW_COLUMNS = 'invoice_id, issue_date, issuer_id, receiver_id, amount_usd';

export interface Joined {
  profiles(customerIds: readonly number[]): Promise<Map<string, ProfileRecord>>;
  /** Every snapshot, newest first. */
  ratings(customerIds: readonly number[]): Promise<Map<string, RatingRecord[]>>;
  /** Distinct payments, in time order. */
  payments(invoiceIds: readonly string[]): Promise<Map<string, PaymentRecord[]>>;
  segmentStats(query: SegmentQuery): Promise<SegmentAnswer>;
}

/**
 * Invoices joined with the users' datasets in DuckDB: lookups by id for the loaders, and
 * segmentStats, grouped by any allowed dimensions over the invoices of the window (the lake plus
 * the live rows, exact as invoiceStats), each invoice with its distinct payments, both parties'
 * profiles and current ratings.
 */
export function createJoined(deps: { datasets: Datasets; duck: Duck; stats: StatsEngine; timeoutMs: number }): Joined {
  const { datasets, duck, timeoutMs } = deps;
  const enrichedTables = createWindowTables(ENRICHED_ROWS_HELD, 'segment_invoices');
  const query = async <Row>(label: string, kind: DatasetKind, sql: (table: string) => string, values: Record<string, DuckDBValue>, types: Record<string, DuckDBType>) => {
    const table = await datasets.table(kind);
    return duck.session((s) => s.allNamed<Row>(sql(table), values, types), { timeoutMs, label });
  };
  // Invoice ids a payments table names that may match no invoice, per payments table and lake
  // manifest. With the lake, only ids its files lack (few: not exported yet, or no invoice at
  // all) go on to Postgres, never every paid id (8.3 million at 10M invoices, more than the heap).
  const candidates = new Map<string, Promise<string[]>>();
  const ids = (list: readonly (number | string)[]) => listValue(list.map((v) => BigInt(v)));
  const paidIdsNotIn = (paidInvoices: string, lake: { key: string; all(): Promise<string[]> } | null) => {
    const key = `${paidInvoices}|${lake?.key ?? ''}`;
    let pending = candidates.get(key);
    if (!pending) {
      pending = duck
        .session(
          async (s) => {
            if (!lake) return s.all<{ id: string }>(`SELECT invoice_id::VARCHAR AS id FROM ${paidInvoices}`);
            const files = await lake.all();
            if (files.length === 0) return s.all<{ id: string }>(`SELECT invoice_id::VARCHAR AS id FROM ${paidInvoices}`);
            return s.all<{ id: string }>(
              `SELECT p.invoice_id::VARCHAR AS id FROM ${paidInvoices} p ANTI JOIN (SELECT invoice_id FROM read_parquet($1)) r USING (invoice_id)`,
              [listValue(files)],
              [LIST(VARCHAR)],
            );
          },
          { timeoutMs, label: 'payment_invoices' },
        )
        .then((rows) => rows.map((r) => r.id));
      pending.catch(() => candidates.delete(key));
      candidates.clear();
      candidates.set(key, pending);
    }
    return pending;
  };
  /** Paid ids among the lake's stale ones (held in its files, maybe deleted since), within what is left of the query's limit. */
  const paidAmong = async (paidInvoices: string, invoiceIds: readonly string[], leftMs: number) =>
    invoiceIds.length === 0
      ? []
      : (
          await duck.session(
            (s) => s.all<{ id: string }>(`SELECT invoice_id::VARCHAR AS id FROM ${paidInvoices} WHERE invoice_id = ANY($1)`, [ids(invoiceIds)], [LIST(BIGINT)]),
            { timeoutMs: leftMs, label: 'payment_stale_invoices' },
          )
        ).map((r) => r.id);

  return {
    async profiles(customerIds) {
      const rows = await query<ProfileRecord>(
        'profiles_by_id',
        'profiles',
        (t) => `SELECT customer_id::VARCHAR AS "customerId", legal_name AS "legalName", industry, country, address, tags, contacts, employees,
            payment_terms_days AS "paymentTermsDays", strftime(updated_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS "updatedAt", raw
          FROM ${t} WHERE customer_id = ANY($ids)`,
        { ids: ids(customerIds) },
        { ids: LIST(BIGINT) },
      );
      return new Map(rows.map((r) => [r.customerId, r]));
    },

    async ratings(customerIds) {
      const rows = await query<RatingRecord>(
        'ratings_by_id',
        'ratings',
        (t) => `SELECT customer_id::VARCHAR AS "customerId", rating, score, strftime(as_of, '%Y-%m-%dT%H:%M:%S.%fZ') AS "asOf"
          FROM ${t} WHERE customer_id = ANY($ids) ORDER BY customer_id, as_of DESC, rating`,
        { ids: ids(customerIds) },
        { ids: LIST(BIGINT) },
      );
      return groupBy(rows, (r) => r.customerId);
    },

    async payments(invoiceIds) {
      const rows = await query<PaymentRecord>(
        'payments_by_invoice',
        'payments',
        (t) => `SELECT payment_id AS "paymentId", invoice_id::VARCHAR AS "invoiceId", strftime(paid_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS "paidAt",
            amount_usd::VARCHAR AS "amountUsd", method
          FROM ${t} WHERE invoice_id = ANY($ids) ORDER BY invoice_id, paid_at, payment_id`,
        { ids: ids(invoiceIds) },
        { ids: LIST(BIGINT) },
      );
      return groupBy(rows, (r) => r.invoiceId);
    },

    async segmentStats(q) {
      // One time limit for the whole query: the datasets' loading, the snapshot and the join.
      const deadline = deadlineIn(timeoutMs);
      const tables = await datasets.load();
      return deps.stats.withInvoices(q.months, deadline, async (set) => {
        const { bind, values, types } = namedParameters();
        const live = `SELECT unnest(${bind('live_id', ids(set.live.ids), LIST(BIGINT))}) AS invoice_id,
            unnest(${bind('live_date', listValue(set.live.dates), LIST(VARCHAR))})::TIMESTAMPTZ AS issue_date,
            unnest(${bind('live_issuer', listValue(set.live.issuers), LIST(INTEGER))}) AS issuer_id,
            unnest(${bind('live_receiver', listValue(set.live.receivers), LIST(INTEGER))}) AS receiver_id,
            unnest(${bind('live_amount', listValue(set.live.amounts), LIST(VARCHAR))})::DECIMAL(14,2) AS amount_usd, TRUE AS is_live`;
        const filters = (Object.keys(FILTER_SQL) as (keyof SegmentFilter)[])
          .filter((name) => q.filter[name] != null)
          .map((name) => FILTER_SQL[name].sql(bind(`f_${name}`, listValue([...(q.filter[name] as readonly (string | number)[])]), FILTER_SQL[name].type)));
        const dims = q.dimensions.map((d) => DIMENSION_SQL[d]);
        const nullDims = (Object.keys(DIMENSION_SQL) as SegmentDimension[]).filter((d) => !q.dimensions.includes(d)).map((d) => `NULL::VARCHAR AS "${DIMENSION_SQL[d].column}"`);
        bind('as_of', set.window.asOf, VARCHAR);
        if (set.rawFiles.length > 0) {
          bind('from', set.window.from, VARCHAR);
          bind('to', set.window.to, VARCHAR);
          bind('stale', ids(set.staleIds), LIST(BIGINT));
        }
        const rows = await duck.session(
          (s) => enrichedTables.using(async (take) => {
            // Each raw file's enriched table (held, or made now), less the invoices it holds stale.
            // Tables of datasets no longer current go first: nothing will read them again.
            const version = JSON.stringify([tables.payments, tables.profiles, tables.ratings]);
            await enrichedTables.release(s, (id) => id.endsWith(`|${version}`), timeoutMs);
            const lake: string[] = [];
            for (const [n, file] of set.rawFiles.entries()) {
              const held = await take(
                s,
                `${file.path}|${version}`,
                file.rows,
                (name) => `CREATE TABLE ${name} AS ${ENRICHED(`SELECT ${RAW_COLUMNS} FROM read_parquet($1)`, tables)}`,
                async () => [file.path],
                'count(*)',
              );
              lake.push(
                `SELECT *, FALSE AS is_live FROM ${held ? held.name : `(${ENRICHED(`SELECT ${RAW_COLUMNS} FROM read_parquet(${bind(`raw_${n}`, file.path, VARCHAR)})`, tables)})`}
                 WHERE issue_date >= $from::TIMESTAMPTZ AND issue_date < $to::TIMESTAMPTZ AND NOT invoice_id = ANY($stale)`,
              );
            }
            const sql = `WITH inv AS (${[...lake, ENRICHED(live, tables)].map((part) => `(${part})`).join(' UNION ALL BY NAME ')}),
          joined AS (
            SELECT i.* ${dims.map((d) => `, ${d.expression} AS "${d.column}"`).join('')}
            FROM inv i
            ${filters.length > 0 ? `WHERE ${filters.join(' AND ')}` : ''}
          ),
          grouped AS (
            SELECT ${dims.map((d) => `"${d.column}"`).join(', ')}${dims.length > 0 ? ',' : ''}
              -- Without dimensions there is one row even when no invoice matches: its sums are 0.
              count(*)::BIGINT::VARCHAR AS "invoiceCount", coalesce(sum(amount_usd), 0)::DECIMAL(38,2)::VARCHAR AS "totalUsd",
              coalesce(sum(paid_usd), 0)::DECIMAL(38,2)::VARCHAR AS "paidUsd",
              coalesce(sum(greatest(amount_usd - paid_usd, 0)), 0)::DECIMAL(38,2)::VARCHAR AS "outstandingUsd",
              round(avg(settled_us - epoch_us(issue_date)) / 86400000000, 2) AS "avgDaysToPay",
              round(avg(CASE WHEN settled_us IS NOT NULL THEN (settled_us > due_us)::INTEGER
                             WHEN epoch_us($as_of::TIMESTAMPTZ) > due_us THEN 1 ELSE 0 END), 4) AS "lateShare",
              sum(amount_usd) AS _total, count(*) AS _count, sum(greatest(amount_usd - paid_usd, 0)) AS _outstanding,
              sum(count(*)) OVER () AS _invoices, sum(count(*) FILTER (WHERE is_live)) OVER () AS _live
            FROM joined ${dims.length > 0 ? 'GROUP BY ALL' : ''}
          )
          SELECT ${dims.map((d) => `"${d.column}"`).join(', ')}${dims.length > 0 ? ',' : ''} ${nullDims.join(', ')}${nullDims.length > 0 ? ',' : ''}
            "invoiceCount", "totalUsd", "paidUsd", "outstandingUsd", "avgDaysToPay", "lateShare", _invoices::BIGINT::VARCHAR AS _invoices, _live::BIGINT::VARCHAR AS _live
          FROM grouped
          ORDER BY ${[ORDER_SQL[q.orderBy], ...dims.map((d) => `"${d.column}" ASC NULLS FIRST`)].filter(Boolean).join(', ') || '1'}
          LIMIT ${bind('limit', BigInt(q.limit), BIGINT)} OFFSET ${bind('offset', BigInt(q.offset), BIGINT)}`;
            // Counts as text: a segment of a large lake passes 2^31, DuckDB's INTEGER.
            return s.allNamed<Omit<SegmentGroup, 'invoiceCount'> & { invoiceCount: string; _invoices: string; _live: string }>(sql, values, types);
          }),
          { timeoutMs: deadline.remainingMs(), label: 'segment_stats' },
        );
        // Payments that match no invoice are reported, not joined.
        const [absent, stale] = await Promise.all([paidIdsNotIn(tables.paidInvoices, set.lakeFiles), paidAmong(tables.paidInvoices, set.staleIds, deadline.remainingMs())]);
        const unknown = await set.unknownInvoices([...new Set([...absent, ...stale])]);
        const warnings: DatasetWarning[] = [...set.warnings, ...tables.warnings];
        if (unknown > 0) warnings.push({ code: 'PAYMENTS_UNMATCHED', message: `payment events: ${unknown} invoice id(s) match no invoice; their payments are not joined` });
        const { unknownInvoices: _, lakeFiles: __, ...described } = set;
        return {
          groups: rows.map(({ _invoices, _live, ...g }) => ({ ...g, invoiceCount: Number(g.invoiceCount), avgDaysToPay: g.avgDaysToPay === null ? null : Number(g.avgDaysToPay), lateShare: g.lateShare === null ? null : Number(g.lateShare) })),
          set: described,
          invoices: Number(rows[0]?._invoices ?? 0),
          liveInvoices: Number(rows[0]?._live ?? 0),
          warnings,
        };
      });
    },
  };
}

