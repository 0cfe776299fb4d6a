import { createHash } from 'node:crypto';
import { LIST, VARCHAR, listValue } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { createDropQueue, type Duck } from '../duckdb/duckdb.js';
import type { ObjectCache } from '../objectStore/objectCache.js';
import type { ObjectStore, StoredObject } from '../objectStore/objectStore.js';

/**
 * The users' own data in the lake, beside the invoices: customer profiles (JSON lines from a CRM),
 * payment events (JSON lines, a folder per day) and credit ratings (Parquet snapshots). Files are
 * listed with the SDK (listings cached for a few seconds), fetched into the local cache, and read
 * by DuckDB into a table per dataset and file set: the same files are parsed once; a new or
 * replaced object (a new ETag) makes a new table on the next query. Payments arrive as a new file
 * a day (or an hour): when files were only added, the new table is the last one plus the new
 * files' events, so a landing costs its own lines, not every payment again.
 *
 * Read with explicit types, tolerating drift: a number as a string ("1,200"), an id as a number
 * or a string of digits, a missing or differently-typed field (null for that field). A line that
 * is not a JSON object, or an object without the key that identifies it, is skipped and counted.
 */
export interface DatasetPrefixes {
  readonly profiles: string;
  readonly payments: string;
  readonly ratings: string;
}

export interface DatasetWarning {
  readonly code: string;
  readonly message: string;
}

/** DuckDB tables holding the datasets as of the current file listing. */
export interface LoadedDatasets {
  readonly profiles: string;
  /** Distinct payments (by payment_id). */
  readonly payments: string;
  /** Per invoice with a payment: `paid` (the sum), `events`, `last_paid_at`. */
  readonly paidInvoices: string;
  /** The running sums of invoices paid by several events: `invoice_id`, `paid_at`, `cumulative`. */
  readonly paymentSteps: string;
  /** Every snapshot of every rating. */
  readonly ratings: string;
  /** Each customer's rating in its latest snapshot: `customer_id`, `rating`. */
  readonly currentRatings: string;
  /**
   * Each dataset's content, named after its objects and their ETags (equal content, equal
   * version, in any process): for what is derived from the tables and kept.
   */
  readonly versions: Readonly<Record<DatasetKind, string>>;
  readonly warnings: readonly DatasetWarning[];
}

export interface Datasets {
  /** All three, for a query that joins them. */
  load(): Promise<LoadedDatasets>;
  /** One dataset's table, for a lookup that needs only it. */
  table(kind: DatasetKind): Promise<string>;
}

export interface DatasetsOptions {
  readonly store: ObjectStore;
  readonly cache: ObjectCache;
  readonly duck: Duck;
  readonly prefixes: DatasetPrefixes;
  /** How long a listing of the bucket is reused. */
  readonly listingTtlMs: number;
  /** How long a replaced table is kept for queries still reading it (default 60 s). */
  readonly dropAfterMs?: number;
  readonly timeoutMs: number;
  /** Name the objects in warnings (a development aid: keys may say more than a client should see). */
  readonly warningKeys: boolean;
  readonly logger: Logger;
}

export type DatasetKind = 'profiles' | 'payments' | 'ratings';
type Kind = DatasetKind;

/** What one object held: lines not JSON objects, records without their key, usable records. */
interface ObjectCounts {
  readonly key: string;
  readonly malformed: number;
  readonly unusable: number;
  readonly usable: number;
}

interface Loaded {
  readonly table: string;
  /** The derived tables, once a joining query first asked for them. */
  derived?: Promise<void>;
  readonly warnings: DatasetWarning[];
  /** Per object read (`key`, NUL, ETag): its counts. A later build that only adds objects reuses them. */
  readonly objects: ReadonlyMap<string, ObjectCounts>;
}

/** Table functions over the local copies; `$files` is the list of paths. */
const LINES = `read_csv($files, columns = {'line': 'VARCHAR'}, header = false, delim = '\\x1e', quote = '', escape = '',
    auto_detect = false, filename = true, strict_mode = false, null_padding = false)`;

/** A JSON string field: the text of a string, number or boolean; null for objects, arrays and null. */
const text = (field: string) => `CASE WHEN json_type(doc, '$.${field}') IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN') THEN json_extract_string(doc, '$.${field}') END`;
/** A whole number written as a number or as text with thousands separators. */
const whole = (field: string, type: string) => `TRY_CAST(replace(replace(${text(field)}, ',', ''), '_', '') AS ${type})`;
/** An id: a number or a string of digits. */
const id = (field: string) => `CASE WHEN regexp_full_match(trim(${text(field)}), '\\d{1,18}') THEN trim(${text(field)})::BIGINT END`;
const money = (field: string) => `TRY_CAST(replace(${text(field)}, ',', '') AS DECIMAL(14,2))`;
const time = (field: string) => `TRY_CAST(${text(field)} AS TIMESTAMPTZ)`;

const PARSED_LINES = `SELECT filename, TRY_CAST(line AS JSON) AS doc FROM ${LINES} WHERE trim(line) <> ''`;

/**
 * Of the events with one payment_id, the one that counts: the earliest, ties by content. It does
 * not depend on which file came first, so adding files to a table gives what reading them all would.
 */
const FIRST_PAYMENT = `row_number() OVER (PARTITION BY payment_id ORDER BY paid_at, amount_usd, method NULLS LAST, invoice_id) = 1`;

/**
 * Payments after files were added: the last table's events whose payment_id no new event
 * repeats, as they were; for the repeated ones, the first of the old and the new events.
 */
const ADD_PAYMENTS = (base: string) => `WITH fresh AS (
    SELECT * EXCLUDE (filename, malformed) FROM staged WHERE NOT malformed AND NOT (${SQL.payments.missing}))
  SELECT * FROM ${base} ANTI JOIN fresh USING (payment_id)
  UNION ALL BY NAME
  SELECT * FROM (SELECT * FROM ${base} SEMI JOIN fresh USING (payment_id) UNION ALL BY NAME SELECT * FROM fresh) QUALIFY ${FIRST_PAYMENT}`;

/**
 * Per dataset: `staged`, every record read once with its typed fields, `malformed` (not a JSON
 * object) and `complete` (has what identifies it); `keep`, the records the dataset holds.
 * The dataset's table and the warnings' counts both come from the one staged read.
 */
const SQL: Record<Kind, { staged: string; keep: string; missing: string }> = {
  profiles: {
    staged: `WITH docs AS (${PARSED_LINES})
      SELECT filename, json_type(doc) IS DISTINCT FROM 'OBJECT' AS malformed, ${id('customer_id')} AS customer_id,
        ${text('legal_name')} AS legal_name,
        ${text('industry')} AS industry,
        CASE WHEN regexp_full_match(upper(trim(${text('country')})), '[A-Z]{2}') THEN upper(trim(${text('country')})) END AS country,
        CASE WHEN json_type(doc, '$.address') = 'OBJECT' THEN json_extract(doc, '$.address')::VARCHAR END AS address,
        CASE WHEN json_type(doc, '$.tags') = 'ARRAY' THEN list_filter(json_extract_string(doc, '$.tags[*]'), (t) -> t IS NOT NULL) END AS tags,
        CASE WHEN json_type(doc, '$.contacts') = 'ARRAY' THEN json_extract(doc, '$.contacts')::VARCHAR END AS contacts,
        ${whole('employees', 'INTEGER')} AS employees,
        ${whole('payment_terms_days', 'INTEGER')} AS payment_terms_days,
        ${time('updated_at')} AS updated_at,
        doc::VARCHAR AS raw
      FROM docs`,
    keep: `SELECT * EXCLUDE (filename, malformed) FROM staged WHERE NOT malformed AND customer_id IS NOT NULL
      QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC NULLS LAST, filename DESC) = 1`,
    missing: 'customer_id IS NULL',
  },
  payments: {
    staged: `WITH docs AS (${PARSED_LINES})
      SELECT filename, json_type(doc) IS DISTINCT FROM 'OBJECT' AS malformed, ${text('payment_id')} AS payment_id, ${id('invoice_id')} AS invoice_id,
        ${time('paid_at')} AS paid_at, ${money('amount_usd')} AS amount_usd, ${text('method')} AS method
      FROM docs`,
    keep: `SELECT * EXCLUDE (filename, malformed) FROM staged
      WHERE NOT malformed AND payment_id IS NOT NULL AND invoice_id IS NOT NULL AND amount_usd IS NOT NULL AND paid_at IS NOT NULL
      QUALIFY ${FIRST_PAYMENT}`,
    missing: 'payment_id IS NULL OR invoice_id IS NULL OR amount_usd IS NULL OR paid_at IS NULL',
  },
  ratings: {
    staged: `SELECT filename, false AS malformed, TRY_CAST(TRY_CAST(customer_id AS VARCHAR) AS BIGINT) AS customer_id,
        CASE WHEN upper(trim(rating::VARCHAR)) IN ('AAA','AA','A','BBB','BB','B','CCC','CC','C','D') THEN upper(trim(rating::VARCHAR)) END AS rating,
        TRY_CAST(score AS DOUBLE) AS score, TRY_CAST(as_of AS TIMESTAMPTZ) AS as_of
      FROM read_parquet($files, union_by_name = true, filename = true)`,
    keep: `SELECT * EXCLUDE (filename, malformed) FROM staged WHERE customer_id IS NOT NULL AND as_of IS NOT NULL`,
    missing: 'customer_id IS NULL OR as_of IS NULL',
  },
};

const PATTERNS: Record<Kind, RegExp> = {
  profiles: /\.jsonl(\.gz)?$/,
  payments: /^date=\d{4}-\d{2}-\d{2}\/[^/]+\.jsonl(\.gz)?$/,
  ratings: /\.parquet$/,
};

const LABELS: Record<Kind, string> = { profiles: 'customer profile', payments: 'payment event', ratings: 'credit rating' };

/**
 * Tables derived from a dataset's table, made once per table for the joins that would otherwise
 * redo them on every query (in order: a later one may read an earlier one). Settling an invoice
 * is the first payment that brings its running sum to the amount: with one payment, that payment.
 */
const DERIVED: Record<Kind, Record<string, (table: string) => string>> = {
  profiles: {},
  payments: {
    paid: (t) => `SELECT invoice_id, sum(amount_usd)::DECIMAL(38,2) AS paid, count(*)::INTEGER AS events, max(paid_at) AS last_paid_at FROM ${t} GROUP BY invoice_id`,
    steps: (t) => `SELECT invoice_id, paid_at, sum(amount_usd) OVER (PARTITION BY invoice_id ORDER BY paid_at, payment_id) AS cumulative
      FROM ${t} SEMI JOIN (SELECT invoice_id FROM ${derivedName(t, 'paid')} WHERE events > 1) USING (invoice_id)`,
  },
  ratings: {
    current: (t) => `SELECT customer_id, arg_max(rating, as_of) AS rating FROM ${t} GROUP BY customer_id`,
  },
};
const derivedName = (table: string, name: string) => `${table}_${name}`;
const derivedTables = (kind: Kind, table: string) => Object.keys(DERIVED[kind]).map((name) => derivedName(table, name));

/** Numbers table names: unique in the process, whatever DuckDB instance several Datasets share. */
let sequence = 0;

/** Older tables stay this long after a newer file set replaced them: queries may still read them. */
const DROP_AFTER_MS = 60_000;

export function createDatasets(options: DatasetsOptions): Datasets {
  const listings = new Map<Kind, { at: number; objects: Promise<StoredObject[]> }>();
  const tables = new Map<string, Promise<Loaded>>();
  const current = new Map<Kind, string>();
  /** The last build started per dataset: the next one may add to it. */
  const latest = new Map<Kind, Promise<Loaded>>();

  const list = (kind: Kind): Promise<StoredObject[]> => {
    const cached = listings.get(kind);
    if (cached && Date.now() - cached.at < options.listingTtlMs) return cached.objects;
    const prefix = options.prefixes[kind];
    const objects = options.store.list(prefix).then((all) => all.filter((o) => PATTERNS[kind].test(o.key.slice(prefix.length))).sort((a, b) => a.key.localeCompare(b.key)));
    listings.set(kind, { at: Date.now(), objects });
    objects.catch(() => listings.delete(kind));
    return objects;
  };

  // Tables no signature names any more, whose DROP has not run yet.
  const unnamed = createDropQueue();
  const dropUnnamed = () =>
    options.duck.session((s) => unnamed.drain(s), { timeoutMs: 10_000, label: 'dataset_drop' }).catch(() => undefined);

  /** Drops a replaced table a while after its successor is built: queries may still read it. */
  const retire = (kind: Kind, signature: string) => {
    const old = tables.get(signature);
    setTimeout(() => {
      if (current.get(kind) === signature) return;
      tables.delete(signature);
      void old?.then(
        (t) => unnamed.add(...derivedTables(kind, t.table), t.table),
        () => undefined,
      ).then(dropUnnamed);
    }, options.dropAfterMs ?? DROP_AFTER_MS).unref();
  };

  const loadKind = async (kind: Kind): Promise<{ signature: string; loaded: Loaded }> => {
    const objects = await list(kind);
    const signature = signatureOf(kind, objects);
    let loaded = tables.get(signature);
    if (!loaded) {
      const base = latest.get(kind)?.catch(() => undefined);
      loaded = base ? base.then((b) => build(kind, objects, `ds_${kind}_${signature}_${++sequence}`, b)) : build(kind, objects, `ds_${kind}_${signature}_${++sequence}`);
      tables.set(signature, loaded);
      latest.set(kind, loaded);
      loaded.catch(() => tables.delete(signature));
    }
    // Current even when its table was still held (the files went back to an earlier set within
    // DROP_AFTER_MS): that table's pending drop then sees it current, and keeps it.
    const previous = current.get(kind);
    if (previous !== signature) {
      current.set(kind, signature);
      if (previous) void loaded.then(() => retire(kind, previous)).catch(() => undefined);
    }
    return { signature, loaded: await loaded };
  };

  const build = async (kind: Kind, objects: StoredObject[], table: string, base?: Loaded): Promise<Loaded> => {
    const idOf = (o: StoredObject) => `${o.key}\u0000${o.etag}`;
    const wanted = new Set(objects.map(idOf));
    // Only added objects (none replaced or removed): the last table plus what they hold.
    const adding = kind === 'payments' && base !== undefined && base.objects.size > 0 && [...base.objects.keys()].every((id) => wanted.has(id));
    const reading = adding ? objects.filter((o) => !base!.objects.has(idOf(o))) : objects;
    const files = await Promise.all(reading.map((o) => options.cache.fetch(options.store, o.key, o.etag)));
    const objectOf = new Map(files.map((f, i) => [f, reading[i]!]));
    const counts = new Map<string, ObjectCounts>(adding ? base!.objects : []);
    for (const o of reading) counts.set(idOf(o), { key: o.key, malformed: 0, unusable: 0, usable: 0 });
    const unreadable: string[] = [];
    let kept = 0;
    // Its CREATE may have run before what failed: the table is queued to be dropped.
    const failed = (err: unknown) => {
      unnamed.add(...derivedTables(kind, table), table);
      throw err;
    };
    await options.duck.session(
      async (s) => {
        // Files DuckDB cannot read at all (a corrupt Parquet file) are left out and reported.
        let readable = files;
        if (kind === 'ratings') {
          readable = [];
          for (const file of files) {
            try {
              await s.all(`SELECT count(*) FROM read_parquet($1::VARCHAR[])`, [listValue([file])], [LIST(VARCHAR)]);
              readable.push(file);
            } catch {
              unreadable.push(objectOf.get(file)!.key);
            }
          }
        }
        if (readable.length === 0) {
          await s.run(adding ? `CREATE TABLE ${table} AS SELECT * FROM ${base!.table}` : EMPTY[kind](table));
        } else {
          await s.allNamed(`CREATE TEMP TABLE staged AS ${SQL[kind].staged}`, { files: listValue(readable) }, { files: LIST(VARCHAR) });
          await s.run(`CREATE TABLE ${table} AS ${adding ? ADD_PAYMENTS(base!.table) : SQL[kind].keep}`);
          const perFile = await s.all<{ filename: string; malformed: number; unusable: number; usable: number }>(
            `SELECT filename, count(*) FILTER (WHERE malformed)::INTEGER AS malformed, count(*) FILTER (WHERE NOT malformed AND (${SQL[kind].missing}))::INTEGER AS unusable,
               count(*) FILTER (WHERE NOT malformed AND NOT (${SQL[kind].missing}))::INTEGER AS usable
             FROM staged GROUP BY filename`,
          );
          for (const row of perFile) {
            const object = objectOf.get(row.filename);
            if (object) counts.set(idOf(object), { key: object.key, malformed: Number(row.malformed), unusable: Number(row.unusable), usable: Number(row.usable) });
          }
          await s.run('DROP TABLE staged');
        }
        const [size] = await s.all<{ kept: string }>(`SELECT count(*)::VARCHAR AS kept FROM ${table}`);
        kept = Number(size!.kept);
      },
      { timeoutMs: options.timeoutMs, label: `dataset_${kind}` },
    ).catch(failed);
    options.logger.debug({ dataset: kind, files: objects.length, read: reading.length, added: adding, table }, 'dataset loaded');
    return { table, objects: counts, warnings: warningsOf(kind, [...counts.values()], kept, unreadable, options.warningKeys) };
  };

  /** Makes the derived tables of a built table once; a failure is retried by the next query. */
  const derive = (kind: Kind, loaded: Loaded): Promise<void> => {
    if (Object.keys(DERIVED[kind]).length === 0) return Promise.resolve();
    loaded.derived ??= options.duck
      .session(
        async (s) => {
          for (const [name, sql] of Object.entries(DERIVED[kind])) await s.run(`CREATE TABLE IF NOT EXISTS ${derivedName(loaded.table, name)} AS ${sql(loaded.table)}`);
        },
        { timeoutMs: options.timeoutMs, label: `dataset_${kind}_derived` },
      )
      .catch((err: unknown) => {
        loaded.derived = undefined;
        throw err;
      });
    return loaded.derived;
  };

  return {
    async load() {
      // Tables a failed build or drop left: dropped in a session of their own, beside this load.
      if (unnamed.size > 0) void dropUnnamed();
      const kinds = await Promise.all([loadKind('profiles'), loadKind('payments'), loadKind('ratings')]);
      const [profiles, payments, ratings] = kinds.map((k) => k.loaded) as [Loaded, Loaded, Loaded];
      await Promise.all([derive('payments', payments), derive('ratings', ratings)]);
      return {
        profiles: profiles.table,
        payments: payments.table,
        paidInvoices: derivedName(payments.table, 'paid'),
        paymentSteps: derivedName(payments.table, 'steps'),
        ratings: ratings.table,
        currentRatings: derivedName(ratings.table, 'current'),
        versions: { profiles: kinds[0].signature, payments: kinds[1].signature, ratings: kinds[2].signature },
        warnings: [...profiles.warnings, ...payments.warnings, ...ratings.warnings],
      };
    },
    table: async (kind) => (await loadKind(kind)).loaded.table,
  };
}

function signatureOf(kind: Kind, objects: readonly StoredObject[]): string {
  return createHash('sha256')
    .update(kind)
    .update(objects.map((o) => `${o.key}\u0000${o.etag}`).join('\n'))
    .digest('hex')
    .slice(0, 16);
}

/** The dataset's warnings from its objects' counts: totals, and the objects' keys only when allowed. */
function warningsOf(kind: Kind, counts: readonly ObjectCounts[], kept: number, unreadable: readonly string[], withKeys: boolean): DatasetWarning[] {
  const warnings: DatasetWarning[] = [];
  if (unreadable.length > 0) warnings.push(fileWarning(kind, 'SOURCE_UNREADABLE', 'object could not be read as Parquet and was skipped', unreadable, withKeys));
  const sum = (field: 'malformed' | 'unusable' | 'usable') => counts.reduce((n, c) => n + c[field], 0);
  const keys = (field: 'malformed' | 'unusable') => counts.filter((c) => c[field] > 0).map((c) => c.key);
  if (sum('malformed') > 0) {
    warnings.push(fileWarning(kind, 'SOURCE_MALFORMED', `${sum('malformed')} line(s) that are not a JSON object were skipped`, keys('malformed'), withKeys));
  }
  if (sum('unusable') > 0) {
    const what = kind === 'payments' ? 'without a readable payment_id, invoice_id, amount_usd or paid_at' : kind === 'profiles' ? 'without a readable customer_id' : 'without a readable customer_id or as_of';
    warnings.push(fileWarning(kind, 'SOURCE_INCOMPLETE', `${sum('unusable')} record(s) ${what} were skipped`, keys('unusable'), withKeys));
  }
  // Profiles and ratings keep several records of a customer on purpose; payments repeat by delivery.
  const duplicates = kind === 'payments' ? sum('usable') - kept : 0;
  if (duplicates > 0) warnings.push({ code: 'SOURCE_DUPLICATES', message: `${duplicates} repeated ${LABELS[kind]}(s) (the same payment_id) counted once` });
  return warnings;
}


const EMPTY: Record<Kind, (table: string) => string> = {
  profiles: (t) =>
    `CREATE TABLE IF NOT EXISTS ${t} (customer_id BIGINT, legal_name VARCHAR, industry VARCHAR, country VARCHAR, address VARCHAR, tags VARCHAR[], contacts VARCHAR, employees INTEGER, payment_terms_days INTEGER, updated_at TIMESTAMPTZ, raw VARCHAR)`,
  payments: (t) => `CREATE TABLE IF NOT EXISTS ${t} (payment_id VARCHAR, invoice_id BIGINT, paid_at TIMESTAMPTZ, amount_usd DECIMAL(14,2), method VARCHAR)`,
  ratings: (t) => `CREATE TABLE IF NOT EXISTS ${t} (customer_id BIGINT, rating VARCHAR, score DOUBLE, as_of TIMESTAMPTZ)`,
};

function fileWarning(kind: Kind, code: string, message: string, keys: readonly string[], withKeys: boolean): DatasetWarning {
  const where = withKeys ? ` (in ${keys.slice(0, 10).join(', ')}${keys.length > 10 ? ', ...' : ''})` : ` (in ${keys.length} object(s))`;
  return { code, message: `${LABELS[kind]}s: ${message}${where}` };
}
