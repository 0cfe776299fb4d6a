import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import copyStreams from 'pg-copy-streams';
import { copyOut } from './copyOut.js';
import type { Database, Statement } from './database.js';

const { from: copyFrom } = copyStreams;

/**
 * The risk model's view of how receivers pay (migrations/007): per receiver and month, counts
 * made in the lake and replaced here whole, so the scorer reads at most 12 rows a receiver.
 */
export interface ReceiverPaymentsStore {
  /** What the current rows were made from (null: never refreshed). */
  fingerprint(): Promise<string | null>;
  /**
   * Every invoice's (invoice_id, issue_date, receiver_id, amount_usd) as CSV, from one snapshot,
   * streamed to a file: 10M invoices never pass through the heap.
   */
  copyInvoices(file: string): Promise<void>;
  /**
   * Replaces every row with a CSV of (receiver_id, month, due_invoices, late_invoices,
   * settled_late, days_late), and the sums over all receivers by month, in one transaction:
   * scorers see the old rows or the new, never half.
   */
  replace(csvFile: string, fingerprint: string): Promise<number>;
}

const FINGERPRINT: Statement = { name: 'receiver_payments_fingerprint', text: `SELECT fingerprint FROM risk_receiver_payments_state` };
const CLEAR: Statement = { name: 'receiver_payments_clear', text: `DELETE FROM risk_receiver_payment_months` };
const CLEAR_ALL: Statement = { name: 'receiver_payments_clear_all', text: `DELETE FROM risk_payment_months` };
const SUM_ALL: Statement = {
  name: 'receiver_payments_sum_all',
  text: `INSERT INTO risk_payment_months (month, due_invoices, late_invoices, settled_late, days_late)
    SELECT month, sum(due_invoices), sum(late_invoices), sum(settled_late), sum(days_late) FROM risk_receiver_payment_months GROUP BY month`,
};
const RECORD: Statement = {
  name: 'receiver_payments_record',
  text: `INSERT INTO risk_receiver_payments_state (fingerprint, refreshed_at, receiver_months)
    SELECT $1, now(), count(*) FROM risk_receiver_payment_months
    ON CONFLICT (singleton) DO UPDATE SET fingerprint = excluded.fingerprint, refreshed_at = excluded.refreshed_at,
      receiver_months = excluded.receiver_months
    RETURNING receiver_months::float8 AS rows`,
};
const COPY_INVOICES = `COPY (SELECT invoice_id, issue_date, receiver_id, amount_usd FROM invoices) TO STDOUT (FORMAT csv)`;
const COPY = `COPY risk_receiver_payment_months (receiver_id, month, due_invoices, late_invoices, settled_late, days_late) FROM STDIN (FORMAT csv)`;

export function createReceiverPaymentsStore(db: Database): ReceiverPaymentsStore {
  return {
    async fingerprint() {
      const [row] = await db.query<{ fingerprint: string }>(FINGERPRINT);
      return row?.fingerprint ?? null;
    },

    async copyInvoices(file) {
      await db.withClient(async (client) => {
        await client.query('BEGIN READ ONLY');
        try {
          // issue_date's text in UTC, which DuckDB reads back exactly.
          await client.query(`SET LOCAL TIME ZONE 'UTC'`);
          await copyOut(client, COPY_INVOICES, createWriteStream(file));
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      });
    },

    async replace(csvFile, fingerprint) {
      return db.withClient(async (client) => {
        await client.query('BEGIN');
        try {
          await client.query(CLEAR.text);
          await client.query(CLEAR_ALL.text);
          await pipeline(createReadStream(csvFile), client.query(copyFrom(COPY)));
          await client.query(SUM_ALL.text);
          const { rows } = await client.query<{ rows: number }>(RECORD.text, [fingerprint]);
          await client.query('COMMIT');
          return rows[0]!.rows;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      });
    },
  };
}
