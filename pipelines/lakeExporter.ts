import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { processGone } from '../core/processes.js';
import { settleAll } from '../core/settleAll.js';
import type { ObjectCache } from '../sources/objectStore/objectCache.js';
import { ObjectNotFoundError, type ObjectStore } from '../sources/objectStore/objectStore.js';
import type { LakeWriter, WrittenFile } from '../sources/lake/lakeWriter.js';
import { LAKE_FORMAT, lakeKeys, manifestKeys, parseManifest, RAW_SCHEMA, ROLLUP_SCHEMA, type LakeFile, type LakeManifest, type LakeMonth } from '../sources/lake/manifest.js';
import type { Database } from '../sources/postgres/database.js';
import type { LakeStore } from '../sources/postgres/lakeStore.js';
import { finalizeExport, withExportSnapshot, type ExportSnapshot } from '../sources/postgres/lakeExportStore.js';

export interface LakeExporterOptions {
  readonly db: Database;
  readonly store: ObjectStore;
  readonly cache: ObjectCache;
  readonly writer: LakeWriter;
  /** Local scratch space for CSV and Parquet before upload. */
  readonly stagingDir: string;
  readonly logger: Logger;
  /** What the change feed has recorded: an export waits until it covers its snapshot. */
  readonly lakeStore: LakeStore;
  /** How long an export waits for the change feed to record what its snapshot sees. */
  readonly feedWaitMs: number;
  /** Aborted when the gateway stops: an export waiting for the feed gives up at once. */
  readonly signal?: AbortSignal;
}

export type ExportOutcome =
  | { readonly kind: 'exported'; readonly generation: number; readonly rows: number; readonly rewritten: number; readonly appended: number; readonly seconds: number }
  | { readonly kind: 'unchanged' }
  | { readonly kind: 'busy' }
  | { readonly kind: 'feed behind' }
  | { readonly kind: 'not recording' };

export interface ExportProgress {
  (phase: 'copy' | 'parquet' | 'upload', done: number, total: number): void;
}

/** A month's raw files after an export: kept ones (in the store) and new ones (local, to upload). */
interface MonthFiles {
  raw: { local: string; file?: LakeFile; written?: WrittenFile }[];
}

/** Months uploaded at once: object stores answer each PUT after a round trip, a local one copies. */
const UPLOAD_MONTHS_AT_ONCE = 4;
/** A month with this many files (a base and appended ones) is rewritten as one. */
const COMPACT_AT_FILES = 8;
/**
 * Objects named by no manifest of the last KEEP_GENERATIONS, nor by one replaced less than
 * ORPHAN_GRACE_MS ago, and older than that, are removed.
 */
const KEEP_GENERATIONS = 3;
const ORPHAN_GRACE_MS = 10 * 60_000;

/**
 * Exports invoices to the lake. The first export (and one after a reset) copies everything;
 * later ones rewrite only the months whose invoices changed (an update or delete), append a file
 * of new invoices to the months that only grew, and compact a month once it has many files.
 * Objects are written first under new names, then the manifest, then Postgres switches to it:
 * a crash at any point leaves the previous generation whole and readable.
 */
export async function exportLake(options: LakeExporterOptions, onProgress: ExportProgress = () => undefined, { full = false } = {}): Promise<ExportOutcome> {
  const started = performance.now();
  const run = (whole: boolean) => withExportSnapshot(options.db, (snapshot) => exportIn(snapshot, options, onProgress, whole, started));
  let outcome: Awaited<ReturnType<typeof run>>;
  try {
    outcome = await run(full);
  } catch (err) {
    if (full || !(err instanceof ObjectNotFoundError)) throw err;
    // A file the last generation names went after readPrevious looked: the months it held
    // cannot be rewritten from it.
    options.logger.warn({ err: err.message }, 'an object of the last export is gone from the object store; exporting everything again');
    outcome = await run(true);
  }
  if (outcome === 'busy') return { kind: outcome };
  if (outcome.kind !== 'exported') return outcome;
  await removeOrphans(options).catch((err: unknown) => options.logger.warn({ err }, 'removing old lake objects failed; next export tries again'));
  return outcome;
}

async function exportIn(snapshot: ExportSnapshot, options: LakeExporterOptions, onProgress: ExportProgress, full: boolean, started: number): Promise<ExportOutcome> {
  if (!snapshot.recording) return { kind: 'not recording' };
  const { store, writer, logger } = options;
  const previous = snapshot.generation > 0 && snapshot.manifestKey && !full ? await readPrevious(store, snapshot.manifestKey, logger) : undefined;
  // Every change the snapshot sees must be in lake_changes before the export plans from it and,
  // when it finishes, removes the entries it has taken in. A full export plans nothing from them:
  // it only waits before it switches, and the feed catches up while it copies (after a restart
  // the feed may be decoding seconds of WAL, e.g. a risk backfill's).
  const feedRecorded = () => options.lakeStore.recordedUpToNow(options.feedWaitMs, options.signal);
  const recordedMeanwhile = previous ? undefined : feedRecorded().catch(() => false);
  if (previous && !(await feedRecorded())) return { kind: 'feed behind' };
  const staging = path.join(options.stagingDir, `export-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  await removeLeftStaging(options.stagingDir);
  await mkdir(staging, { recursive: true });
  try {
    const plan = await planExport(snapshot, previous, options);
    if (!plan) return { kind: 'unchanged' };
    // Above every manifest in the store too: after a reset (TRUNCATE, a new slot) lake_state starts
    // again from 0, and reusing a number would overwrite an old manifest that orphan removal, which
    // keeps the highest generations, then prefers to the current one. Listed only when exporting:
    // most ticks find nothing to export.
    const generation = Math.max(snapshot.generation, previous?.generation ?? 0, await highestStoredGeneration(store)) + 1;

    // Months rewritten whole (the first export: all of them), then invoices appended.
    const written: WrittenFile[] = [];
    let copied = 0;
    // Milliseconds per phase, in the export's log line: where a slow export spends its time.
    const phases = { copyMs: 0, parquetMs: 0, rollupsMs: 0, uploadMs: 0 };
    const timed = async <T>(phase: keyof typeof phases, work: () => Promise<T>): Promise<T> => {
      const start = performance.now();
      try {
        return await work();
      } finally {
        phases[phase] += Math.round(performance.now() - start);
      }
    };
    const copy = async (name: string, selection: Parameters<ExportSnapshot['copyCsv']>[1], expected: number) => {
      const csv = path.join(staging, `${name}.csv`);
      const rows = await timed('copyMs', () => snapshot.copyCsv(csv, selection, (n) => onProgress('copy', copied + n, plan.rows)));
      copied += rows;
      if (rows === 0 && expected === 0) return [];
      onProgress('parquet', copied, plan.rows);
      const files = await timed('parquetMs', () => writer.rawByMonth(csv, path.join(staging, name)));
      await rm(csv, { force: true });
      return files;
    };
    if (plan.all) written.push(...(await copy('rewrite', { all: true }, plan.rows)));
    else if (plan.rewrite.length > 0) written.push(...(await copy('rewrite', { months: plan.rewrite }, plan.rows)));
    const appended = plan.appendIds.length > 0 ? await copy('append', { ids: plan.appendIds }, plan.appendIds.length) : [];

    // Each touched month: its files now, and rollups over all of them.
    const months = new Map<string, MonthFiles>();
    for (const file of written) months.set(file.month, { raw: [...(months.get(file.month)?.raw ?? []), { local: file.file, written: file }] });
    for (const file of appended) {
      let month = months.get(file.month);
      if (!month) {
        const kept = previous?.months.find((m) => m.month === file.month)?.raw ?? [];
        month = { raw: await Promise.all(kept.map(async (f) => ({ local: await options.cache.fetch(store, f.key, f.etag), file: f }))) };
        months.set(file.month, month);
      }
      month.raw.push({ local: file.file, written: file });
    }
    const rollups = await timed('rollupsMs', () => writer.rollups(new Map([...months].map(([m, v]) => [m, v.raw.map((r) => r.local)])), path.join(staging, 'rollups')));

    // Upload everything new, then the manifest that names it.
    const uploads = [...written, ...appended, ...rollups.issuer, ...rollups.receiver].length;
    let uploaded = 0;
    // Set at the first failed upload: nothing more is begun, in any month.
    let failed = false;
    const upload = async (key: string, file: WrittenFile): Promise<LakeFile> => {
      if (failed) throw new Error('an upload of this export failed');
      let etag: string;
      try {
        etag = await store.putFile(key, file.file);
      } catch (err) {
        failed = true;
        throw err;
      }
      onProgress('upload', ++uploaded, uploads);
      return { key, etag, rows: file.rows, bytes: file.bytes };
    };
    // Months upload side by side (a few at a time); within one, its parts keep their order.
    const uploadMonth = async ([month, { raw }]: [string, MonthFiles]): Promise<LakeMonth> => {
      let part = 0;
      const files: LakeFile[] = [];
      for (const entry of raw) files.push(entry.file ?? (await upload(lakeKeys.raw(month, generation, String(part++)), entry.written!)));
      const rollupOf = (role: 'issuer' | 'receiver') => rollups[role].find((f) => f.month === month)!;
      const [issuer, receiver] = await settleAll([
        upload(lakeKeys.rollup('issuer', month, generation), rollupOf('issuer')),
        upload(lakeKeys.rollup('receiver', month, generation), rollupOf('receiver')),
      ]);
      return { month, rows: files.reduce((sum, f) => sum + f.rows, 0), raw: files, rollups: { issuer, receiver } };
    };
    const pending = [...months];
    const touched: LakeMonth[] = [];
    // After a failure no upload is begun, and the export fails once those under way have ended
    // (with the first failure): the staging directory they read goes when it returns.
    await timed('uploadMs', () =>
      settleAll(
        Array.from({ length: Math.min(UPLOAD_MONTHS_AT_ONCE, pending.length) }, async () => {
          for (let next = pending.shift(); next && !failed; next = pending.shift()) touched.push(await uploadMonth(next));
        }),
      ),
    );
    const kept = (previous?.months ?? []).filter((m) => !months.has(m.month) && !plan.emptied.includes(m.month));
    const all = [...kept, ...touched].sort((a, b) => a.month.localeCompare(b.month));
    const manifest: LakeManifest = {
      format: LAKE_FORMAT,
      generation,
      exportedAt: snapshot.exportedAt,
      snapshot: snapshot.snapshot,
      rows: all.reduce((sum, m) => sum + m.rows, 0),
      months: all,
      schema: { raw: { ...RAW_SCHEMA }, rollup: { ...ROLLUP_SCHEMA } },
    };
    // Before the manifest names the files: past its wait (a long export), asked once more.
    if (recordedMeanwhile && !(await recordedMeanwhile) && !(await feedRecorded())) return { kind: 'feed behind' };
    const manifestKey = lakeKeys.manifest(generation);
    const body = JSON.stringify(manifest);
    await store.putBytes(manifestKey, body);
    const switched = await finalizeExport(options.db, {
      snapshot: snapshot.snapshot,
      fromGeneration: snapshot.generation,
      resets: snapshot.resets,
      generation,
      manifestKey,
      exportedAt: snapshot.exportedAt,
      maxInvoiceId: snapshot.maxInvoiceId,
    });
    if (!switched) {
      logger.warn({ generation }, 'lake export discarded: the lake was reset while it ran (a TRUNCATE, or a new feed slot)');
      return { kind: 'unchanged' };
    }
    // For readers other than the gateway (DuckDB CLI, Spark, Trino): best effort.
    await store.putBytes(lakeKeys.latest, body).catch((err: unknown) => logger.warn({ err }, 'writing manifests/latest.json failed'));
    const seconds = (performance.now() - started) / 1000;
    const outcome = { kind: 'exported' as const, generation, rows: copied, rewritten: written.length, appended: appended.length, seconds };
    logger.info({ ...outcome, rowsPerSecond: Math.round(copied / seconds), ...phases }, 'lake exported');
    return outcome;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

interface ExportPlan {
  /** Every invoice, whatever its month (a first or full export). */
  readonly all: boolean;
  /** Months to write whole. */
  readonly rewrite: string[];
  /** Invoices to append to months that only grew. */
  readonly appendIds: string[];
  /** Months that no longer hold any invoice. */
  readonly emptied: string[];
  /** Rows expected, for progress. */
  readonly rows: number;
}

/**
 * The manifest the last export wrote, or undefined when the store no longer has it or an object
 * it names (a bucket emptied or replaced, DATA_DIR moved, a lifecycle rule, a cleanup by hand):
 * the export then writes the lake afresh instead of failing every interval. The months an export
 * does not rewrite pass into its manifest as they are, so each must still be there, or every
 * reader of the lake would answer from Postgres for good.
 */
async function readPrevious(store: LakeExporterOptions['store'], key: string, logger: LakeExporterOptions['logger']): Promise<LakeManifest | undefined> {
  let manifest: LakeManifest;
  try {
    manifest = parseManifest(await store.read(key));
  } catch (err) {
    if (!(err instanceof ObjectNotFoundError)) throw err;
    logger.warn({ manifest: key }, 'the last export\'s manifest is gone from the object store; exporting everything again');
    return undefined;
  }
  const [raw, rollups] = await Promise.all([store.list('invoices/'), store.list('rollups/')]);
  const stored = new Set([...raw, ...rollups].map((o) => o.key));
  if (manifestKeys(manifest).every((object) => stored.has(object))) return manifest;
  logger.warn({ manifest: key }, 'objects of the last export are gone from the object store; exporting everything again');
  return undefined;
}

async function planExport(snapshot: ExportSnapshot, previous: LakeManifest | undefined, options: LakeExporterOptions): Promise<ExportPlan | undefined> {
  // Counting by month reads the whole table (a sixth of a first export's time): its estimate
  // is enough for the progress bar.
  if (!previous) return { all: true, rewrite: [], appendIds: [], emptied: [], rows: await snapshot.estimatedRows() };
  const months = await snapshot.months();
  const count = new Map(months.map((m) => [m.month, m.rows]));
  const changes = await snapshot.visibleChanges();
  if (changes.length === 0) return undefined;
  const rewrite = new Set<string>();
  // An updated or deleted invoice: its month now, and the month the lake holds it in.
  const changedIds = changes.filter((c) => c.changed).map((c) => c.invoiceId);
  for (const c of changes) if (c.changed && c.month) rewrite.add(c.month);
  if (changedIds.length > 0) {
    const files = await Promise.all(previous.months.flatMap((m) => m.raw.map((f) => options.cache.fetch(options.store, f.key, f.etag))));
    for (const month of await options.writer.monthsOf(files, changedIds)) rewrite.add(month);
  }
  for (const m of previous.months) if (m.raw.length >= COMPACT_AT_FILES) rewrite.add(m.month);
  const appendIds = changes.filter((c) => !c.changed && c.month && !rewrite.has(c.month)).map((c) => c.invoiceId);
  const emptied = [...rewrite].filter((m) => !count.has(m));
  const rewriteLive = [...rewrite].filter((m) => count.has(m)).sort();
  return {
    all: false,
    rewrite: rewriteLive,
    appendIds,
    emptied,
    rows: rewriteLive.reduce((sum, m) => sum + (count.get(m) ?? 0), 0) + appendIds.length,
  };
}

/** Staging directories of exports whose process is gone (killed mid-export): their copies and Parquet files. */
async function removeLeftStaging(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const pid = /^export-(\d+)$/.exec(name)?.[1];
    if (pid && processGone(Number(pid))) await rm(path.join(dir, name), { recursive: true, force: true });
  }
}

const MANIFEST_KEY = /\/(\d{12})\.json$/;

async function highestStoredGeneration(store: LakeExporterOptions['store']): Promise<number> {
  let highest = 0;
  for (const { key } of await store.list('manifests/')) highest = Math.max(highest, Number(MANIFEST_KEY.exec(key)?.[1] ?? 0));
  return highest;
}

/**
 * Removes objects no recent manifest names. The last generations stay, and so does every one
 * replaced less than ORPHAN_GRACE_MS ago (its successor's manifest is that young): a query or an
 * outside reader that began on it finishes on it, however many exports ran since (three used
 * to take a week-old file a reader had just been handed). Anything young stays too (an export
 * still uploading).
 */
async function removeOrphans({ store, logger }: LakeExporterOptions): Promise<void> {
  const manifests = (await store.list('manifests/')).filter((o) => MANIFEST_KEY.test(o.key)).sort((a, b) => a.key.localeCompare(b.key));
  const now = Date.now();
  const recent = manifests.filter(
    (_, i) => i >= manifests.length - KEEP_GENERATIONS || now - manifests[i + 1]!.lastModified.getTime() <= ORPHAN_GRACE_MS,
  );
  if (recent.length === 0) return;
  const keep = new Set<string>(recent.map((m) => m.key));
  for (const m of recent) for (const key of manifestKeys(parseManifest(await store.read(m.key)))) keep.add(key);
  const old = [...(await store.list('invoices/')), ...(await store.list('rollups/')), ...manifests].filter(
    (o) => !keep.has(o.key) && now - o.lastModified.getTime() > ORPHAN_GRACE_MS,
  );
  if (old.length === 0) return;
  await store.delete(old.map((o) => o.key));
  logger.info({ objects: old.length }, 'old lake objects removed');
}
