import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { LIST, listValue, VARCHAR, BIGINT } from '@duckdb/node-api';
import { utcMonth, type Duck, type DuckSession } from '../duckdb/duckdb.js';
import { RAW_SCHEMA } from './manifest.js';

/** A file written locally, before it is uploaded. */
export interface WrittenFile {
  readonly file: string;
  readonly month: string;
  readonly rows: number;
  readonly bytes: number;
}

// RETURN_STATS: DuckDB says which files it wrote, with rows and bytes (no reading them back).
// zstd at level 1, not its default 3: faster to write, for files barely larger that DuckDB reads alike.
const PARQUET = `FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 122880, RETURN_STATS true`;
const MONTH_OF = utcMonth('issue_date');
const CSV_COLUMNS = `{${Object.entries(RAW_SCHEMA).map(([name, type]) => `'${name}': '${type}'`).join(', ')}}`;
const ROLLUP_AGGREGATES = `count(*)::BIGINT AS invoices, sum(amount_usd)::DECIMAL(38,2) AS total_usd, min(amount_usd) AS min_usd, max(amount_usd) AS max_usd`;

/**
 * DuckDB's part of the export: CSV from Postgres to Parquet partitioned by month (sorted by
 * issuer, so one customer's rows are found from row-group statistics), and the per-customer
 * monthly rollups. Paths here are the gateway's own staging and cache files, never keys.
 */
export interface LakeWriter {
  /** Raw files by month from a CSV of invoices, under `dir/month=YYYY-MM/`. */
  rawByMonth(csv: string, dir: string): Promise<WrittenFile[]>;
  /** Rollups (issuer and receiver) of each month's raw files, under `dir/<role>/month=YYYY-MM/`. */
  rollups(monthFiles: ReadonlyMap<string, readonly string[]>, dir: string): Promise<{ issuer: WrittenFile[]; receiver: WrittenFile[] }>;
  /** The months (YYYY-MM) of the given invoices in these raw files. */
  monthsOf(rawFiles: readonly string[], invoiceIds: readonly string[]): Promise<string[]>;
}

export function createLakeWriter(duck: Duck, timeoutMs: number): LakeWriter {
  const session = <T>(label: string, work: (s: DuckSession) => Promise<T>) => duck.session(work, { timeoutMs, label });
  return {
    rawByMonth: (csv, dir) =>
      session('lake_raw_by_month', async (s) => {
        // Sorted output needs insertion order kept (off by default here, to save memory).
        await s.run('SET preserve_insertion_order = true');
        return written(
          await s.all<FileStats>(
            `COPY (SELECT *, ${MONTH_OF} AS month FROM read_csv($1, columns = ${CSV_COLUMNS}, header = false, auto_detect = false)
                   ORDER BY issuer_id, issue_date, invoice_id)
             TO '${quote(dir)}' (${PARQUET}, PARTITION_BY (month), OVERWRITE_OR_IGNORE true)`,
            [csv],
          ),
        );
      }),

    rollups: (monthFiles, dir) =>
      session('lake_rollups', async (s) => {
        // Each month's files are grouped on their own, under the month they are known to hold
        // (a parameter): the month computed from every row's date was most of the rollups' time
        // at 10,000,000 rows.
        const months = [...monthFiles].filter(([, files]) => files.length > 0);
        if (months.length === 0) return { issuer: [], receiver: [] };
        await mkdir(dir, { recursive: true });
        await s.run('SET preserve_insertion_order = true');
        const values = months.flatMap(([month, files]) => [month, listValue([...files])]);
        const types = months.flatMap(() => [VARCHAR, LIST(VARCHAR)]);
        const rollupOf = (role: 'issuer' | 'receiver') => {
          const byMonth = months.map(
            (_, i) => `SELECT $${2 * i + 1}::VARCHAR AS month, ${role}_id AS customer_id, ${ROLLUP_AGGREGATES} FROM read_parquet($${2 * i + 2}::VARCHAR[]) GROUP BY ALL`,
          );
          return s.all<FileStats>(
            `COPY (SELECT * FROM (${byMonth.join(' UNION ALL ')}) ORDER BY month, customer_id)
             TO '${quote(path.join(dir, role))}' (${PARQUET}, PARTITION_BY (month), WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE true)`,
            values,
            types,
          );
        };
        return { issuer: written(await rollupOf('issuer')), receiver: written(await rollupOf('receiver')) };
      }),

    monthsOf: async (rawFiles, invoiceIds) => {
      if (rawFiles.length === 0 || invoiceIds.length === 0) return [];
      return session('lake_months_of', async (s) => {
        const rows = await s.all<{ month: string }>(
          `SELECT DISTINCT ${MONTH_OF} AS month FROM read_parquet($1::VARCHAR[]) WHERE invoice_id = ANY($2)`,
          [listValue([...rawFiles]), listValue(invoiceIds.map((id) => BigInt(id)))],
          [LIST(VARCHAR), LIST(BIGINT)],
        );
        return rows.map((r) => r.month);
      });
    },
  };
}

/** What COPY ... (RETURN_STATS) says of each file it wrote. */
interface FileStats {
  readonly filename: string;
  readonly count: string;
  readonly file_size_bytes: string;
}

/** The files DuckDB wrote under dir/month=YYYY-MM/, with their row counts, by month. */
function written(stats: readonly FileStats[]): WrittenFile[] {
  return stats
    .map((f) => {
      const month = /[/\\]month=(\d{4}-\d{2})[/\\][^/\\]+$/.exec(f.filename)?.[1];
      if (!month) throw new Error('DuckDB wrote a file outside the month partitions');
      return { file: f.filename, month, rows: Number(f.count), bytes: Number(f.file_size_bytes) };
    })
    .sort((a, b) => a.month.localeCompare(b.month) || a.file.localeCompare(b.file));
}

/** A directory of the gateway's own, written into COPY ... TO (which takes no parameter there). */
function quote(dir: string): string {
  if (/['\\]/.test(dir)) throw new Error('staging directories must not contain quotes or backslashes');
  return dir;
}
