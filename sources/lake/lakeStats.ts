import { BIGINT, INTEGER, LIST, listValue, VARCHAR } from '@duckdb/node-api';
import { namedParameters, utcMonth, type Duck, type DuckSession } from '../duckdb/duckdb.js';
import type { ObjectCache } from '../objectStore/objectCache.js';
import type { ObjectStore } from '../objectStore/objectStore.js';
import { keysetSql, type LiveGroups, type StatsGroup, type StatsQuery } from '../postgres/statsStore.js';
import type { HeldPageKey, HeldPages } from './heldPages.js';
import type { LakeManifest } from './manifest.js';
import type { GroupKey, PageBounds } from './pageBounds.js';
import { mergePage } from './pageMerge.js';
import type { WindowTable, WindowTables } from './windowTables.js';

export interface LakeStatsInput {
  readonly manifest: LakeManifest;
  readonly months: readonly string[];
  readonly query: StatsQuery;
  /** Invoices whose lake version is stale (updated or deleted since the export). */
  readonly changedIds: readonly string[];
  /** The live invoices, grouped by (month, customer) in Postgres: what it adds to the lake. */
  readonly live: LiveGroups;
  /**
   * Every group of the answer in order, not the page, when the window's groups are held and
   * number at most this (with the live ones): the pages after this one are slices of it.
   */
  readonly whole?: number;
  /**
   * A page in customer order: a customer by which at least the page's groups of the held table
   * follow its cursor (see PageBounds). No held group of a later customer can reach the page,
   * so they are not read (the table is stored in customer order: DuckDB skips their row groups).
   */
  readonly upTo?: number;
}

/** The page (or every group, when `whole`), as `pageRecords` reads it. */
export interface LakePage {
  readonly records: string;
  /** Invoices over every group of the answer. */
  readonly allInvoices: string;
  readonly whole: boolean;
}

export interface LakeStatsDeps {
  readonly duck: Duck;
  readonly cache: ObjectCache;
  readonly store: ObjectStore;
  readonly windowTables: WindowTables;
  /** Marked along the held tables a page in customer order reads. */
  readonly pageBounds: PageBounds;
  /** Pages in customer order read from held tables, kept (their tables never change). */
  readonly heldPages: HeldPages;
  readonly timeoutMs: number;
}

/** The manifest's entries of the window's months. */
const windowMonths = (manifest: LakeManifest, months: readonly string[]) => {
  const wanted = new Set(months);
  return manifest.months.filter((m) => wanted.has(m.month));
};

/** A held table's id: rollup objects never change under their key and ETag, so the files name its content. */
const tableId = (query: StatsQuery, rollupFiles: readonly { key: string; etag: string }[]) =>
  JSON.stringify([query.role, query.granularity, rollupFiles.map((f) => [f.key, f.etag])]);

/** The id of the held table of the window's groups a query reads (see WindowTables). */
export function heldTableId(manifest: LakeManifest, months: readonly string[], query: StatsQuery): string {
  return tableId(query, windowMonths(manifest, months).map((m) => m.rollups[query.role]));
}

/** The columns every `g` relation below has; `month` is '' in TOTAL groups, so that it can be a join key. */
const GROUP_COLUMNS = `customer_id, month, invoices, total, min_usd, max_usd`;
const aggregates = `sum(invoices)::BIGINT AS invoices, sum(total_usd)::DECIMAL(38,2) AS total, min(min_usd) AS min_usd, max(max_usd) AS max_usd`;

/**
 * invoiceStats over the lake plus the live groups from Postgres, combined, ordered and paged in
 * DuckDB (a page in customer order is combined in mergePage). When the lake holds no stale
 * invoice, the window's groups are kept in a DuckDB table (built once from the months' rollups)
 * and only the groups that have live invoices are summed again; otherwise the rollups are read,
 * with the groups that hold a stale invoice recomputed from the raw files without it.
 */
export async function lakeStats(deps: LakeStatsDeps, input: LakeStatsInput): Promise<LakePage> {
  const { query } = input;
  const months = windowMonths(input.manifest, input.months);
  const fetch = (f: { key: string; etag: string }) => deps.cache.fetch(deps.store, f.key, f.etag);
  const rollupFiles = months.map((m) => m.rollups[query.role]);
  const party = query.role === 'issuer' ? 'issuer_id' : 'receiver_id';
  const monthKey = query.granularity === 'MONTH' ? 'month' : `''`;
  const keyset = keysetSql(query.orderBy, { value: '$after_value::DECIMAL(38,2)', customer: '$after_customer::INTEGER', month: '$after_month::VARCHAR' });

  const parameters = namedParameters();
  const { bind } = parameters;
  const strings = (list: readonly string[]) => listValue([...list]);
  const hasLive = input.live.groups > 0;
  const field = (n: number, type: string) => `split_part(record, ' ', ${n})::${type}`;
  const live = hasLive
    ? `SELECT ${field(1, 'VARCHAR')} AS month, ${field(2, 'INTEGER')} AS customer_id, ${field(3, 'BIGINT')} AS invoices,
        ${field(4, input.live.small ? 'DECIMAL(18,2)' : 'DECIMAL(38,2)')}::DECIMAL(38,2) AS total_usd,
        ${field(5, 'DECIMAL(14,2)')} AS min_usd, ${field(6, 'DECIMAL(14,2)')} AS max_usd
      FROM (SELECT unnest(string_split(${bind('live', input.live.records, VARCHAR)}, ',')) AS record)`
    : `SELECT NULL::VARCHAR AS month, NULL::INTEGER AS customer_id, NULL::BIGINT AS invoices, NULL::DECIMAL(38,2) AS total_usd,
        NULL::DECIMAL(14,2) AS min_usd, NULL::DECIMAL(14,2) AS max_usd WHERE false`;

  /** Held groups `w` and live groups `l` (lg) of one (customer, month), added up. */
  const merged = (held: string) => `
        SELECT customer_id, month, coalesce(w.invoices, 0) + coalesce(l.invoices, 0) AS invoices,
          (coalesce(w.total, 0) + coalesce(l.total, 0))::DECIMAL(38,2) AS total,
          least(coalesce(w.min_usd, l.min_usd), coalesce(l.min_usd, w.min_usd)) AS min_usd,
          greatest(coalesce(w.max_usd, l.max_usd), coalesce(l.max_usd, w.max_usd)) AS max_usd
        FROM ${held} w FULL OUTER JOIN lg l USING (customer_id, month)`;
  const liveGroups = `live AS (${live}),
        lg AS (SELECT customer_id, ${monthKey} AS month, ${aggregates} FROM live GROUP BY ALL)`;

  /**
   * The window's groups from a held table, each group live invoices touch added to. Only those
   * go through the outer join, the others are taken as they are (see README, "Which engine").
   * Only the asked customers' groups are merged: DuckDB does not push the filter below the outer
   * join, and merging every group of a 12-month window by month for one customer took 60 ms at 10M.
   */
  const fromTable = (table: string) => {
    const held = filter === '' ? table : `(SELECT * FROM ${table} ${filter})`;
    if (!hasLive) return `g AS (SELECT ${GROUP_COLUMNS} FROM ${table})`;
    return `${liveGroups}, g AS (
        SELECT ${GROUP_COLUMNS} FROM ${held} ANTI JOIN lg USING (customer_id, month)
        UNION ALL ${merged(`(SELECT * FROM ${held} SEMI JOIN lg USING (customer_id, month))`)})`;
  };

  /**
   * A page in customer order: the held table's first `limit` groups past the cursor (only up to
   * the bound, when there is one), read from DuckDB; a first page is kept (see HeldPages).
   */
  const customerPage = async (s: DuckSession, table: WindowTable, key: HeldPageKey | undefined): Promise<string> => {
    // Rows of customers past the bound are not read (the table is stored in customer order: DuckDB skips their row groups).
    const held =
      input.upTo === undefined
        ? table.name
        : `(SELECT * FROM ${table.name} WHERE customer_id <= ${bind('up_to', input.upTo, INTEGER)} AND ($after_customer::INTEGER IS NULL OR customer_id >= $after_customer::INTEGER))`;
    // The answer's invoice count is known (the table's and the live ones, see customerPageAnswer): none is counted here.
    const sql = statement(`g AS (SELECT ${GROUP_COLUMNS} FROM ${held})`, 'NULL');
    const { values, types } = parameters.used(sql);
    const [page] = await s.allNamed<{ records: string }>(sql, values, types);
    if (key) deps.heldPages.set(key, { records: page!.records, invoices: table.invoices });
    return page!.records;
  };
  /** Without a customer filter the answer's invoices are the held table's plus the live ones: no pass over every group to count them. */
  const withLive = (tableInvoices: string) => String(BigInt(tableInvoices) + BigInt(input.live.invoices));
  /** The held groups of a page in customer order merged with the live ones. */
  const customerPageAnswer = (heldRecords: string, tableInvoices: string): LakePage => ({
    records: mergePage(heldRecords, input.live.records, { byMonth: query.granularity === 'MONTH', after: cursorKey(query.after), limit: query.limit }),
    allInvoices: withLive(tableInvoices),
    whole: false,
  });

  /** The window's groups from the rollup files, stale groups recomputed from the raw files. */
  const fromFiles = async () => {
    const rollups = await Promise.all(rollupFiles.map(fetch));
    const rollup =
      rollups.length > 0
        ? `SELECT month, customer_id, invoices, total_usd, min_usd, max_usd FROM read_parquet(${bind('rollups', strings(rollups), LIST(VARCHAR))})`
        : `SELECT * FROM live WHERE false`;
    let lake = `lake AS (SELECT * FROM rollup)`;
    if (input.changedIds.length > 0) {
      const raw = await Promise.all(months.flatMap((m) => m.raw.map(fetch)));
      const changed = bind('changed', listValue(input.changedIds.map((id) => BigInt(id))), LIST(BIGINT));
      lake = `raw AS (SELECT ${utcMonth('issue_date')} AS month, ${party} AS customer_id, invoice_id, amount_usd
            FROM read_parquet(${bind('raw', strings(raw), LIST(VARCHAR))})),
          stale AS (SELECT DISTINCT month, customer_id FROM raw WHERE invoice_id = ANY(${changed})),
          redone AS (
            SELECT month, customer_id, count(*)::BIGINT AS invoices, sum(amount_usd)::DECIMAL(38,2) AS total_usd,
              min(amount_usd) AS min_usd, max(amount_usd) AS max_usd
            FROM raw WHERE (month, customer_id) IN (SELECT month, customer_id FROM stale) AND NOT invoice_id = ANY(${changed})
            GROUP BY ALL),
          lake AS (SELECT * FROM rollup WHERE (month, customer_id) NOT IN (SELECT month, customer_id FROM stale) UNION ALL SELECT * FROM redone)`;
    }
    return `live AS (${live}), rollup AS (${rollup}), ${lake},
      parts AS (SELECT * FROM lake UNION ALL SELECT * FROM live),
      g AS (
        SELECT customer_id, ${monthKey} AS month, sum(invoices)::BIGINT AS invoices, sum(total_usd)::DECIMAL(38,2) AS total,
          min(min_usd) AS min_usd, max(max_usd) AS max_usd
        FROM parts GROUP BY ALL)`;
  };

  const filter = query.customerIds === null ? '' : `WHERE customer_id = ANY(${bind('customers', listValue([...query.customerIds]), LIST(INTEGER))})`;
  bind('after_value', query.after?.sortValue ?? null, VARCHAR);
  bind('after_customer', query.after?.customerId ?? null, INTEGER);
  bind('after_month', query.after?.month ?? '', VARCHAR);
  const limit = bind('limit', query.limit, BIGINT);
  /**
   * The answer's invoices over every group, counted here: over the groups, or, when the live
   * groups are only a page's (LiveGroups.partial), over the lake's part (`lake`) plus every live invoice.
   */
  const counted = (lake: string) =>
    input.live.partial
      ? `(SELECT coalesce(sum(invoices), 0) FROM ${lake} ${filter})::HUGEINT + ${bind('live_invoices', String(input.live.invoices), VARCHAR)}::HUGEINT`
      : 'sum(invoices) OVER ()';
  /**
   * `all`: the answer's invoices over every group (see `counted`). The
   * page comes back as one text of records (see pageRecords): one value to convert instead of
   * seven per row, which was most of a 10,000-row page's time in DuckDB's result reader.
   */
  const statement = (groups: string, all: string) => `WITH ${groups},
    ranked AS (SELECT ${GROUP_COLUMNS}, ${all} AS all_invoices FROM g ${filter})
    SELECT coalesce(string_agg(concat_ws(' ', customer_id, month, invoices, total, min_usd, max_usd), ',' ORDER BY ${keyset.orderBy}), '') AS records,
      coalesce(any_value(all_invoices)::VARCHAR, '0') AS "allInvoices"
    -- The page first, then the texts: DuckDB projects before a top-n, which would format every group.
    FROM (SELECT * FROM ranked WHERE ${keyset.where} ORDER BY ${keyset.orderBy} LIMIT ${limit}) AS ranked`;

  // A whole answer needs every live group (the caller asks for one or the other).
  if (input.whole !== undefined && input.live.partial) throw new Error('a whole answer from the live groups of one page');
  // Nothing stale: the window's groups may be held.
  const heldId = input.changedIds.length === 0 && rollupFiles.length > 0 ? tableId(query, rollupFiles) : undefined;
  const customerOrder = heldId !== undefined && query.orderBy === 'CUSTOMER_ASC' && query.customerIds === null;
  // A first page in customer order: its held groups read once (HeldPages), merged with its live
  // groups every time. (No whole answer is asked with a first page. Served so, the held table is
  // not marked as used: it may be dropped, and built again for another query.)
  const firstPage = customerOrder && query.after === null ? { table: heldId, limit: query.limit } : undefined;
  const kept = firstPage && deps.heldPages.get(firstPage);
  if (kept) return customerPageAnswer(kept.records, kept.invoices);

  return deps.duck.session(
    (s) => deps.windowTables.using(async (take) => {
      let table: WindowTable | undefined;
      if (heldId) {
        const rows = rollupFiles.reduce((sum, f) => sum + f.rows, 0);
        table = await take(
          s,
          heldId,
          rows,
          // Stored in customer order: a page in that order then reads a row group or two (DuckDB
          // skips the others by their customer range) instead of a top-n over every group.
          (name) => `CREATE TABLE ${name} AS SELECT customer_id, ${monthKey} AS month, ${aggregates} FROM read_parquet($1) GROUP BY ALL ORDER BY customer_id, month`,
          () => Promise.all(rollupFiles.map(fetch)),
        );
        // Marked once per table, for later pages in customer order (the bound of their live groups).
        if (table && query.orderBy === 'CUSTOMER_ASC' && query.customerIds === null) await deps.pageBounds.mark(s, heldId, table);
      }
      const all = table && query.customerIds === null ? withLive(table.invoices) : undefined;
      // A whole answer: the window's groups are held, and with the live ones they fit `whole`.
      const whole = table !== undefined && input.whole !== undefined && table.rows + input.live.groups <= input.whole;
      if (table && whole) {
        bind('after_value', null, VARCHAR);
        bind('after_customer', null, INTEGER);
        bind('after_month', '', VARCHAR);
        bind('limit', table.rows + input.live.groups + 1, BIGINT);
      }
      if (table && customerOrder && !whole) return customerPageAnswer(await customerPage(s, table, firstPage), table.invoices);
      const sql = table
        ? statement(fromTable(table.name), all === undefined ? counted(table.name) : bind('all_invoices', all, VARCHAR))
        : statement(await fromFiles(), counted('lake'));
      // Only the parameters the statement uses are passed (DuckDB refuses others).
      const { values, types } = parameters.used(sql);
      const [page] = await s.allNamed<{ records: string; allInvoices: string }>(sql, values, types);
      return { records: page!.records, allInvoices: page!.allInvoices, whole };
    }),
    { timeoutMs: deps.timeoutMs, label: 'invoice_stats_lake' },
  );
}

/** A cursor's position as a key of the groups in customer order (month '' by TOTAL). */
export const cursorKey = (after: StatsQuery['after']): GroupKey | null => after && { customer: after.customerId, month: after.month ?? '' };

/** The groups of a page from its text: `customer month invoices total min max` per group (month empty in TOTAL groups), commas between. */
export function pageRecords(records: string, allInvoices: string): StatsGroup[] {
  return records === '' ? [] : groupsOf(records.split(','), allInvoices);
}

/** Groups from records as `pageRecords` reads them, one each. */
export function groupsOf(records: readonly string[], allInvoices: string): StatsGroup[] {
  return records.map((record) => {
    const [customer, month, invoices, totalUsd, minUsd, maxUsd] = record.split(' ') as [string, string, string, string, string, string];
    return { customerId: Number(customer), month: month === '' ? null : month, invoices, totalUsd, minUsd, maxUsd, allInvoices };
  });
}
