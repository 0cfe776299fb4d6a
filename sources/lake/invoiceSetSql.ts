import { BIGINT, INTEGER, LIST, VARCHAR, listValue, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import type { InvoiceSet } from './statsEngine.js';

type Bind = (name: string, value: DuckDBValue, type: DuckDBType) => string;

/**
 * The invoices of an exact set as one DuckDB relation (invoice_id, issue_date, issuer_id,
 * receiver_id, amount_usd, is_live): the window's raw Parquet files less the stale ids, plus the
 * rows read live from Postgres. Values travel as bound parameters, never as SQL text.
 */
export function invoiceSetSql(set: Omit<InvoiceSet, 'unknownInvoices'>, bind: Bind): string {
  const ids = (list: readonly string[]) => listValue(list.map((v) => BigInt(v)));
  const live = `SELECT unnest(${bind('live_id', ids(set.live.ids), LIST(BIGINT))}) AS invoice_id,
      unnest(${bind('live_date', listValue(set.live.dates), LIST(VARCHAR))})::TIMESTAMPTZ AS issue_date,
      unnest(${bind('live_issuer', listValue(set.live.issuers), LIST(INTEGER))}) AS issuer_id,
      unnest(${bind('live_receiver', listValue(set.live.receivers), LIST(INTEGER))}) AS receiver_id,
      unnest(${bind('live_amount', listValue(set.live.amounts), LIST(VARCHAR))})::DECIMAL(14,2) AS amount_usd, TRUE AS is_live`;
  if (set.rawFiles.length === 0) return live;
  return `SELECT invoice_id, issue_date, issuer_id, receiver_id, amount_usd, FALSE AS is_live FROM read_parquet(${bind('raw', listValue(set.rawFiles), LIST(VARCHAR))})
      WHERE issue_date >= ${bind('from', set.window.from, VARCHAR)}::TIMESTAMPTZ AND issue_date < ${bind('to', set.window.to, VARCHAR)}::TIMESTAMPTZ
        AND NOT invoice_id = ANY(${bind('stale', ids(set.staleIds), LIST(BIGINT))})
    UNION ALL ${live}`;
}
