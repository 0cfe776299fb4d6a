import { BIGINT, INTEGER, LIST, listValue, VARCHAR } from '@duckdb/node-api';
import { namedParameters, type Duck } from '../duckdb/duckdb.js';
import type { ObjectCache } from '../objectStore/objectCache.js';
import type { ObjectStore } from '../objectStore/objectStore.js';
import { keysetSql, type StatsGroup, type StatsQuery } from '../postgres/statsStore.js';
import type { LakeManifest } from './manifest.js';

/** Live rows, already grouped by (month, customer): what Postgres adds to the lake. */
export interface LiveGroup {
  readonly month: string;
  readonly customerId: number;
  readonly invoices: number;
  readonly totalUsd: string;
  readonly minUsd: string;
  readonly maxUsd: string;
}

export interface LakeStatsInput {
  readonly manifest: LakeManifest;
  readonly months: readonly string[];
  readonly query: StatsQuery;
  /** Invoices whose lake version is stale (updated or deleted since the export). */
  readonly changedIds: readonly string[];
  readonly live: readonly LiveGroup[];
}

/**
 * invoiceStats over the lake: the per-customer monthly rollups of the months asked for, with
 * the groups that hold a stale invoice recomputed from the raw files without it, plus the live
 * rows from Postgres, grouped, ordered and paged in DuckDB. Files are read from the local cache.
 */
export async function lakeStats(deps: { duck: Duck; cache: ObjectCache; store: ObjectStore; timeoutMs: number }, input: LakeStatsInput): Promise<StatsGroup[]> {
  const { query } = input;
  const wanted = new Set(input.months);
  const months = input.manifest.months.filter((m) => wanted.has(m.month));
  const fetch = (f: { key: string; etag: string }) => deps.cache.fetch(deps.store, f.key, f.etag);
  const rollups = await Promise.all(months.map((m) => fetch(m.rollups[query.role])));
  const stale = input.changedIds.length > 0;
  const raw = stale ? await Promise.all(months.flatMap((m) => m.raw.map(fetch))) : [];
  const party = query.role === 'issuer' ? 'issuer_id' : 'receiver_id';
  const keyset = keysetSql(query.orderBy, { value: '$after_value::DECIMAL(38,2)', customer: '$after_customer::INTEGER', month: '$after_month::VARCHAR' });

  const parameters = namedParameters();
  const { bind } = parameters;
  const strings = (list: readonly string[]) => listValue([...list]);
  const live = `SELECT unnest(${bind('live_month', strings(input.live.map((g) => g.month)), LIST(VARCHAR))}) AS month,
      unnest(${bind('live_customer', listValue(input.live.map((g) => g.customerId)), LIST(INTEGER))}) AS customer_id,
      unnest(${bind('live_invoices', listValue(input.live.map((g) => BigInt(g.invoices))), LIST(BIGINT))}) AS invoices,
      unnest(${bind('live_total', strings(input.live.map((g) => g.totalUsd)), LIST(VARCHAR))})::DECIMAL(38,2) AS total_usd,
      unnest(${bind('live_min', strings(input.live.map((g) => g.minUsd)), LIST(VARCHAR))})::DECIMAL(14,2) AS min_usd,
      unnest(${bind('live_max', strings(input.live.map((g) => g.maxUsd)), LIST(VARCHAR))})::DECIMAL(14,2) AS max_usd`;
  const rollup =
    rollups.length > 0
      ? `SELECT month, customer_id, invoices, total_usd, min_usd, max_usd FROM read_parquet(${bind('rollups', strings(rollups), LIST(VARCHAR))})`
      : `SELECT * FROM live WHERE false`;
  const lake = stale
    ? (() => {
        const changed = bind('changed', listValue(input.changedIds.map((id) => BigInt(id))), LIST(BIGINT));
        return `raw AS (SELECT strftime(issue_date, '%Y-%m') AS month, ${party} AS customer_id, invoice_id, amount_usd
            FROM read_parquet(${bind('raw', strings(raw), LIST(VARCHAR))})),
          stale AS (SELECT DISTINCT month, customer_id FROM raw WHERE invoice_id = ANY(${changed})),
          redone AS (
            SELECT month, customer_id, count(*)::BIGINT AS invoices, sum(amount_usd)::DECIMAL(38,2) AS total_usd,
              min(amount_usd) AS min_usd, max(amount_usd) AS max_usd
            FROM raw WHERE (month, customer_id) IN (SELECT month, customer_id FROM stale) AND NOT invoice_id = ANY(${changed})
            GROUP BY ALL),
          lake AS (SELECT * FROM rollup WHERE (month, customer_id) NOT IN (SELECT month, customer_id FROM stale) UNION ALL SELECT * FROM redone)`;
      })()
    : `lake AS (SELECT * FROM rollup)`;
  const filter = query.customerIds === null ? '' : `WHERE customer_id = ANY(${bind('customers', listValue([...query.customerIds]), LIST(INTEGER))})`;
  bind('after_value', query.after?.sortValue ?? null, VARCHAR);
  bind('after_customer', query.after?.customerId ?? null, INTEGER);
  bind('after_month', query.after?.month ?? '', VARCHAR);
  const limit = bind('limit', query.limit, BIGINT);

  const sql = `WITH live AS (${live}), rollup AS (${rollup}), ${lake},
    parts AS (SELECT * FROM lake UNION ALL SELECT * FROM live),
    g AS (
      SELECT customer_id, ${query.granularity === 'MONTH' ? 'month' : 'NULL::VARCHAR'} AS month, sum(invoices)::BIGINT AS invoices,
        sum(total_usd)::DECIMAL(38,2) AS total, min(min_usd) AS min_usd, max(max_usd) AS max_usd
      FROM parts ${filter} GROUP BY ALL
    ), ranked AS (SELECT g.*, sum(invoices) OVER () AS all_invoices FROM g)
    SELECT customer_id AS "customerId", month, invoices::VARCHAR AS invoices, total::VARCHAR AS "totalUsd", min_usd::VARCHAR AS "minUsd",
      max_usd::VARCHAR AS "maxUsd", all_invoices::VARCHAR AS "allInvoices"
    FROM ranked WHERE ${keyset.where}
    ORDER BY ${keyset.orderBy} LIMIT ${limit}`;

  // CUSTOMER_ASC names no sort value: only the parameters the statement uses are passed.
  const { values, types } = parameters.used(sql);
  return deps.duck.session(
    async (s) => {
      const rows = await s.allNamed<StatsGroup & { customerId: number | string }>(sql, values, types);
      return rows.map((r) => ({ ...r, customerId: Number(r.customerId) }));
    },
    { timeoutMs: deps.timeoutMs, label: 'invoice_stats_lake' },
  );
}
