import { VARCHAR } from '@duckdb/node-api';
import { namedParameters, type Duck } from '../duckdb/duckdb.js';
import type { Datasets, LoadedDatasets } from './datasets.js';
import { ENRICHED } from './joined.js';

export interface ReceiverPaymentsExport {
  /** Rows written to the CSV. */
  readonly rows: number;
  /** Invoices past their due date that the counts cover. */
  readonly dueInvoices: number;
  /** The first month not counted (YYYY-MM): the current one, whose verdicts are not all in. */
  readonly cutoffMonth: string;
  readonly fingerprint: string;
}

/**
 * How each receiver pays: invoices joined with the payments and profiles datasets in DuckDB,
 * counted per receiver and month: the invoices that fell due and those not settled by their due
 * date, and the invoices settled late with their days past due. Settled means fully paid by
 * distinct payments; due is the issue date plus the receiver's terms.
 */
export interface ReceiverPayments {
  /** Names what a refresh would read: the dataset tables' versions and the current month. */
  fingerprint(): Promise<string>;
  /** Whether the payments dataset holds any payment (without one there is nothing to count). */
  hasPayments(): Promise<boolean>;
  /**
   * Writes the per-month counts before the current month as CSV (see migrations/007), from a CSV
   * of invoices (invoice_id, issue_date, receiver_id, amount_usd).
   */
  writeCsv(invoicesCsv: string, file: string): Promise<ReceiverPaymentsExport>;
}

export function createReceiverPayments(deps: { datasets: Datasets; duck: Duck; timeoutMs: number }): ReceiverPayments {
  const { datasets, duck, timeoutMs } = deps;
  const currentMonth = () => new Date().toISOString().slice(0, 7);
  // Versions, not table names: a restarted gateway with the same files need not refresh.
  const fingerprintOf = (tables: LoadedDatasets, month: string) => `${tables.versions.payments}|${tables.versions.profiles}|${month}`;

  return {
    async fingerprint() {
      return fingerprintOf(await datasets.load(), currentMonth());
    },

    async hasPayments() {
      const payments = await datasets.table('payments');
      return duck.session(async (s) => (await s.all(`SELECT 1 FROM ${payments} LIMIT 1`)).length > 0, { timeoutMs, label: 'receiver_payments_any' });
    },

    async writeCsv(invoicesCsv, file) {
      const tables = await datasets.load();
      const cutoffMonth = currentMonth();
      const { bind, values, types } = namedParameters();
      bind('invoices', invoicesCsv, VARCHAR);
      bind('cutoff', `${cutoffMonth}-01T00:00:00Z`, VARCHAR);
      // The session's time zone is UTC, so months are UTC calendar months.
      // Settled and due as segmentStats has them (ENRICHED); the file has no issuer, which they do not need.
      const invoices = `SELECT *, NULL::INTEGER AS issuer_id FROM read_csv($invoices, header = false, auto_detect = false,
          columns = {'invoice_id': 'BIGINT', 'issue_date': 'TIMESTAMPTZ', 'receiver_id': 'INTEGER', 'amount_usd': 'DECIMAL(14,2)'})`;
      const counts = `WITH due AS (SELECT receiver_id, due_us, settled_us FROM (${ENRICHED(invoices, tables)})),
          -- Invoices that fell due before the first payment the dataset holds are unknown, not late:
          -- a payments history starts some day.
          coverage AS (SELECT min(paid_at) AS since FROM ${tables.payments}),
          -- Months through a plain TIMESTAMP: date_trunc of a TIMESTAMPTZ goes through ICU's calendar row by row.
          by_due AS (
            SELECT receiver_id, date_trunc('month', make_timestamp(due_us))::DATE AS month, count(*) AS due_invoices,
              count(*) FILTER (WHERE settled_us IS NULL OR settled_us > due_us) AS late_invoices
            FROM due WHERE due_us < epoch_us($cutoff::TIMESTAMPTZ) AND due_us >= (SELECT epoch_us(since) FROM coverage) GROUP BY ALL
          ),
          by_settled AS (
            SELECT receiver_id, date_trunc('month', make_timestamp(settled_us))::DATE AS month, count(*) AS settled_late,
              sum(settled_us - due_us) / 86400000000 AS days_late
            FROM due WHERE settled_us > due_us AND settled_us < epoch_us($cutoff::TIMESTAMPTZ) GROUP BY ALL
          )
        SELECT receiver_id, month, coalesce(due_invoices, 0) AS due_invoices, coalesce(late_invoices, 0) AS late_invoices,
          coalesce(settled_late, 0) AS settled_late, coalesce(days_late, 0) AS days_late
        FROM by_due FULL JOIN by_settled USING (receiver_id, month)
        ORDER BY receiver_id, month`;
      return duck.session(
        async (s) => {
          // COPY takes no parameters: the counts go through a temporary table (gone with the session).
          await s.connection.run(`CREATE TEMP TABLE receiver_payment_months AS ${counts}`, values, types);
          await s.run(`COPY receiver_payment_months TO '${file.replaceAll("'", "''")}' (FORMAT csv, HEADER false)`);
          const [summary] = await s.all<{ rows: string; due: string }>(
            `SELECT count(*)::VARCHAR AS rows, coalesce(sum(due_invoices), 0)::VARCHAR AS due FROM receiver_payment_months`,
          );
          return { rows: Number(summary!.rows), dueInvoices: Number(summary!.due), cutoffMonth, fingerprint: fingerprintOf(tables, cutoffMonth) };
        },
        { timeoutMs, label: 'receiver_payments' },
      );
    },
  };
}
