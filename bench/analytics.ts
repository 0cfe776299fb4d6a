import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { print } from 'graphql';
import pg from 'pg';
import { BenchInvoiceStatsDocument, type BenchInvoiceStatsQuery, type BenchInvoiceStatsQueryVariables } from '../test/generated/graphql.js';
import { ensureBenchDatabase, withClient, type BenchData } from './benchDatabase.js';
import { freePort } from '../test/fixtures/network.js';
import { startChildServer } from './childServer.js';
import { dropSlot, feedSlot, startLakeGateway, waitForFeed, type ExportOutcome, type LakeGateway } from './lakeGateway.js';
import { ROOT } from './lookupSettings.js';
import { scrapeMetrics } from './metricsScrape.js';
import { loadConfig } from '../server/config.js';
import { closeHttpClient, postJson } from './httpClient.js';
import { fmtMs, gitRevision, int, machine, mb } from './reportFormat.js';
import { runCommand } from './runCommand.js';
import { median, percentile, timed } from './stats.js';
import { parseBenchOptions } from './options.js';

/*
 * `npm run bench -- analytics`: invoiceStats through the gateway (DuckDB over the Parquet lake
 * plus the live rows, or Postgres, as the gateway chooses) against the same aggregate written as
 * SQL and run directly on Postgres, shape by shape, every answer checked equal; then the same
 * right after fresh inserts the lake has not seen; the lake's export rate; the gateway's peak RSS.
 *
 * The gateway runs in its own process (lakeGateway.ts: as npm start runs it, NODE_ENV=production),
 * so its RSS is its own, and it exposes lake.exportNow() on a control port, since exports are
 * timed on demand (LAKE_EXPORT_INTERVAL_MS=0).
 */

/** What the seeder uses without --months; a database seeded without a recorded month count has this many. */
const SEED_DEFAULT_MONTHS = 36;
/** The gateway's largest invoiceStats page: "all pages" shapes are read this many rows at a time. */
const PAGE = 10_000;
const TOP = 100;

const usage =
  'usage: npm run bench -- analytics [--invoices 10000000] [--customers 100000] [--months 36] [--repeat 5] [--warm-runs 0] [--inserts 10000] ' +
  '[--database-url postgres://postgres@127.0.0.1:5432/ig_bench_analytics] [--gateway-heap-mb 256]';

interface AnalyticsOptions {
  readonly invoices: number;
  readonly customers: number;
  readonly months: number;
  readonly repeat: number;
  /**
   * Gateway-only runs of each shape after its timed runs, timed apart: the gateway as it serves a
   * shape it has served many times (the timed runs find most of a shape's code barely run).
   */
  readonly warmRuns: number;
  readonly inserts: number;
  readonly databaseUrl: string;
  /** The gateway's --max-old-space-size: npm start's 256 unless raised to see past a heap limit. */
  readonly gatewayHeapMb: number;
}

function parseOptions(argv: string[]): AnalyticsOptions {
  const { text, whole } = parseBenchOptions(
    argv,
    { invoices: '10000000', customers: '100000', months: String(SEED_DEFAULT_MONTHS), repeat: '5', 'warm-runs': '0', inserts: '10000', 'database-url': 'postgres://postgres@127.0.0.1:5432/ig_bench_analytics', 'gateway-heap-mb': '256' },
    usage,
  );
  return {
    invoices: whole('invoices', 1),
    customers: whole('customers', 2),
    months: whole('months', 1),
    repeat: whole('repeat', 1),
    warmRuns: whole('warm-runs', 0),
    inserts: whole('inserts', 1),
    databaseUrl: text('database-url'),
    gatewayHeapMb: whole('gateway-heap-mb', 64),
  };
}

// ---------------------------------------------------------------------------------------------
// The shapes: each a gateway query and the SQL a user runs on Postgres for the same answer.

type Variables = Omit<BenchInvoiceStatsQueryVariables, 'after'>;
type Row = BenchInvoiceStatsQuery['invoiceStats']['rows'][number];

interface Shape {
  readonly name: string;
  readonly variables: Variables;
  /** Every page, PAGE rows at a time (Postgres: the whole result); otherwise the first page. */
  readonly allPages: boolean;
}

/**
 * The aggregate as invoiceStats defines it, computed directly in Postgres in the same order:
 * test/fixtures/statsCheck.ts's directStats ("the last n months": n calendar months in UTC, this
 * one included), with the page's ORDER BY and LIMIT a user would write.
 */
function directSql(shape: Shape): { text: string; values: unknown[] } {
  const { groupBy, months, granularity, orderBy, customerIds, first } = shape.variables;
  const party = groupBy === 'ISSUER' ? 'issuer_id' : 'receiver_id';
  const month = granularity === 'MONTH' ? `to_char(date_trunc('month', issue_date AT TIME ZONE 'UTC'), 'YYYY-MM')` : 'NULL::text';
  const order = { TOTAL_DESC: `sum(amount_usd) DESC, ${party}, 2`, COUNT_DESC: `count(*) DESC, ${party}, 2`, CUSTOMER_ASC: `${party}, 2` }[orderBy];
  const ids = customerIds == null ? null : (Array.isArray(customerIds) ? customerIds : [customerIds]).map(Number);
  return {
    text: `SELECT ${party}::text AS "customerId", ${month} AS month, count(*)::int AS "invoiceCount", sum(amount_usd)::text AS "totalUsd",
       round(avg(amount_usd), 2)::text AS "avgUsd", min(amount_usd)::text AS "minUsd", max(amount_usd)::text AS "maxUsd"
     FROM invoices
     WHERE issue_date >= (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => $1 - 1)) AT TIME ZONE 'UTC'
       AND issue_date < (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
       ${ids ? `AND ${party} = ANY($2::int[])` : ''}
     GROUP BY ${party}, 2 ORDER BY ${order}${shape.allPages ? '' : ` LIMIT ${first}`}`,
    values: ids ? [months, ids] : [months],
  };
}

/** Half the gateway's default ANALYTICS_POSTGRES_MAX_INVOICES (the benchmark's gateway runs with it): a customer Postgres answers for, with some work. */
const MEDIUM_INVOICES = loadConfig({}).analytics.postgresMaxInvoices / 2;

interface Picks {
  readonly small: { id: string; invoices: number };
  readonly medium: { id: string; invoices: number };
  readonly large: { id: string; invoices: number };
}

/**
 * The median issuer by invoices over the last 12 months, the one nearest MEDIUM_INVOICES (still
 * Postgres's shape, where its statement costs milliseconds), and the busiest.
 */
async function pickCustomers(sql: pg.Pool): Promise<Picks> {
  const { rows } = await sql.query<{ small: string; small_n: number; medium: string; medium_n: number; large: string; large_n: number }>(
    `WITH c AS (
       SELECT issuer_id, count(*)::int AS n FROM invoices
       WHERE issue_date >= (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => 11)) AT TIME ZONE 'UTC'
         AND issue_date < (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
       GROUP BY 1),
     small AS (SELECT issuer_id, n FROM c ORDER BY n, issuer_id OFFSET (SELECT count(*) / 2 FROM c) LIMIT 1),
     medium AS (SELECT issuer_id, n FROM c ORDER BY abs(n - $1), issuer_id LIMIT 1),
     large AS (SELECT issuer_id, n FROM c ORDER BY n DESC, issuer_id LIMIT 1)
     SELECT small.issuer_id::text AS small, small.n AS small_n, medium.issuer_id::text AS medium, medium.n AS medium_n,
       large.issuer_id::text AS large, large.n AS large_n FROM small, medium, large`,
    [MEDIUM_INVOICES],
  );
  const row = rows[0];
  if (!row) throw new Error('no invoices in the last 12 months: the seed is older than the window; reseed (or pick another --database-url)');
  return { small: { id: row.small, invoices: row.small_n }, medium: { id: row.medium, invoices: row.medium_n }, large: { id: row.large, invoices: row.large_n } };
}

function shapesFor(picks: Picks): Shape[] {
  const top = (groupBy: 'ISSUER' | 'RECEIVER'): Shape => ({
    name: `top ${TOP} ${groupBy === 'ISSUER' ? 'issuers' : 'receivers'} by 12-month total`,
    variables: { groupBy, months: 12, granularity: 'TOTAL', orderBy: 'TOTAL_DESC', first: TOP },
    allPages: false,
  });
  const totals = (months: number): Shape => ({
    name: `totals per issuer over ${months} months (all pages)`,
    variables: { groupBy: 'ISSUER', months, granularity: 'TOTAL', orderBy: 'TOTAL_DESC', first: PAGE },
    allPages: true,
  });
  const one = (label: string, pick: { id: string; invoices: number }): Shape => ({
    name: `${label} issuer #${pick.id} (${pick.invoices} invoices) over 12 months by month`,
    // The default order (TOTAL_DESC), as a user asking for one customer's months would get it.
    variables: { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', orderBy: 'TOTAL_DESC', first: 100, customerIds: [pick.id] },
    allPages: false,
  });
  return [
    top('ISSUER'),
    top('RECEIVER'),
    totals(3),
    totals(12),
    {
      name: 'first page of (issuer, month) rows, 12 months, by total',
      variables: { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', orderBy: 'TOTAL_DESC', first: 100 },
      allPages: false,
    },
    {
      name: 'first page of (issuer, month) rows, 12 months, by customer',
      variables: { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', orderBy: 'CUSTOMER_ASC', first: 100 },
      allPages: false,
    },
    one('small', picks.small),
    one('medium', picks.medium),
    one('large', picks.large),
  ];
}

// ---------------------------------------------------------------------------------------------
// Running a shape on both sides.

const STATS_QUERY = print(BenchInvoiceStatsDocument);

interface GatewayAnswer {
  readonly rows: Row[];
  readonly engine: string;
  readonly warnings: string[];
  readonly lakeRows: number;
  readonly liveRows: number;
  readonly pages: number;
  /** The client's JSON.parse of the pages' bodies: a part of the wall time no gateway work can remove. */
  readonly parseMs: number;
  /** Each page's request and the answer's text, as sent and received: what the floor is measured with. */
  readonly exchanges: readonly Exchange[];
}

interface Exchange {
  readonly request: unknown;
  readonly text: string;
}

/**
 * Requests made another text (see postJson's spaces) so far: each such run is computed, never
 * replayed. The spaces go round at 3,000 (so the body stays under the lean path's 4,096 characters),
 * far more texts than a kept response outlives in this run.
 */
let distinctTexts = 0;
const otherText = () => (distinctTexts++ % 3000) + 1;

/** `spaces`: 0 for the shape's own request text (replayed when asked again unchanged), else another text of it. */
async function viaGateway(url: string, shape: Shape, spaces = 0): Promise<GatewayAnswer> {
  const rows: Row[] = [];
  const engines = new Set<string>();
  const warnings = new Set<string>();
  let freshness: BenchInvoiceStatsQuery['invoiceStats']['freshness'] | undefined;
  let after: string | null = null;
  let pages = 0;
  let parseMs = 0;
  const exchanges: Exchange[] = [];
  for (;;) {
    const request = { query: STATS_QUERY, variables: { ...shape.variables, after } };
    const { status, text } = await postJson(url, request, undefined, spaces);
    exchanges.push({ request, text });
    const parsing = performance.now();
    const body = JSON.parse(text) as { data?: BenchInvoiceStatsQuery | null; errors?: { message: string; extensions?: { code?: string } }[] };
    parseMs += performance.now() - parsing;
    if (body.errors?.length || !body.data) {
      throw new Error(`gateway answered HTTP ${status}: ${JSON.stringify(body.errors ?? body).slice(0, 300)}`);
    }
    const stats = body.data.invoiceStats;
    pages++;
    rows.push(...stats.rows);
    freshness ??= stats.freshness;
    engines.add(stats.freshness.engine);
    for (const w of stats.warnings) warnings.add(w.code);
    if (!shape.allPages || !stats.pageInfo.hasNextPage) break;
    if (pages >= 1000) throw new Error('more than 1000 pages');
    after = stats.pageInfo.endCursor!;
  }
  return { rows, engine: [...engines].join('+'), warnings: [...warnings], lakeRows: freshness!.lakeRows, liveRows: freshness!.liveRows, pages, parseMs, exchanges };
}

async function viaPostgres(sql: pg.Pool, shape: Shape): Promise<Row[]> {
  return (await sql.query<Row>(directSql(shape))).rows;
}

const rowKey = (r: Row) => JSON.stringify([r.customerId, r.month ?? null, r.invoiceCount, r.totalUsd, r.avgUsd, r.minUsd, r.maxUsd]);

/** undefined when equal; else where and how they first differ. */
function difference(gateway: readonly Row[], postgres: readonly Row[]): string | undefined {
  const n = Math.max(gateway.length, postgres.length);
  for (let i = 0; i < n; i++) {
    const a = gateway[i] ? rowKey(gateway[i]!) : 'none';
    const b = postgres[i] ? rowKey(postgres[i]!) : 'none';
    if (a !== b) {
      const differing = gateway.reduce((count, row, j) => count + (postgres[j] && rowKey(row) === rowKey(postgres[j]!) ? 0 : 1), 0);
      return `${gateway.length} rows from the gateway, ${postgres.length} from Postgres, ${differing + Math.max(0, postgres.length - gateway.length)} positions differ; ` +
        `first at row ${i + 1}: gateway ${a} vs Postgres ${b} ([customerId, month, invoiceCount, totalUsd, avgUsd, minUsd, maxUsd])`;
    }
  }
  return undefined;
}

interface Measured {
  readonly name: string;
  /** Distinct engines of the timed runs; the warm-up's, when it differed. */
  readonly engine: string;
  readonly gatewayMs: number[];
  readonly postgresMs: number[];
  readonly equal: boolean;
  readonly mismatch?: string;
  readonly error?: string;
  readonly warnings: string[];
  readonly lakeRows?: number;
  readonly liveRows?: number;
  readonly rows?: number;
  readonly pages?: number;
  /** The first (warm-up) gateway call: the one right after the inserts, in the second pass. */
  readonly firstMs?: number;
  readonly firstEngine?: string;
  /** Where the timed runs' requests spent their time, from the gateway's metrics. */
  readonly stages?: StageMeans;
  /** The gateway-only runs after the timed ones (AnalyticsOptions.warmRuns), each checked. */
  readonly warmMs?: number[];
  /**
   * Runs of the same request as another text each time (so computed, not replayed), alternating
   * with Postgres (whose times join postgresMs), after the warm runs.
   */
  readonly computedMs?: number[];
  /** The client's JSON.parse of each timed run's answer (all its pages). */
  readonly parseMs?: number[];
  /** The median of the same answer's bytes from a server doing nothing else, each page received and parsed by the same client (see bytesFloor). */
  readonly bytesMs?: number;
}

/** The stages of gateway_analytics_stage_seconds, in the order a query passes them. */
const STAGES = ['snapshot', 'barrier', 'changes', 'live', 'lake', 'postgres'] as const;

/** Sums (seconds) and counts of the gateway's analytics histograms, as /metrics reads at one moment. */
interface EngineCounters {
  readonly queries: number;
  readonly seconds: number;
  readonly stages: Record<string, number>;
}

/** Per request of a shape's timed runs, in ms: the client's wall time, the engine's, and each stage's. */
interface StageMeans {
  readonly requests: number;
  readonly wallMs: number;
  readonly engineMs: number;
  readonly stageMs: Record<string, number>;
  /** The client's JSON.parse of the bodies: part of "outside", and a floor under the wall time. */
  readonly parseMs: number;
}

async function engineCounters(url: string): Promise<EngineCounters> {
  const total = await scrapeMetrics(url);
  return {
    queries: total('gateway_analytics_duration_seconds_count'),
    seconds: total('gateway_analytics_duration_seconds_sum'),
    stages: Object.fromEntries(STAGES.map((stage) => [stage, total(`gateway_analytics_stage_seconds_sum{stage="${stage}"}`)])),
  };
}

function stageMeans(before: EngineCounters, after: EngineCounters, wallMs: readonly number[], parseMs: readonly number[]): StageMeans | undefined {
  const requests = after.queries - before.queries;
  if (requests <= 0) return undefined;
  const perRequest = (seconds: number) => (seconds * 1000) / requests;
  const stageMs = Object.fromEntries(STAGES.map((stage) => [stage, perRequest(after.stages[stage]! - before.stages[stage]!)]));
  const sum = (ms: readonly number[]) => ms.reduce((a, b) => a + b, 0);
  return { requests, wallMs: sum(wallMs) / requests, engineMs: perRequest(after.seconds - before.seconds), stageMs, parseMs: sum(parseMs) / requests };
}

/**
 * Warm once (and check), then `repeat` timed runs alternating gateway and Postgres, each checked;
 * then `warmRuns` gateway-only runs, checked against Postgres's last answer (nothing changes within a pass).
 */
async function measure(url: string, sql: pg.Pool, bare: BareServer, shape: Shape, repeat: number, warmRuns: number, suffix = ''): Promise<Measured> {
  const name = shape.name + suffix;
  const gatewayMs: number[] = [];
  const postgresMs: number[] = [];
  const parseMs: number[] = [];
  const warnings = new Set<string>();
  const engines = new Set<string>();
  let mismatch: string | undefined;
  let last: GatewayAnswer | undefined;
  let first: { ms: number; engine: string } | undefined;
  let counters: EngineCounters | undefined;
  let stages: StageMeans | undefined;
  const warmMs: number[] = [];
  const computedMs: number[] = [];
  let bytesMs: number | undefined;
  try {
    let postgresRows: Row[] = [];
    for (let run = 0; run <= repeat; run++) {
      const [g, gMs] = await timed(() => viaGateway(url, shape));
      const [p, pMs] = await timed(() => viaPostgres(sql, shape));
      postgresRows = p;
      for (const w of g.warnings) warnings.add(w);
      mismatch ??= difference(g.rows, p);
      if (run === 0) {
        first = { ms: gMs, engine: g.engine };
        counters = await engineCounters(url);
      } else {
        gatewayMs.push(gMs);
        postgresMs.push(pMs);
        parseMs.push(g.parseMs);
        engines.add(g.engine);
      }
      last = g;
    }
    stages = stageMeans(counters!, await engineCounters(url), gatewayMs, parseMs);
    for (let run = 0; run < warmRuns; run++) {
      const [g, gMs] = await timed(() => viaGateway(url, shape));
      mismatch ??= difference(g.rows, postgresRows);
      warmMs.push(gMs);
    }
    for (let run = 0; run < repeat; run++) {
      const [g, gMs] = await timed(() => viaGateway(url, shape, otherText()));
      const [p, pMs] = await timed(() => viaPostgres(sql, shape));
      mismatch ??= difference(g.rows, p);
      computedMs.push(gMs);
      postgresMs.push(pMs);
    }
    bytesMs = await bytesFloor(bare, last!.exchanges);
  } catch (err) {
    const error = (err as Error).message;
    console.error(`${name}: FAILED: ${error}`);
    return { name, engine: [...engines].join('/') || '–', gatewayMs, postgresMs, equal: false, error, warnings: [...warnings] };
  }
  const engine = [...engines].join('/') + (first && !engines.has(first.engine) ? ` (warm-up: ${first.engine})` : '');
  const result: Measured = {
    name, engine, gatewayMs, postgresMs, equal: mismatch === undefined, mismatch, warnings: [...warnings],
    lakeRows: last!.lakeRows, liveRows: last!.liveRows, rows: last!.rows.length, pages: last!.pages, firstMs: first!.ms, firstEngine: first!.engine, stages, warmMs, parseMs, computedMs, bytesMs,
  };
  console.error(`${name}: gateway ${fmtMs(median(gatewayMs))} ms (${engine}), computed ${fmtMs(median(computedMs))} ms, Postgres ${fmtMs(median(postgresMs))} ms, ${result.rows} rows, ${mismatch ? 'MISMATCH' : 'equal'}`);
  return result;
}

/** One untimed run per shape, checked: after the incremental export. */
async function check(url: string, sql: pg.Pool, shapes: readonly Shape[]): Promise<{ name: string; engine: string; live: number; problem?: string }[]> {
  const out = [];
  for (const shape of shapes) {
    try {
      const [g, p] = [await viaGateway(url, shape), await viaPostgres(sql, shape)];
      out.push({ name: shape.name, engine: g.engine, live: g.liveRows, problem: difference(g.rows, p) });
    } catch (err) {
      out.push({ name: shape.name, engine: '–', live: 0, problem: (err as Error).message });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The entry point.

export async function analytics(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  const { data, seededMonths } = await prepareDatabase(options);
  const slot = feedSlot('analytics', options.databaseUrl);
  const sql = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  const dataDir = await mkdtemp(path.join(tmpdir(), 'ig-bench-analytics-'));
  let gateway: LakeGateway | undefined;
  let bare: BareServer | undefined;
  try {
    await restoreSeed(sql, slot, data.maxId);
    const span = await dataSpan(sql);
    printHeader(options, data, seededMonths, span, dataDir);

    gateway = await startLakeGateway({ databaseUrl: options.databaseUrl, slot, dataDir, heapMb: options.gatewayHeapMb });
    await waitForFeed(gateway, sql);
    const feedCatchUp = await waitForFeedCurrent(sql);

    // The first export: the whole table, every run (the slot is new, so the lake starts empty; full anyway).
    console.error('first (full) lake export ...');
    const firstExport = await gateway.exportNow(true);
    const hwmAfterExport = gateway.peakRss();
    console.error(`first export: ${JSON.stringify(firstExport)}`);

    const transportMs = await transportFloor(gateway.url);
    bare = await startBareServer();
    const bareMs = await transportFloor(bare.url);
    const roundTripMs = await postgresRoundTrip(sql);
    const picks = await pickCustomers(sql);
    const shapes = shapesFor(picks);
    const results: Measured[] = [];
    for (const shape of shapes) results.push(await measure(gateway.url, sql, bare, shape, options.repeat, options.warmRuns));

    // Fresh invoices the lake has not seen, then the same shapes at once, without an export.
    const [, insertMs] = await timed(() => insertFresh(sql, options.inserts));
    console.error(`${options.inserts} invoices inserted in ${insertMs.toFixed(0)} ms`);
    const suffix = `, after ${options.inserts.toLocaleString('en-US')} inserts`;
    for (const shape of shapes) results.push(await measure(gateway.url, sql, bare, shape, options.repeat, options.warmRuns, suffix));

    console.error('incremental lake export ...');
    const incremental = await gateway.exportNow(false);
    console.error(`incremental export: ${JSON.stringify(incremental)}`);
    const afterExport = await check(gateway.url, sql, shapes);
    const peakRss = gateway.peakRss();
    if (gateway.exited()) throw new Error(`the gateway exited (${gateway.exited()}) during the run`);

    printReport({ options, results, firstExport, incremental, insertMs, afterExport, peakRss, hwmAfterExport, feedCatchUp, transportMs, bareMs, roundTripMs });
  } finally {
    await gateway?.stop().catch(() => undefined);
    await bare?.stop().catch(() => undefined);
    await restoreSeed(sql, slot, data.maxId).catch((err: Error) => console.error(`could not restore the seeded data: ${err.message}`));
    await sql.end();
    closeHttpClient();
    await rm(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The database: seeded with --months, restored after each run.

/** Databases with this prefix belong to the benchmarks (as in benchDatabase.ts). */
const OWNED = /^ig_bench_\w+$/;
const MONTHS_MARK = /^invoice-gateway bench: seeded with --months (\d+)$/;

/**
 * ensureBenchDatabase, plus the month count: the seeder is run here with --months when the
 * database does not hold the wanted rows over the wanted months (recorded as the database's
 * comment), so ensureBenchDatabase only checks. Also repairs a run that died after its inserts.
 */
async function prepareDatabase(options: AnalyticsOptions): Promise<{ data: BenchData; seededMonths: number | undefined }> {
  const url = options.databaseUrl;
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  const seedCommand = `${ROOT}dist/server/commands/seed.js`;
  if (!OWNED.test(name)) {
    // Never changed: ensureBenchDatabase stops with its reason when the counts differ.
    const data = await ensureBenchDatabase(url, options, seedCommand);
    return { data, seededMonths: await withClient(url, (c) => recordedMonths(c, name)) };
  }
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const exists = await withClient(admin.toString(), async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1);
  if (!exists) await withClient(admin.toString(), (c) => c.query(`CREATE DATABASE "${name}"`));

  const ready = await withClient(url, async (client) => {
    const { rows: [table] } = await client.query<{ present: boolean }>(`SELECT to_regclass('public.invoices') IS NOT NULL AS present`);
    if (!table?.present) return false;
    await repairLeftovers(client, options.invoices);
    const { rows: [row] } = await client.query<{ invoices: string; customers: string; span: string | null }>(
      `SELECT count(*)::text AS invoices, (SELECT count(*) FROM customers)::text AS customers, (max(invoice_id) - min(invoice_id) + 1)::text AS span FROM invoices`,
    );
    return Number(row!.invoices) === options.invoices && Number(row!.customers) === options.customers && Number(row!.span) === options.invoices &&
      ((await recordedMonths(client, name)) ?? SEED_DEFAULT_MONTHS) === options.months;
  });
  let seedSeconds = 0;
  if (!ready) {
    console.error(`seeding ${name}: ${options.customers} customers, ${options.invoices} invoices over ${options.months} months`);
    const started = performance.now();
    await runCommand(process.execPath, [seedCommand, '--customers', String(options.customers), '--invoices', String(options.invoices), '--months', String(options.months), '--reset', '--no-datasets'], {
      DATABASE_URL: url,
      LOG_LEVEL: 'warn',
    });
    seedSeconds = (performance.now() - started) / 1000;
    await withClient(url, (c) => c.query(`COMMENT ON DATABASE "${name}" IS 'invoice-gateway bench: seeded with --months ${options.months}'`));
  }
  const data = await ensureBenchDatabase(url, options, seedCommand);
  return { data: { ...data, seedSeconds: seedSeconds || data.seedSeconds }, seededMonths: options.months };
}

async function recordedMonths(client: pg.Client, name: string): Promise<number | undefined> {
  const { rows } = await client.query<{ comment: string | null }>(
    `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`,
    [name],
  );
  const match = MONTHS_MARK.exec(rows[0]?.comment ?? '');
  return match ? Number(match[1]) : undefined;
}

/**
 * A run that died after its inserts left rows past the seed's last id: removed, so the seed
 * need not be made again. Only when the first `want` ids are exactly the seed's (gap-free).
 */
async function repairLeftovers(client: pg.Client, want: number): Promise<void> {
  const { rows: [row] } = await client.query<{ n: string; min: string | null }>(`SELECT count(*)::text AS n, min(invoice_id)::text AS min FROM invoices`);
  if (Number(row!.n) <= want || row!.min === null) return;
  const last = Number(row!.min) + want - 1;
  const { rows: [seeded] } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM invoices WHERE invoice_id <= $1`, [last]);
  if (Number(seeded!.n) !== want) return;
  console.error(`removing ${Number(row!.n) - want} invoices an earlier run inserted (ids after ${last})`);
  await client.query(`DELETE FROM invoices WHERE invoice_id > $1`, [last]);
  await client.query(`SELECT setval(pg_get_serial_sequence('invoices', 'invoice_id'), $1)`, [last]);
}

/** The months the data covers (UTC), oldest and newest. */
async function dataSpan(sql: pg.Pool): Promise<{ from: string; to: string }> {
  const { rows } = await sql.query<{ from: string; to: string }>(
    `SELECT to_char(min(issue_date) AT TIME ZONE 'UTC', 'YYYY-MM') AS "from", to_char(max(issue_date) AT TIME ZONE 'UTC', 'YYYY-MM') AS "to" FROM invoices`,
  );
  return rows[0]!;
}

/**
 * Until the lake's consumer has recorded past a barrier written now: the risk backfill's million
 * score rows are WAL the feed decodes for seconds after it ends, and an export waits for the feed
 * before it switches. Timed apart, so that the export's figure is its own work.
 */
async function waitForFeedCurrent(sql: pg.Pool): Promise<number> {
  const started = performance.now();
  const { rows: [barrier] } = await sql.query<{ lsn: string }>(`SELECT pg_logical_emit_message(true, 'invoice-gateway:barrier', '')::text AS lsn`);
  for (;;) {
    const { rows: [row] } = await sql.query<{ passed: boolean }>(`SELECT position >= $1::pg_lsn AS passed FROM lake_state`, [barrier!.lsn]);
    if (row?.passed) break;
    if (performance.now() - started > 600_000) throw new Error('the change feed has not caught up after 10 minutes');
    await new Promise((r) => setTimeout(r, 100));
  }
  const seconds = (performance.now() - started) / 1000;
  console.error(`the change feed had recorded everything written before it after another ${seconds.toFixed(1)} s`);
  return seconds;
}

/** Invoices dated now, between random existing customers, in one statement. */
async function insertFresh(sql: pg.Pool, count: number): Promise<void> {
  await sql.query(
    `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
     SELECT now(), c.ids[1 + floor(random() * array_length(c.ids, 1))::int], c.ids[1 + floor(random() * array_length(c.ids, 1))::int],
       round((1 + random() * 2000)::numeric, 2)
     FROM generate_series(1, $1::int) AS g, (SELECT array_agg(customer_id) AS ids FROM customers) AS c`,
    [count],
  );
}

/**
 * Back to the seed: the feed's slot dropped (an idle slot would keep WAL for the whole cluster),
 * the run's invoices and their scores deleted, the id sequence reset. The next run's new slot
 * starts the lake afresh (generation 0), so its first export is a full one again.
 */
async function restoreSeed(sql: pg.Pool, slot: string, maxId: number): Promise<void> {
  await dropSlot(sql, slot);
  await sql.query(`DELETE FROM invoices WHERE invoice_id > $1`, [maxId]);
  await sql.query(`SELECT setval(pg_get_serial_sequence('invoices', 'invoice_id'), $1)`, [maxId]);
  await sql.query(`DELETE FROM invoice_risk_scores WHERE invoice_id > $1`, [maxId]).catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------
// The report.

const p95 = (values: readonly number[]) => percentile(values, 0.95);
function printHeader(options: AnalyticsOptions, data: BenchData, seededMonths: number | undefined, span: { from: string; to: string }, dataDir: string): void {
  const database = new URL(options.databaseUrl);
  console.log('# analytics benchmark: invoiceStats through the gateway vs the same SQL on Postgres\n');
  console.log(`machine: ${machine()}`);
  console.log(`gateway: ${gitRevision()}`);
  console.log(
    `data: ${int(data.invoices)} invoices, ${int(data.customers)} customers, ${seededMonths === undefined ? 'months not recorded' : `seeded over ${seededMonths} months`} ` +
      `(issue dates ${span.from} to ${span.to}) in ${database.host}${database.pathname}` +
      (data.seedSeconds ? ` (seeded in ${data.seedSeconds.toFixed(0)} s)` : ' (already seeded)'),
  );
  console.log(
    `gateway process: node --max-old-space-size=${options.gatewayHeapMb} --max-semi-space-size=8 ${options.gatewayHeapMb === 256 ? '(as npm start)' : '(npm start uses 256)'}, NODE_ENV=production, change feed on, ` +
      `lake in a local directory (${dataDir}), DuckDB and analytics settings at their defaults, exports only when the benchmark asks (LAKE_EXPORT_INTERVAL_MS=0)`,
  );
  console.log(
    `method: each shape once to warm up, then ${options.repeat} timed runs alternating gateway and Postgres; ms = median / p95 of those runs (under 20 runs, p95 is the slowest). ` +
      'The timed requests repeat the warm-up\'s text, so the gateway replays its response once proven still exact (server/keptAnalytics.ts). ' +
      `"computed": after them, ${options.repeat} more runs alternating with Postgres (its times counted with the others), each the same request as another text (spaces before the JSON), which no replay answers. ` +
      'gateway: invoiceStats over HTTP (node:http, one kept-alive connection), until the answer is parsed ("all pages": every page of 10,000 rows, timed together). ' +
      "Postgres: test/fixtures/statsCheck.ts's aggregate with the page's ORDER BY and LIMIT, through node-postgres, until the rows are parsed. " +
      'Every answer, warm-up included, compared row by row (customer, month, count, total, avg, min, max, in order) with Postgres\'s.' +
      (options.warmRuns > 0 ? ` Then ${options.warmRuns} gateway-only runs per shape, checked too: "warm" is their median.` : '') +
      '\n',
  );
}

/**
 * Where a request's time went: the engine's stages (gateway_analytics_stage_seconds), the engine
 * as a whole (gateway_analytics_duration_seconds) and the rest of the client's wall time (HTTP,
 * GraphQL, JSON, on both sides), as means per request over a shape's timed runs.
 */
function printStages(results: readonly Measured[], transportMs: number): void {
  const fmt = (ms: number) => (ms < 0.05 ? '–' : fmtMs(ms));
  console.log(`\nWhere a request's time goes (means per request over the timed runs, ms; from the gateway's /metrics; "outside" is the client's wall time less the engine's: HTTP, GraphQL and JSON on both sides, of which "client parse" is the client's JSON.parse of the body; an empty query, { __typename }, takes ${fmtMs(transportMs)} ms through the same client):\n`);
  console.log(`| shape | requests | wall | engine | ${STAGES.join(' | ')} | outside | client parse |`);
  console.log(`|---|--:|--:|--:|${STAGES.map(() => '--:|').join('')}--:|--:|`);
  for (const m of results) {
    const s = m.stages;
    if (!s) continue;
    console.log(`| ${m.name} | ${int(s.requests)} | ${fmtMs(s.wallMs)} | ${fmtMs(s.engineMs)} | ${STAGES.map((stage) => fmt(s.stageMs[stage]!)).join(' | ')} | ${fmtMs(s.wallMs - s.engineMs)} | ${fmtMs(s.parseMs)} |`);
  }
}

/**
 * What no exact answer over HTTP can go under, per shape: the answer's own bytes from a server
 * doing nothing else, received and parsed by the same client (bytesFloor), and one Postgres round
 * trip per page (only Postgres knows what committed a moment before the query). Beside it, the
 * speed-up a gateway doing no other work would reach, and what 20x Postgres would take.
 */
function printFloors(results: readonly Measured[], transportMs: number, bareMs: number, roundTripMs: number): void {
  console.log(
    `\nThe floor under each answer (ms): "the answer's bytes" is the median of ${FLOOR_RUNS} runs of the gateway's last answer (every page) served again by a bare node:http server ` +
      `(an empty request to it: ${fmtMs(bareMs)}; to this gateway, { __typename }: ${fmtMs(transportMs)}), each page requested, received and parsed by the same client; ` +
      `"floor" adds one Postgres round trip per page (SELECT 1: ${fmtMs(roundTripMs)}). "client parse" is the client's JSON.parse in the gateway's timed runs. ` +
      '"speed-up at the floor" is Postgres\'s median divided by the floor: the most a gateway doing nothing else could reach; "20x needs" is Postgres\'s median divided by 20.\n',
  );
  console.log('| shape | pages | client parse | the answer\'s bytes | floor | Postgres | speed-up at the floor | 20x needs |');
  console.log('|---|--:|--:|--:|--:|--:|--:|--:|');
  for (const m of results) {
    if (m.bytesMs === undefined || !m.pages) continue;
    const floor = m.bytesMs + m.pages * roundTripMs;
    const postgres = median(m.postgresMs);
    const ratio = postgres / floor;
    console.log(
      `| ${m.name} | ${int(m.pages)} | ${fmtMs(median(m.parseMs ?? []))} | ${fmtMs(m.bytesMs)} | ${fmtMs(floor)} | ${fmtMs(postgres)} | ${ratio.toFixed(ratio < 10 ? 2 : 1)}x | ${fmtMs(postgres / 20)} |`,
    );
  }
}

/**
 * A bare node:http server (its own process): answers every request with the next of the texts it
 * was last given (a PUT of a JSON array; at first an empty query's answer), in turn.
 */
const BARE_SERVER = `let texts = [Buffer.from('{"data":{"__typename":"Query"}}\\n')], next = 0;
require('node:http').createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    if (req.method === 'PUT') {
      texts = JSON.parse(Buffer.concat(chunks).toString('utf8')).map((text) => Buffer.from(text, 'utf8'));
      next = 0;
      res.writeHead(204).end();
      return;
    }
    const body = texts[next++ % texts.length];
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length }).end(body);
  });
}).listen(Number(process.env.PORT), '127.0.0.1');`;

interface BareServer {
  readonly url: string;
  /** The texts to answer with from now on, in turn. */
  load(texts: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

async function startBareServer(): Promise<BareServer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/graphql`;
  const server = await startChildServer({
    name: 'bare http',
    args: ['-e', BARE_SERVER],
    env: { PORT: String(port) },
    ready: () => fetch(url, { method: 'POST', signal: AbortSignal.timeout(1000) }).then(async (r) => (await r.arrayBuffer(), r.ok), () => false),
  });
  return {
    url,
    async load(texts) {
      const response = await fetch(url, { method: 'PUT', body: JSON.stringify(texts) });
      if (response.status !== 204) throw new Error(`the bare server answered HTTP ${response.status} to its texts`);
    },
    stop: () => server.stop(),
  };
}

/**
 * The floor under an answer, measured: the median of its pages' exact bytes from the bare server,
 * each page's request sent and its answer received and parsed by the same client as the
 * gateway's, FLOOR_RUNS times (after 3 untimed: an answer of ten 1.3 MB pages takes about 200 ms
 * a run). Only the Postgres round trip per page that exactness needs is missing (printFloors adds it).
 */
async function bytesFloor(bare: BareServer, exchanges: readonly Exchange[]): Promise<number> {
  await bare.load(exchanges.map((e) => e.text));
  return medianMs(async () => {
    for (const { request } of exchanges) JSON.parse((await postJson(bare.url, request)).text);
  }, FLOOR_RUNS, 3);
}

/** Runs of bytesFloor: a small answer's median needs more than the timed runs' few. */
const FLOOR_RUNS = 20;

/** Median ms of `runs` calls of `once`, after `warmUp` untimed. */
async function medianMs(once: () => Promise<unknown>, runs = 200, warmUp = 20): Promise<number> {
  for (let i = 0; i < warmUp; i++) await once();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) ms.push((await timed(once))[1]);
  return median(ms);
}

/** Median of SELECT 1 through the benchmark's pool: one Postgres round trip. */
const postgresRoundTrip = (sql: pg.Pool) => medianMs(() => sql.query('SELECT 1'));

/** Median of empty queries ({ __typename }) through the benchmark's client. */
function transportFloor(url: string): Promise<number> {
  return medianMs(async () => {
    const { status, text } = await postJson(url, { query: '{ __typename }' });
    if (status !== 200) throw new Error(`${url} answered HTTP ${status} to { __typename }`);
    JSON.parse(text);
  });
}

function printReport(r: {
  options: AnalyticsOptions;
  results: Measured[];
  firstExport: ExportOutcome;
  incremental: ExportOutcome;
  insertMs: number;
  afterExport: { name: string; engine: string; live: number; problem?: string }[];
  peakRss: number;
  hwmAfterExport: number;
  feedCatchUp: number;
  /** Median of an empty query through the same client: what HTTP and GraphQL cost alone. */
  transportMs: number;
  /** Median of the same empty request to a bare node:http server: HTTP alone. */
  bareMs: number;
  /** Median of SELECT 1 through the benchmark's pool: one Postgres round trip. */
  roundTripMs: number;
}): void {
  const warm = r.options.warmRuns > 0;
  const ratio = (p: number, g: number) => (Number.isNaN(g) || Number.isNaN(p) ? '–' : `${(p / g).toFixed(p / g < 10 ? 2 : 1)}x`);
  console.log(
    `| shape | gateway engine | gateway ms (median / p95) | Postgres ms (median / p95) | speed-up |${warm ? ' gateway ms, warm | speed-up, warm |' : ''} gateway ms, computed | speed-up, computed | equal | rows | lake + live invoices |`,
  );
  console.log(`|---|---|--:|--:|--:|${warm ? '--:|--:|' : ''}--:|--:|:-:|--:|--:|`);
  for (const m of r.results) {
    const g = median(m.gatewayMs);
    const p = median(m.postgresMs);
    const speedUp = ratio(p, g);
    const warmColumns = warm ? ` ${m.warmMs?.length ? fmtMs(median(m.warmMs)) : '–'} | ${m.warmMs?.length ? ratio(p, median(m.warmMs)) : '–'} |` : '';
    const computedColumns = m.computedMs?.length ? ` ${fmtMs(median(m.computedMs))} | ${ratio(p, median(m.computedMs))} |` : ' – | – |';
    const rows = m.rows === undefined ? '–' : `${int(m.rows)}${m.pages && m.pages > 1 ? ` (${m.pages} pages)` : ''}`;
    const fresh = m.lakeRows === undefined ? '–' : `${int(m.lakeRows)} + ${int(m.liveRows!)}`;
    console.log(
      `| ${m.name} | ${m.engine} | ${fmtMs(g)} / ${fmtMs(p95(m.gatewayMs))} | ${fmtMs(p)} / ${fmtMs(p95(m.postgresMs))} | ${speedUp} |${warmColumns}${computedColumns} ${m.error ? 'ERROR' : m.equal ? 'yes' : 'NO'} | ${rows} | ${fresh} |`,
    );
  }
  printStages(r.results, r.transportMs);
  printFloors(r.results, r.transportMs, r.bareMs, r.roundTripMs);
  console.log(
    `\n"after ${int(r.options.inserts)} inserts": one INSERT ... SELECT of ${int(r.options.inserts)} invoices dated now() between random customers (${fmtMs(r.insertMs)} ms), ` +
      'then the same shapes at once, without an export: the lake answers for what it holds, Postgres for the rest.',
  );
  const after = r.results.filter((m) => m.name.includes(', after '));
  if (after[0]?.firstMs !== undefined) {
    console.log(`first query after the inserts (${after[0].name}): ${fmtMs(after[0].firstMs)} ms, engine ${after[0].firstEngine}`);
  }

  const exportLine = (o: ExportOutcome) =>
    o.kind === 'exported' && 'rows' in o
      ? `${int(o.rows)} rows in ${o.seconds.toFixed(2)} s: ${int(o.rows / o.seconds)} rows/s (generation ${o.generation}; ${o.rewritten} month files rewritten, ${o.appended} appended)`
      : `no export: ${o.kind}`;
  console.log(
    `\nfirst export (lake.exportNow({ full: true }) on the seeded data, once the change feed had decoded the risk backfill's WAL, ` +
      `${r.feedCatchUp.toFixed(1)} s after the backfill ended): ${exportLine(r.firstExport)}`,
  );
  console.log(`incremental export after the ${int(r.options.inserts)} inserts: ${exportLine(r.incremental)}`);
  const problems = r.afterExport.filter((c) => c.problem);
  console.log(
    `after the incremental export, every shape once more: ${problems.length === 0 ? 'all equal' : `${problems.length} NOT equal`} ` +
      `(engines ${[...new Set(r.afterExport.map((c) => c.engine))].join(', ')}; live invoices ${[...new Set(r.afterExport.map((c) => c.live))].join(', ')})`,
  );
  console.log(`gateway peak RSS (VmHWM of its process, whole run): ${mb(r.peakRss)} MB; up to the end of the first export: ${mb(r.hwmAfterExport)} MB`);

  const warned = r.results.filter((m) => m.warnings.length > 0);
  for (const m of warned) console.log(`\nwarnings in "${m.name}": ${m.warnings.join(', ')}`);
  const bad = r.results.filter((m) => !m.equal);
  for (const m of bad) console.log(`\n${m.error ? 'ERROR' : 'MISMATCH'} in "${m.name}": ${m.error ?? m.mismatch}`);
  for (const c of problems) console.log(`\nMISMATCH after the incremental export in "${c.name}": ${c.problem}`);
  if (bad.length > 0 || problems.length > 0 || r.firstExport.kind !== 'exported' || r.incremental.kind !== 'exported') {
    console.log('\nthis run found faults: do not use its figures as a measurement');
    process.exitCode = 1;
  } else if (r.options.repeat < 3) {
    console.log('\nfewer than 3 timed runs per shape: a smoke test, not a measurement');
  }
}
