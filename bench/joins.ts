import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { print, type DocumentNode } from 'graphql';
import pg from 'pg';
import { segmentCheck, type SegmentCheckRow, type SegmentDimension, type SegmentOrder } from '../test/fixtures/segmentCheck.js';
import {
  BenchCustomerSourcesDocument,
  BenchInvoicesPaidDocument,
  BenchSegmentStatsDocument,
  type BenchCustomerSourcesQuery,
  type BenchInvoicesPaidQuery,
  type BenchSegmentStatsQuery,
} from '../test/generated/graphql.js';
import { ensureBenchDatabase, type BenchData } from './benchDatabase.js';
import { landPayments, writeJoinsDatasets, type JoinsDatasets } from './joinsData.js';
import { defaultDuckMemory } from '../server/config.js';
import { dropSlot, feedSlot, startLakeGateway, waitForFeed, type ExportOutcome, type LakeGateway } from './lakeGateway.js';
import { ROOT } from './lookupSettings.js';
import { fmtMs, gitRevision, int, machine, mb } from './reportFormat.js';
import { median, percentile, timed } from './stats.js';
import { parseBenchOptions } from './options.js';

/*
 * `npm run bench -- joins` (issue 8): segmentStats through the gateway (DuckDB joining the lake's
 * invoices with profiles JSONL, payment events JSONL and rating snapshots in Parquet) against the
 * same join in Postgres over the same records loaded into tables (test/fixtures/segmentCheck.ts),
 * shape by shape, every answer checked equal; Customer.profile and rating for 100 customers; and
 * the time from a new payments file landing in the lake to the first answer that includes it.
 */

const usage =
  'usage: npm run bench -- joins [--invoices 10000000] [--customers 100000] [--repeat 5] ' +
  '[--database-url postgres://postgres@127.0.0.1:5432/ig_bench_joins] [--gateway-heap-mb 256] [--duckdb-memory 4GB]';

interface JoinsOptions {
  readonly invoices: number;
  readonly customers: number;
  readonly repeat: number;
  readonly databaseUrl: string;
  /** The gateway's --max-old-space-size: npm start's 256 unless raised to see past a heap limit. */
  readonly gatewayHeapMb: number;
  /** DUCKDB_MEMORY_LIMIT; empty: the gateway's default (defaultDuckMemory). */
  readonly duckdbMemory: string;
}

function parseOptions(argv: string[]): JoinsOptions {
  const { text, whole } = parseBenchOptions(
    argv,
    { invoices: '10000000', customers: '100000', repeat: '5', 'database-url': 'postgres://postgres@127.0.0.1:5432/ig_bench_joins', 'gateway-heap-mb': '256', 'duckdb-memory': '' },
    usage,
  );
  return {
    invoices: whole('invoices', 1000), customers: whole('customers', 100), repeat: whole('repeat', 1),
    databaseUrl: text('database-url'), gatewayHeapMb: whole('gateway-heap-mb', 64), duckdbMemory: text('duckdb-memory'),
  };
}

/** The issue's goals. */
const GOAL_SPEED_UP = 10;
const GOAL_VISIBLE_MS = 5000;
const LOOKUP_CUSTOMERS = 100;
const LANDED_INVOICES = 100;
/** A landed file not visible after this long counts as never seen. */
const LANDING_TIMEOUT_MS = 120_000;
const POLL_MS = 50;
/**
 * The gateway's limit per analytics query, raised from its 30 s default so a slow answer is
 * measured rather than cut (its Postgres steps included: the analytics pool's statement timeout).
 */
const ANALYTICS_TIMEOUT_MS = 300_000;

// ---------------------------------------------------------------------------------------------
// The shapes.

interface Shape {
  readonly name: string;
  readonly dimensions: SegmentDimension[];
  readonly months: number;
  readonly orderBy: SegmentOrder;
  readonly first: number;
  /** Every group in one page (the check would miss groups past it); else the first page only. */
  readonly whole: boolean;
}

const SHAPES: readonly Shape[] = [
  { name: 'issuer industry x month, 12 months', dimensions: ['ISSUER_INDUSTRY', 'MONTH'], months: 12, orderBy: 'TOTAL_DESC', first: 1000, whole: true },
  { name: 'receiver country x rating (outstanding, late share), 12 months', dimensions: ['RECEIVER_COUNTRY', 'RECEIVER_RATING'], months: 12, orderBy: 'TOTAL_DESC', first: 1000, whole: true },
  { name: 'top 100 receivers by outstanding, 12 months', dimensions: ['RECEIVER'], months: 12, orderBy: 'OUTSTANDING_DESC', first: 100, whole: false },
];

type GatewayRow = BenchSegmentStatsQuery['segmentStats']['rows'][number];
const FIELD: Record<SegmentDimension, keyof GatewayRow> = {
  ISSUER_INDUSTRY: 'issuerIndustry', ISSUER_COUNTRY: 'issuerCountry', ISSUER_RATING: 'issuerRating',
  RECEIVER_INDUSTRY: 'receiverIndustry', RECEIVER_COUNTRY: 'receiverCountry', RECEIVER_RATING: 'receiverRating',
  MONTH: 'month', ISSUER: 'issuerId', RECEIVER: 'receiverId',
};
const MEASURES = ['invoiceCount', 'totalUsd', 'paidUsd', 'outstandingUsd', 'avgDaysToPay', 'lateShare'] as const;

/** A row as compared: the shape's dimensions, then every measure. */
const gatewayKey = (shape: Shape, row: GatewayRow) => JSON.stringify([...shape.dimensions.map((d) => row[FIELD[d]]), ...MEASURES.map((m) => row[m])]);
const postgresKey = (shape: Shape, row: SegmentCheckRow) => JSON.stringify([...shape.dimensions.map((d) => row[d] ?? null), ...MEASURES.map((m) => row[m])]);

/** undefined when equal; else where and how they first differ. */
function difference(shape: Shape, gateway: readonly GatewayRow[], postgres: readonly SegmentCheckRow[]): string | undefined {
  const a = gateway.map((r) => gatewayKey(shape, r));
  const b = postgres.map((r) => postgresKey(shape, r));
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      const differing = a.filter((k, j) => k !== b[j]).length + Math.max(0, b.length - a.length);
      return `${a.length} rows from the gateway, ${b.length} from Postgres, ${differing} positions differ; first at row ${i + 1}: ` +
        `gateway ${a[i] ?? 'none'} vs Postgres ${b[i] ?? 'none'} ([${[...shape.dimensions, ...MEASURES].join(', ')}])`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Asking the gateway.

async function graphql<T>(url: string, document: DocumentNode, variables: Record<string, unknown>): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: print(document), variables }),
    signal: AbortSignal.timeout(300_000),
  });
  const body = (await response.json()) as { data?: T | null; errors?: { message: string; extensions?: { code?: string } }[] };
  if (body.errors?.length || !body.data) throw new Error(`gateway answered HTTP ${response.status}: ${JSON.stringify(body.errors ?? body).slice(0, 300)}`);
  return body.data;
}

const segmentStats = (url: string, shape: Shape) =>
  graphql<BenchSegmentStatsQuery>(url, BenchSegmentStatsDocument, { dimensions: shape.dimensions, months: shape.months, orderBy: shape.orderBy, first: shape.first }).then((d) => {
    if (shape.whole && d.segmentStats.pageInfo.hasNextPage) throw new Error(`more than ${shape.first} groups: the shape's first is too small for a whole answer`);
    return d.segmentStats;
  });

interface Measured {
  readonly name: string;
  readonly gatewayMs: number[];
  readonly postgresMs: number[];
  readonly equal: boolean;
  readonly mismatch?: string;
  readonly error?: string;
  readonly engines: string[];
  readonly warnings: string[];
  readonly rows?: number;
  readonly invoices?: string;
}

/**
 * Warm once (and check), then `repeat` timed runs alternating gateway and Postgres, each checked.
 * A failed gateway answer is recorded and Postgres still timed, so the table says what failed.
 */
async function measureShape(gateway: LakeGateway, sql: pg.Pool, shape: Shape, repeat: number): Promise<Measured> {
  const gatewayMs: number[] = [];
  const postgresMs: number[] = [];
  const engines = new Set<string>();
  const warnings = new Set<string>();
  let mismatch: string | undefined;
  let error: string | undefined;
  let last: BenchSegmentStatsQuery['segmentStats'] | undefined;
  for (let run = 0; run <= repeat; run++) {
    let g: BenchSegmentStatsQuery['segmentStats'] | undefined;
    let gMs = NaN;
    if (gateway.exited()) error ??= `the gateway process had exited (${gateway.exited()})`;
    else {
      try {
        [g, gMs] = await timed(() => segmentStats(gateway.url, shape));
      } catch (err) {
        error ??= (err as Error).message;
      }
    }
    const [p, pMs] = await timed(() => segmentCheck(sql, { ...shape, limit: shape.first, asOf: g?.freshness.asOf }));
    if (g) {
      mismatch ??= difference(shape, g.rows, p);
      for (const w of g.warnings) warnings.add(w.code);
      engines.add(g.freshness.engine);
      last = g;
    }
    if (run > 0) {
      if (g) gatewayMs.push(gMs);
      postgresMs.push(pMs);
    }
    console.error(`${shape.name}: gateway ${g ? `${fmtMs(gMs)} ms` : 'FAILED'}, Postgres ${fmtMs(pMs)} ms${run === 0 ? ' (warm-up)' : ''}`);
  }
  return {
    name: shape.name, gatewayMs, postgresMs, equal: !error && mismatch === undefined, mismatch, error, engines: [...engines], warnings: [...warnings],
    rows: last?.rows.length, invoices: last && `${int(last.freshness.lakeRows)} + ${int(last.freshness.liveRows)}`,
  };
}

/** The same lookup as Customer.profile and Customer.rating, in Postgres: the profile's jsonb by its id index, the latest snapshot. */
const CUSTOMER_SOURCES = `SELECT q.id::text AS id, p.doc->>'industry' AS industry, p.doc->>'country' AS country,
    (p.doc->>'payment_terms_days')::int AS "paymentTermsDays", r.rating, r.as_of AS "asOf"
  FROM unnest($1::int[]) WITH ORDINALITY AS q(id, n)
    JOIN customers c ON c.customer_id = q.id
    LEFT JOIN seg_profiles p ON (p.doc->>'customer_id')::int = q.id
    LEFT JOIN LATERAL (SELECT rating, as_of FROM seg_ratings r WHERE r.customer_id = q.id ORDER BY as_of DESC LIMIT 1) r ON true
  ORDER BY q.n`;

/** Customer.profile and rating for 100 customers: a different 100 in every run, spread over all. */
async function measureLookups(url: string, sql: pg.Pool, customers: readonly number[], repeat: number): Promise<Measured> {
  const name = `Customer.profile + rating, ${LOOKUP_CUSTOMERS} customers`;
  const gatewayMs: number[] = [];
  const postgresMs: number[] = [];
  let mismatch: string | undefined;
  const key = (r: { id: string; industry: string | null; country: string | null; paymentTermsDays: number | null; rating: string | null; asOf: number | null }) =>
    JSON.stringify([r.id, r.industry, r.country, r.paymentTermsDays, r.rating, r.asOf]);
  try {
    for (let run = 0; run <= repeat; run++) {
      const ids = Array.from({ length: LOOKUP_CUSTOMERS }, (_, k) => customers[(k * 997 + run * 7919) % customers.length]!);
      const [g, gMs] = await timed(() => graphql<BenchCustomerSourcesQuery>(url, BenchCustomerSourcesDocument, { ids: ids.map(String) }));
      const [p, pMs] = await timed(() => sql.query(CUSTOMER_SOURCES, [ids]));
      const got = g.customers.map((c) =>
        key({ id: c!.id, industry: c!.profile?.industry ?? null, country: c!.profile?.country ?? null, paymentTermsDays: c!.profile?.paymentTermsDays ?? null, rating: c!.rating?.rating ?? null, asOf: c!.rating ? Date.parse(c!.rating.asOf) : null }),
      );
      const want = p.rows.map((r) => key({ ...r, asOf: r.asOf ? (r.asOf as Date).getTime() : null }));
      const first = got.findIndex((k, i) => k !== want[i]);
      if (first >= 0 || got.length !== want.length) mismatch ??= `customer ${first + 1}: gateway ${got[first]} vs Postgres ${want[first]} ([id, industry, country, terms, rating, asOf])`;
      if (run > 0) {
        gatewayMs.push(gMs);
        postgresMs.push(pMs);
      }
    }
  } catch (err) {
    return { name, gatewayMs, postgresMs, equal: false, error: (err as Error).message, engines: [], warnings: [] };
  }
  return { name, gatewayMs, postgresMs, equal: mismatch === undefined, mismatch, engines: [], warnings: [], rows: LOOKUP_CUSTOMERS };
}

interface Landing {
  readonly visibleMs: number[];
  readonly timeouts: number;
  readonly wrong?: string;
  readonly error?: string;
  readonly landed: { rows: [string, string, string, string][] }[];
}

/**
 * New payments files, one at a time, each paying LANDED_INVOICES unpaid invoices in full. The
 * gateway is asked all along (every POLL_MS, as a busy gateway is), the landing comes at a
 * different moment of its listing cache each time; timed from the file's rename into place to the
 * first answer showing those invoices paid (invoices(ids) { paidUsd }, through the payments loader).
 */
async function measureLanding(url: string, sql: pg.Pool, lakeDir: string, unpaid: readonly string[], count: number): Promise<Landing> {
  if (unpaid.length < count * LANDED_INVOICES) throw new Error(`only ${unpaid.length} unpaid invoices to land payments for`);
  const { rows: amounts } = await sql.query<{ id: string; amount: string }>(
    `SELECT invoice_id::text AS id, amount_usd::text AS amount FROM invoices WHERE invoice_id = ANY($1::bigint[]) ORDER BY invoice_id`,
    [unpaid.slice(0, count * LANDED_INVOICES)],
  );
  const paid = async (ids: string[]) => (await graphql<BenchInvoicesPaidQuery>(url, BenchInvoicesPaidDocument, { ids })).invoices;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const visibleMs: number[] = [];
  const landed: Landing['landed'] = [];
  let timeouts = 0;
  let wrong: string | undefined;
  let watched = amounts.slice(0, 10).map((a) => a.id);
  for (let n = 0; n < count; n++) {
    // Keep asking for a while first: 0.5 to 4 s, a different phase of the listing cache each time.
    const until = performance.now() + 500 + ((n * 1613) % 3500);
    while (performance.now() < until) {
      await paid(watched);
      await sleep(POLL_MS);
    }
    const batch = amounts.slice(n * LANDED_INVOICES, (n + 1) * LANDED_INVOICES);
    const before = await paid(batch.map((b) => b.id));
    if (before.some((i) => i!.paidUsd !== '0.00')) throw new Error('an invoice chosen as unpaid has payments before its file landed');
    const file = await landPayments(lakeDir, n + 1, batch);
    const started = performance.now();
    landed.push(file);
    watched = batch.map((b) => b.id);
    for (;;) {
      const answer = await paid(watched);
      if (answer.some((i) => i!.paidUsd !== '0.00')) {
        visibleMs.push(performance.now() - started);
        const off = answer.find((i, k) => i!.paidUsd !== batch[k]!.amount);
        if (off) wrong ??= `invoice ${off.id}: paidUsd ${off.paidUsd}, its landed payment ${batch.find((b) => b.id === off.id)!.amount}`;
        console.error(`landed ${file.key}: in an answer after ${fmtMs(visibleMs.at(-1)!)} ms`);
        break;
      }
      if (performance.now() - started > LANDING_TIMEOUT_MS) {
        timeouts++;
        console.error(`landed ${file.key}: not in any answer after ${LANDING_TIMEOUT_MS / 1000} s`);
        break;
      }
      await sleep(POLL_MS);
    }
  }
  return { visibleMs, timeouts, wrong, landed };
}

/** Each shape once more after the landings, with the landed payments added to Postgres's table too. */
async function checkAfterLanding(gateway: LakeGateway, sql: pg.Pool, landing: Landing): Promise<{ name: string; gatewayMs: number; problem?: string }[]> {
  if (gateway.exited()) return [];
  const url = gateway.url;
  for (const file of landing.landed) {
    for (const row of file.rows) await sql.query(`INSERT INTO seg_payments (payment_id, invoice_id, paid_at, amount) VALUES ($1, $2, $3, $4)`, row);
  }
  const results = [];
  for (const shape of SHAPES) {
    try {
      const [g, gMs] = await timed(() => segmentStats(url, shape));
      const p = await segmentCheck(sql, { ...shape, limit: shape.first, asOf: g.freshness.asOf });
      results.push({ name: shape.name, gatewayMs: gMs, problem: difference(shape, g.rows, p) });
    } catch (err) {
      results.push({ name: shape.name, gatewayMs: NaN, problem: `ERROR ${(err as Error).message}` });
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------

export async function joins(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  const data = await ensureBenchDatabase(options.databaseUrl, options, `${ROOT}dist/server/commands/seed.js`);
  const slot = feedSlot('joins', options.databaseUrl);
  const sql = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'ig-bench-joins-'));
  const lakeDir = path.join(dataDir, 'lake');
  let gateway: LakeGateway | undefined;
  try {
    // A new slot starts the lake afresh (generation 0), as this run's DATA_DIR is empty.
    await dropSlot(sql, slot);
    console.error('writing the datasets into the lake and Postgres ...');
    const datasets = await writeJoinsDatasets(options.databaseUrl, lakeDir, (line) => console.error(line));
    const settings = await postgresSettings(sql);
    const span = (await sql.query<{ from: string; to: string }>(
      `SELECT to_char(min(issue_date) AT TIME ZONE 'UTC', 'YYYY-MM') AS "from", to_char(max(issue_date) AT TIME ZONE 'UTC', 'YYYY-MM') AS "to" FROM invoices`,
    )).rows[0]!;
    printHeader(options, data, datasets, settings, span, dataDir);

    gateway = await startLakeGateway({
      databaseUrl: options.databaseUrl, slot, dataDir, heapMb: options.gatewayHeapMb,
      // Analytics' Postgres reads have their own pool, whose statement timeout is ANALYTICS_TIMEOUT_MS.
      env: { ANALYTICS_TIMEOUT_MS: String(ANALYTICS_TIMEOUT_MS), ...(options.duckdbMemory ? { DUCKDB_MEMORY_LIMIT: options.duckdbMemory } : {}) },
    });
    await waitForFeed(gateway, sql);
    console.error('first (full) lake export ...');
    const firstExport = await gateway.exportNow(true);
    console.error(`first export: ${JSON.stringify(firstExport)}`);

    const results: Measured[] = [];
    for (const shape of SHAPES) results.push(await measureShape(gateway, sql, shape, options.repeat));
    const { rows: customers } = await sql.query<{ id: number }>('SELECT customer_id AS id FROM customers ORDER BY customer_id');
    results.push(await measureLookups(gateway.url, sql, customers.map((c) => c.id), options.repeat));
    const landing = await measureLanding(gateway.url, sql, lakeDir, datasets.unpaid, Math.max(options.repeat, 3)).catch(
      (err: Error): Landing => ({ visibleMs: [], timeouts: 0, landed: [], error: err.message }),
    );
    const afterLanding = await checkAfterLanding(gateway, sql, landing);
    printReport({ results, landing, afterLanding, firstExport, peakRss: gateway.peakRss(), exited: gateway.exited() });
  } finally {
    await gateway?.stop().catch(() => undefined);
    await dropSlot(sql, slot).catch((err: Error) => console.error(`could not drop the feed's slot ${slot}: ${err.message}`));
    await sql.end();
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function postgresSettings(sql: pg.Pool): Promise<string> {
  const { rows } = await sql.query<{ name: string; setting: string; unit: string | null }>(
    `SELECT name, setting, unit FROM pg_settings WHERE name IN ('server_version', 'work_mem', 'shared_buffers', 'max_parallel_workers_per_gather', 'jit') ORDER BY name`,
  );
  return rows.map((r) => `${r.name}=${r.setting}${r.unit ? ` ${r.unit}` : ''}`).join(', ');
}

// ---------------------------------------------------------------------------------------------
// The report.

function printHeader(options: JoinsOptions, data: BenchData, d: JoinsDatasets, settings: string, span: { from: string; to: string }, dataDir: string): void {
  const database = new URL(options.databaseUrl);
  console.log('# joins benchmark: segmentStats through the gateway vs the same join in Postgres\n');
  console.log(`machine: ${machine()}`);
  console.log(`gateway: ${gitRevision()}`);
  console.log(
    `data: ${int(data.invoices)} invoices (issue dates ${span.from} to ${span.to}), ${int(data.customers)} customers in ${database.host}${database.pathname}` +
      (data.seedSeconds ? ` (seeded in ${data.seedSeconds.toFixed(0)} s)` : ' (already seeded)'),
  );
  console.log(
    `datasets (bench/joinsData.ts, written in ${d.seconds.toFixed(0)} s, ${mb(d.lakeBytes)} MB in the lake): ${int(d.profiles)} profiles (JSONL, 4 files), ` +
      `${int(d.distinctPayments)} payment events for ${int(d.paidInvoices)} of ${int(d.invoices)} invoices (${int(d.paymentLines)} lines with 1% repeated deliveries, ` +
      `${int(d.paymentFiles)} date= files), ${int(d.ratingRows)} ratings in 12 monthly Parquet snapshots. ` +
      'Postgres holds the same records: profiles as jsonb (one object per row), payments once per payment_id, ratings; ' +
      'indexed on the profile id expression, (invoice_id, paid_at, payment_id) and (customer_id, as_of); vacuumed and analyzed',
  );
  console.log(`Postgres: ${settings} (the server's own settings)`);
  console.log(
    `gateway process: node --max-old-space-size=${options.gatewayHeapMb} --max-semi-space-size=8 ` +
      `(${options.gatewayHeapMb === 256 ? 'as npm start' : 'npm start passes 256: RAISED for this run'}), NODE_ENV=production, change feed on, ` +
      `lake in a local directory (${dataDir}/lake), ` +
      `ANALYTICS_TIMEOUT_MS ${ANALYTICS_TIMEOUT_MS} (default 30000: a slow answer is measured, not cut), ` +
      `DUCKDB_MEMORY_LIMIT ${options.duckdbMemory ? `${options.duckdbMemory} (set by --duckdb-memory)` : `${defaultDuckMemory()} (the gateway's default here: a quarter of the machine's memory)`}, every other setting at its default ` +
      '(DuckDB 2 threads, SOURCES_LISTING_TTL_MS 3000), ' +
      'the lake exported once before measuring',
  );
  console.log(
    `method: each shape once to warm up (the gateway parses the datasets then), then ${options.repeat} timed runs alternating gateway and Postgres; ` +
      'ms = median / p95 (under 20 runs, p95 is the slowest). gateway: segmentStats over HTTP until the answer is parsed. ' +
      "Postgres: test/fixtures/segmentCheck.ts's statement through node-postgres, for the gateway's asOf, until the rows are parsed. " +
      'Every answer, warm-up included, compared row by row (dimensions and every measure, in order). ' +
      'Read the ratios within one run: absolute figures move with whatever else shares the machine.\n',
  );
}

function printReport(r: {
  results: Measured[];
  landing: Landing;
  afterLanding: { name: string; gatewayMs: number; problem?: string }[];
  firstExport: ExportOutcome;
  peakRss: number;
  /** How the gateway process ended, if it did during the run. */
  exited: string | undefined;
}): void {
  const p95 = (values: readonly number[]) => percentile(values, 0.95);
  console.log('| measurement | gateway ms (median / p95) | Postgres ms (median / p95) | speed-up | equal | rows | invoices (lake + live) |');
  console.log('|---|--:|--:|--:|:-:|--:|--:|');
  for (const m of r.results) {
    const g = median(m.gatewayMs);
    const p = median(m.postgresMs);
    const speedUp = Number.isNaN(g) || Number.isNaN(p) ? '–' : `${(p / g).toFixed(p / g < 10 ? 2 : 1)}x`;
    console.log(
      `| ${m.name} | ${fmtMs(g)} / ${fmtMs(p95(m.gatewayMs))} | ${fmtMs(p)} / ${fmtMs(p95(m.postgresMs))} | ${speedUp} | ${m.error ? 'ERROR' : m.equal ? 'yes' : 'NO'} | ` +
        `${m.rows === undefined ? '–' : int(m.rows)} | ${m.invoices ?? '–'} |`,
    );
  }
  const v = r.landing.visibleMs;
  console.log(
    `| new payments file to its first answer (${v.length} files${r.landing.timeouts ? `, ${r.landing.timeouts} never seen` : ''}; median / max) | ` +
      `${fmtMs(median(v))} / ${v.length ? fmtMs(Math.max(...v)) : '–'} | – | – | ${r.landing.error ? 'ERROR' : r.landing.wrong ? 'NO' : 'yes'} | – | – |`,
  );

  console.log(
    `\nnew payments file: ${LANDED_INVOICES} unpaid invoices paid in full, written as sources/payments/date=<today>/landed-<n>.jsonl (a .part file renamed into place); ` +
      `timed from the rename to the first invoices(ids) { paidUsd } answer showing them paid, asking every ${POLL_MS} ms (and all along before it). ` +
      'It includes the listing cache (SOURCES_LISTING_TTL_MS) and the new payments table: the last one plus the new file’s events (only the new file is parsed).',
  );
  const problems = r.afterLanding.filter((c) => c.problem);
  if (r.afterLanding.length === 0) console.log('after the landings: not checked (the gateway process had exited)');
  else console.log(
    `after the landings, each shape once more with the landed payments added to Postgres: ${problems.length === 0 ? 'all equal' : `${problems.length} NOT equal or failed`} ` +
      `(gateway ${r.afterLanding.map((c) => `${fmtMs(c.gatewayMs)} ms`).join(', ')}; the first segmentStats on a new payments table also sums its payments per invoice and looks for paid ids the lake lacks, to count unmatched payments)`,
  );
  const exported = r.firstExport.kind === 'exported' && 'rows' in r.firstExport ? `${int(r.firstExport.rows)} rows in ${r.firstExport.seconds.toFixed(1)} s` : `no export: ${r.firstExport.kind}`;
  console.log(`lake export before measuring: ${exported}; gateway peak RSS (whole run): ${mb(r.peakRss)} MB; engines: ${[...new Set(r.results.flatMap((m) => m.engines))].join(', ')}`);

  const shapes = r.results.slice(0, SHAPES.length);
  console.log('\ngoals:');
  for (const m of shapes) {
    const ratio = median(m.postgresMs) / median(m.gatewayMs);
    console.log(`- ${m.name}: at least ${GOAL_SPEED_UP}x Postgres: ${Number.isNaN(ratio) ? 'not measured' : `${ratio.toFixed(2)}x, ${ratio >= GOAL_SPEED_UP ? 'met' : 'NOT met'}`}`);
  }
  const worst = v.length ? Math.max(...v) : NaN;
  console.log(
    `- a new file visible within ${GOAL_VISIBLE_MS / 1000} s: ${v.length ? `slowest of ${v.length} ${fmtMs(worst)} ms, ${!r.landing.timeouts && worst <= GOAL_VISIBLE_MS ? 'met' : 'NOT met'}` : 'not measured'}`,
  );

  for (const m of r.results.filter((x) => x.warnings.length > 0)) console.log(`\nwarnings in "${m.name}": ${m.warnings.join(', ')}`);
  const bad = r.results.filter((m) => !m.equal);
  for (const m of bad) console.log(`\n${m.error ? 'ERROR' : 'MISMATCH'} in "${m.name}": ${m.error ?? m.mismatch}`);
  for (const c of problems) {
    const failed = c.problem!.startsWith('ERROR ');
    console.log(`\n${failed ? 'ERROR' : 'MISMATCH'} after the landings in "${c.name}": ${failed ? c.problem!.slice('ERROR '.length) : c.problem}`);
  }
  if (r.landing.wrong) console.log(`\nWRONG paidUsd after a landing: ${r.landing.wrong}`);
  if (r.landing.error) console.log(`\nERROR while landing payments files: ${r.landing.error}`);
  if (r.exited) console.log(`\nTHE GATEWAY PROCESS EXITED during the run (${r.exited}); its last lines are on stderr`);
  if (bad.length > 0 || problems.length > 0 || r.landing.wrong || r.landing.error || r.landing.timeouts > 0 || r.firstExport.kind !== 'exported' || r.exited) {
    console.log('\nthis run found faults: do not use its figures as a measurement');
    process.exitCode = 1;
  }
}
