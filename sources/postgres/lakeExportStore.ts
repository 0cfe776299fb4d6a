import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import type pg from 'pg';
import { copyOut } from './copyOut.js';
import type { Database, Statement } from './database.js';

/** A change the export's snapshot saw, with the invoice's month now (null: deleted). */
export interface VisibleChange {
  readonly invoiceId: string;
  readonly changed: boolean;
  readonly month: string | null;
}

/** Which invoices to copy out. */
export type ExportSelection = { readonly all: true } | { readonly months: readonly string[] } | { readonly ids: readonly string[] };

/** One export's view of Postgres: a single REPEATABLE READ snapshot, held until it ends. */
export interface ExportSnapshot {
  /** pg_snapshot text: what the lake will hold exactly. */
  readonly snapshot: string;
  readonly exportedAt: string;
  /** The highest invoice id the snapshot sees ('0' when none): nothing above it is exported. */
  readonly maxInvoiceId: string;
  readonly generation: number;
  readonly manifestKey: string | null;
  /** lake_state's count of resets: the export switches the lake only if it is unchanged. */
  readonly resets: string;
  /** The feed has recorded changes since before this snapshot (its slot existed). */
  readonly recording: boolean;
  visibleChanges(): Promise<VisibleChange[]>;
  /** Months (YYYY-MM) with their invoice counts. */
  months(): Promise<{ month: string; rows: number }[]>;
  /** The planner's estimate of the invoices (for progress; 0 when the table was never analyzed). */
  estimatedRows(): Promise<number>;
  /** Writes the selected invoices to `file` as CSV (the raw schema's columns); returns the rows. */
  copyCsv(file: string, selection: ExportSelection, onRows?: (rows: number) => void): Promise<number>;
}

const MONTH = /^\d{4}-\d{2}$/;
const COLUMNS = `invoice_id, issue_date, issuer_id, receiver_id, amount_usd`;

const BEGIN: Statement = { name: 'lake_export_begin', text: 'BEGIN ISOLATION LEVEL REPEATABLE READ' };
const SNAPSHOT: Statement = {
  name: 'lake_export_snapshot',
  text: `SELECT pg_current_snapshot()::text AS snapshot, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "exportedAt",
      (SELECT coalesce(max(invoice_id), 0)::text FROM invoices) AS "maxInvoiceId", s.generation::int AS generation, s.manifest_key AS "manifestKey", s.resets::text AS resets, s.recording
    FROM lake_state s`,
};
/**
 * The changes the export's snapshot saw. Read outside that snapshot (after the feed has passed a
 * barrier written after it): the snapshot itself cannot see entries the recorder wrote later
 * for transactions it does see.
 */
const VISIBLE_CHANGES: Statement = {
  name: 'lake_export_visible_changes',
  text: `SELECT invoice_id::text AS "invoiceId", changed FROM lake_changes WHERE pg_visible_in_snapshot(xid, $1::pg_snapshot)`,
};
/** Where those invoices are in the snapshot (null: deleted). */
const CHANGED_MONTHS: Statement = {
  name: 'lake_export_changed_months',
  text: `SELECT invoice_id::text AS "invoiceId", to_char(date_trunc('month', issue_date AT TIME ZONE 'UTC'), 'YYYY-MM') AS month
    FROM invoices WHERE invoice_id = ANY($1::bigint[])`,
};

const MONTHS: Statement = {
  name: 'lake_export_months',
  text: `SELECT to_char(date_trunc('month', issue_date AT TIME ZONE 'UTC'), 'YYYY-MM') AS month, count(*)::int AS rows
    FROM invoices GROUP BY 1 ORDER BY 1`,
};
const ESTIMATED_ROWS: Statement = {
  name: 'lake_export_estimated_rows',
  text: `SELECT greatest(reltuples, 0)::float8 AS rows FROM pg_class WHERE oid = 'invoices'::regclass`,
};
const LOCK: Statement = { name: 'lake_export_lock', text: `SELECT pg_try_advisory_lock(hashtext('invoice-gateway:lake-export')) AS locked` };
const UNLOCK: Statement = { name: 'lake_export_unlock', text: `SELECT pg_advisory_unlock(hashtext('invoice-gateway:lake-export'))` };

/**
 * Taken first in the transaction that switches generations: the recorder's statement locks
 * lake_state before it writes lake_changes, so once this holds, every record is committed or
 * waits, and FINALIZE's snapshot (a later statement) sees every entry. In one statement that
 * waited for the lock, the snapshot was older than the record that held it: an entry whose
 * last change the record moved past the export's snapshot was missed by `kept`, and the lake
 * held a version of an invoice its entry said it could not hold.
 */
const LOCK_STATE: Statement = { name: 'lake_export_lock_state', text: `SELECT 1 FROM lake_state FOR UPDATE` };

/**
 * After the manifest is written: the changes the snapshot saw are in the lake now; the others
 * may be too (a row inserted before the snapshot and updated after it), so they count as
 * "may be in the lake". Only if no one reset the lake meanwhile (a TRUNCATE, a new slot): the
 * generation and the count of resets are those the export's snapshot read.
 */
const FINALIZE: Statement = {
  name: 'lake_export_finalize',
  text: `WITH state AS (
      UPDATE lake_state SET generation = $2, manifest_key = $3, exported_at = $4::timestamptz, exported_max_id = $6::bigint, exported_max_generation = $2
      WHERE generation = $5 AND resets = $7::bigint AND recording RETURNING generation
    ), removed AS (
      DELETE FROM lake_changes WHERE EXISTS (SELECT 1 FROM state) AND pg_visible_in_snapshot(xid, $1::pg_snapshot)
    ), kept AS (
      -- Above the highest id no version was visible to the snapshot: an invoice inserted since
      -- cannot be in the lake, and stays a fresh insert (read as a range, not excluded from the lake).
      UPDATE lake_changes SET changed = true
      WHERE EXISTS (SELECT 1 FROM state) AND NOT pg_visible_in_snapshot(xid, $1::pg_snapshot) AND NOT changed AND invoice_id <= $6::bigint
    )
    SELECT count(*)::int AS updated FROM state`,
};

/**
 * Runs `work` in an export snapshot, one exporter at a time across every gateway (an advisory
 * lock, not waited for: a busy exporter means this round is skipped). 'busy' when another has it.
 */
export async function withExportSnapshot<T>(db: Database, work: (snapshot: ExportSnapshot) => Promise<T>): Promise<T | 'busy'> {
  return db.withClient(async (client) => {
    const locked = (await client.query<{ locked: boolean }>(LOCK)).rows[0]!.locked;
    if (!locked) return 'busy';
    try {
      await client.query(BEGIN);
      try {
        await client.query(`SET LOCAL TimeZone = 'UTC'`);
        const [row] = (await client.query<Omit<ExportSnapshot, 'visibleChanges' | 'months' | 'estimatedRows' | 'copyCsv'>>(SNAPSHOT)).rows;
        const result = await work({
          ...row!,
          visibleChanges: async () => {
            const changes = await db.query<{ invoiceId: string; changed: boolean }>(VISIBLE_CHANGES, [row!.snapshot]);
            if (changes.length === 0) return [];
            const months = new Map(
              (await client.query<{ invoiceId: string; month: string }>({ ...CHANGED_MONTHS, values: [changes.map((c) => c.invoiceId)] })).rows.map((r) => [
                r.invoiceId,
                r.month,
              ]),
            );
            return changes.map((c) => ({ ...c, month: months.get(c.invoiceId) ?? null }));
          },
          months: async () => (await client.query<{ month: string; rows: number }>(MONTHS)).rows,
          estimatedRows: async () => (await client.query<{ rows: number }>(ESTIMATED_ROWS)).rows[0]?.rows ?? 0,
          copyCsv: (file, selection, onRows) => copyCsv(client, file, selection, onRows),
        });
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    } finally {
      await client.query(UNLOCK).catch(() => undefined);
    }
  });
}

export async function finalizeExport(
  db: Database,
  done: { snapshot: string; fromGeneration: number; resets: string; generation: number; manifestKey: string; exportedAt: string; maxInvoiceId: string },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.query(LOCK_STATE);
    const [row] = await tx.query<{ updated: number }>(FINALIZE, [
      done.snapshot,
      done.generation,
      done.manifestKey,
      done.exportedAt,
      done.fromGeneration,
      done.maxInvoiceId,
      done.resets,
    ]);
    return row!.updated === 1;
  });
}

async function copyCsv(client: pg.PoolClient, file: string, selection: ExportSelection, onRows?: (rows: number) => void): Promise<number> {
  let from = 'invoices';
  if ('ids' in selection) {
    // COPY takes no parameters: the ids go through a temporary table.
    await client.query(`CREATE TEMP TABLE IF NOT EXISTS lake_export_ids (invoice_id bigint PRIMARY KEY) ON COMMIT DROP`);
    await client.query(`TRUNCATE lake_export_ids`);
    await client.query(`INSERT INTO lake_export_ids SELECT DISTINCT unnest($1::bigint[])`, [selection.ids]);
    from = 'invoices JOIN lake_export_ids USING (invoice_id)';
  }
  let where = '';
  if ('months' in selection) {
    // Checked, then written into the statement (COPY takes no parameters).
    if (!selection.months.every((m) => MONTH.test(m))) throw new Error('months must be YYYY-MM');
    const ranges = selection.months.map(
      (m) => `(issue_date >= '${m}-01 00:00:00+00'::timestamptz AND issue_date < '${m}-01 00:00:00+00'::timestamptz + interval '1 month')`,
    );
    where = `WHERE ${ranges.join(' OR ') || 'false'}`;
  }
  let rows = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) rows++;
      onRows?.(rows);
      done(null, chunk);
    },
  });
  await copyOut(client, `COPY (SELECT ${COLUMNS} FROM ${from} ${where}) TO STDOUT (FORMAT csv)`, createWriteStream(file), count);
  return rows;
}
