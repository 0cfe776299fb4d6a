/**
 * The lake's layout and its manifest: the one object that says which files make up the lake at
 * a generation, written after every file it names, so a reader never sees a half-written export.
 *
 *   invoices/month=YYYY-MM/g<generation>-<part>.parquet     raw rows, sorted by issuer, date, id
 *   rollups/<issuer|receiver>/month=YYYY-MM/g<generation>.parquet   per customer and month
 *   manifests/<generation>.json                           this document, one per generation
 *   manifests/latest.json                                 a copy of the newest, for other readers
 */

export const LAKE_FORMAT = 'invoice-gateway-lake/1';

export interface LakeFile {
  readonly key: string;
  readonly etag: string;
  readonly rows: number;
  readonly bytes: number;
}

export interface LakeMonth {
  /** YYYY-MM (UTC). */
  readonly month: string;
  readonly rows: number;
  /** Raw invoices: a base file, and files appended since it was written. */
  readonly raw: readonly LakeFile[];
  /** Per (customer, month): invoices, total, min and max, by issuer and by receiver. */
  readonly rollups: { readonly issuer: LakeFile; readonly receiver: LakeFile };
}

export interface LakeManifest {
  readonly format: typeof LAKE_FORMAT;
  readonly generation: number;
  /** When the export's snapshot was taken (ISO 8601 UTC). */
  readonly exportedAt: string;
  /** The Postgres snapshot (pg_snapshot text) the files were read in: exactly these rows. */
  readonly snapshot: string;
  readonly rows: number;
  readonly months: readonly LakeMonth[];
  /** The columns of the raw files, for readers other than the gateway. */
  readonly schema: { readonly raw: Record<string, string>; readonly rollup: Record<string, string> };
}

export const RAW_SCHEMA = {
  invoice_id: 'BIGINT',
  issue_date: 'TIMESTAMPTZ',
  issuer_id: 'INTEGER',
  receiver_id: 'INTEGER',
  amount_usd: 'DECIMAL(14,2)',
} as const;

export const ROLLUP_SCHEMA = {
  month: 'VARCHAR',
  customer_id: 'INTEGER',
  invoices: 'BIGINT',
  total_usd: 'DECIMAL(38,2)',
  min_usd: 'DECIMAL(14,2)',
  max_usd: 'DECIMAL(14,2)',
} as const;

export const lakeKeys = {
  raw: (month: string, generation: number, part: string) => `invoices/month=${month}/g${generation}-${part}.parquet`,
  rollup: (role: 'issuer' | 'receiver', month: string, generation: number) => `rollups/${role}/month=${month}/g${generation}.parquet`,
  manifest: (generation: number) => `manifests/${String(generation).padStart(12, '0')}.json`,
  latest: 'manifests/latest.json',
};

export function parseManifest(bytes: Buffer | string): LakeManifest {
  const manifest = JSON.parse(String(bytes)) as LakeManifest;
  if (manifest.format !== LAKE_FORMAT) throw new Error(`not a lake manifest of format ${LAKE_FORMAT}`);
  return manifest;
}

/** Every object a manifest refers to (itself excluded). */
export function manifestKeys(manifest: LakeManifest): string[] {
  return manifest.months.flatMap((m) => [...m.raw.map((f) => f.key), m.rollups.issuer.key, m.rollups.receiver.key]);
}
