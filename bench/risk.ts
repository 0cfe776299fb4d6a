import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { riskSql } from '../sources/postgres/riskSql.js';
import { median } from './stats.js';
import pg from 'pg';
import { ensureBenchDatabase } from './benchDatabase.js';
import { startChildServer, type ChildServer } from './childServer.js';
import { ROOT } from './lookupSettings.js';
import { latencies, startSubscribers, startWriters } from './riskLoad.js';
import { pino } from 'pino';
import { freePort } from '../test/fixtures/network.js';
import { createDatabase } from '../sources/postgres/database.js';
import { createSlot, ensurePublication, openReplicationStream } from '../sources/postgres/replication.js';
import { parseBenchOptions } from './options.js';

const usage =
  'usage: npm run bench -- risk [--invoices 1000000] [--customers 10000] [--duration 30] [--rates 100,500,1000] [--subscribers 1,100] ' +
  '[--writers 8] [--writer-seconds 20] [--rounds 2] [--database-url postgres://postgres@127.0.0.1:5432/ig_bench_risk] [--redis-url redis://127.0.0.1:6379]';

interface RiskOptions {
  readonly invoices: number;
  readonly customers: number;
  readonly duration: number;
  readonly rates: number[];
  readonly subscribers: number[];
  readonly writers: number;
  readonly writerSeconds: number;
  readonly rounds: number;
  readonly databaseUrl: string;
  readonly redisUrl: string;
}

function parseOptions(argv: string[]): RiskOptions {
  const { text, whole, wholeList } = parseBenchOptions(
    argv,
    {
      invoices: '1000000', customers: '10000', duration: '30', rates: '100,500,1000', subscribers: '1,100', writers: '8', 'writer-seconds': '20', rounds: '2',
      'database-url': 'postgres://postgres@127.0.0.1:5432/ig_bench_risk', 'redis-url': 'redis://127.0.0.1:6379',
    },
    usage,
  );
  return {
    invoices: whole('invoices', 1),
    customers: whole('customers', 1),
    duration: whole('duration', 1),
    rates: wholeList('rates', 1),
    subscribers: wholeList('subscribers', 1),
    writers: whole('writers', 1),
    writerSeconds: whole('writer-seconds', 1),
    rounds: whole('rounds', 1),
    databaseUrl: text('database-url'),
    redisUrl: text('redis-url'),
  };
}

const SLOT = 'ig_feed_bench_risk';

/**
 * `npm run bench -- risk`: what the change feed and scorer cost writers, how fast the backfill
 * runs, commit-to-subscriber latency at fixed insert rates, and the highest insert rate scored
 * without a growing lag. Everything on one machine: Postgres, Redis, the gateway, the writers and
 * the subscribers share its cores, so the figures include that contention.
 */
export async function risk(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  const data = await ensureBenchDatabase(options.databaseUrl, options, `${ROOT}dist/server/commands/seed.js`);
  const sql = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  try {
    await resetGatewayState(sql, data.maxId);
    console.log('# risk benchmark: change feed, scoring and riskScored\n');
    console.log(`machine: ${availableParallelism()} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`);
    console.log(`data: ${data.invoices} invoices, ${data.customers} customers; writers: single-row autocommit INSERTs (as psql), ${options.writers} connections\n`);

    // Writer cost, alternating, several rounds: nothing attached, a pg_notify trigger, the feed.
    const cost: Record<'none' | 'trigger' | 'stream' | 'feed', number[]> = { none: [], trigger: [], stream: [], feed: [] };
    let backfill: { scored: number; seconds: number; perSecond: number } | undefined;
    let gateway: Awaited<ReturnType<typeof startGateway>> | undefined;
    for (let round = 0; round < options.rounds; round++) {
      await dropFeed(sql);
      cost.none.push(await writeFlatOut(options, data.customers));
      cost.trigger.push(await withNotifyTrigger(options.databaseUrl, () => writeFlatOut(options, data.customers)));
      cost.stream.push(await withBareStream(options.databaseUrl, () => writeFlatOut(options, data.customers)));
      if (round === 0) await sql.query(`TRUNCATE invoice_risk_scores, ${riskSql.DERIVED_TABLES}`);
      gateway = await startGateway(options);
      const done = await gateway.backfillDone;
      if (round === 0) backfill = done;
      cost.feed.push(await writeFlatOut(options, data.customers));
      await waitUntilScored(sql, 120_000);
      if (round < options.rounds - 1) {
        await gateway.server.stop();
        gateway = undefined;
      }
    }

    // Latency at fixed rates, with 1 and 100 subscribers on their own sockets.
    const latencyRows: string[] = [];
    gateway!.server.resetPeakRss();
    for (const count of options.subscribers) {
      const subscribers = await startSubscribers(gateway!.url, count, await cursorNow(sql));
      for (const rate of options.rates) {
        const writers = await startWriters(options.databaseUrl, options.writers, data.customers, true);
        const lag = sampleLag(gateway!.url);
        const reached = await writers.atRate(rate, options.duration);
        await subscribers.waitFor(writers.committedAt.keys(), 120_000);
        const maxLag = await lag.stop();
        await waitUntilScored(sql, 300_000);
        const l = latencies(writers.committedAt, subscribers.received);
        latencyRows.push(`| ${rate} | ${Math.round(reached)} | ${count} | ${l.p50.toFixed(1)} | ${l.p95.toFixed(1)} | ${l.p99.toFixed(1)} | ${l.max.toFixed(0)} | ${maxLag.toFixed(2)} |`);
        await writers.close();
        for (const seen of subscribers.received) seen.clear();
      }
      await subscribers.close();
    }
    const rss = gateway!.server.peakRss();
    // The next phase starts from an idle gateway, not one still delivering the last backlog.
    await waitForIdleFeed(gateway!.url);

    // The highest insert rate: writers flat out; the scorer keeps up if the lag stays flat and
    // everything is scored moments after the writers stop.
    const lag = sampleLag(gateway!.url);
    const before = await scoredCount(sql);
    const started = performance.now();
    const flatRate = await writeFlatOut(options, data.customers);
    const writing = (performance.now() - started) / 1000;
    const drainStarted = performance.now();
    await waitUntilScored(sql, 300_000);
    const drain = (performance.now() - drainStarted) / 1000;
    const maxLag = await lag.stop();
    const scored = (await scoredCount(sql)) - before;
    await gateway!.server.stop();

    printReport({ options, cost, backfill: backfill!, latencyRows, rss, flat: { rate: flatRate, scoredPerSecond: scored / (writing + drain), drain, maxLag } });
  } finally {
    await resetGatewayState(sql, data.maxId).catch(() => undefined);
    await sql.end();
  }
}

async function startGateway(options: RiskOptions) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/graphql`;
  const dataDir = await mkdtemp(path.join(tmpdir(), 'ig-bench-risk-'));
  let resolveBackfill!: (value: { scored: number; seconds: number; perSecond: number }) => void;
  const backfillDone = new Promise<{ scored: number; seconds: number; perSecond: number }>((resolve) => (resolveBackfill = resolve));
  const server: ChildServer = await startChildServer({
    name: 'gateway',
    args: ['--max-old-space-size=256', '--max-semi-space-size=8', `${ROOT}dist/server/main.js`],
    env: {
      NODE_ENV: 'production',
      // One client measuring throughput: no tokens, no per-client budgets.
      AUTH_MODE: 'off',
      RATE_LIMIT_REQUESTS: '0',
      RATE_LIMIT_COST: '0',
      DATABASE_URL: options.databaseUrl,
      REDIS_URL: options.redisUrl,
      CACHE_KEY_PREFIX: 'ig_bench_risk:',
      FEED_SLOT: SLOT,
      PORT: String(port),
      HOST: '127.0.0.1',
      MAX_SUBSCRIPTIONS_PER_CONNECTION: '5',
      // Its own scratch directory, and no lake exports: this measures the feed and scoring
      // (npm run bench -- analytics measures exports).
      DATA_DIR: dataDir,
      LAKE_EXPORT_INTERVAL_MS: '0',
    },
    ready: async () => (await fetch(new URL('/readyz', url))).ok,
    onLine: (line) => {
      if (!line.includes('risk backfill done') && !line.includes('change feed streaming')) return;
      const entry = JSON.parse(line) as { msg: string; scored?: number; seconds?: number; perSecond?: number };
      if (entry.msg === 'risk backfill done') resolveBackfill({ scored: entry.scored!, seconds: entry.seconds!, perSecond: entry.perSecond! });
    },
  });
  // A backfill with nothing to do logs nothing: streaming with an empty queue is done too.
  void (async () => {
    for (;;) {
      const ready = (await (await fetch(new URL('/readyz', url))).json()) as { feed: { state: string } };
      if (ready.feed.state === 'streaming') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
    for (;;) {
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM risk_backfill_issuers`);
      if (rows[0].n === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await pool.end();
    setTimeout(() => resolveBackfill({ scored: 0, seconds: 0, perSecond: 0 }), 2000);
  })();
  const stop = async () => {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  };
  return { server: { ...server, stop }, url, backfillDone };
}

async function writeFlatOut(options: RiskOptions, customers: number): Promise<number> {
  const writers = await startWriters(options.databaseUrl, options.writers, customers, false);
  try {
    return await writers.flatOut(options.writerSeconds);
  } finally {
    await writers.close();
  }
}

/** What users build by hand: an AFTER INSERT trigger calling pg_notify, and a listener. */
async function withNotifyTrigger<T>(url: string, work: () => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: url });
  const listener = new pg.Client({ connectionString: url });
  await admin.connect();
  await listener.connect();
  let heard = 0;
  listener.on('notification', () => heard++);
  await listener.query('LISTEN bench_invoices');
  await admin.query(`CREATE OR REPLACE FUNCTION bench_notify_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('bench_invoices', row_to_json(NEW)::text); RETURN NEW; END $$`);
  await admin.query(`CREATE TRIGGER bench_notify AFTER INSERT ON invoices FOR EACH ROW EXECUTE FUNCTION bench_notify_invoice()`);
  try {
    return await work();
  } finally {
    await admin.query(`DROP TRIGGER IF EXISTS bench_notify ON invoices`);
    await admin.query(`DROP FUNCTION IF EXISTS bench_notify_invoice()`);
    await listener.end();
    await admin.end();
    console.error(`trigger run: the listener heard ${heard} notifications`);
  }
}

/**
 * The feed alone: a slot streamed and acknowledged by a bare consumer that does nothing with
 * the changes. What logical decoding itself costs writers, apart from the scoring.
 */
async function withBareStream<T>(url: string, work: () => Promise<T>): Promise<T> {
  const logger = pino({ level: 'warn' });
  const db = createDatabase({ url, poolMax: 1, statementTimeoutMs: 0 }, logger);
  const slot = 'ig_bench_bare_stream';
  await ensurePublication(db, 'invoice_gateway');
  await createSlot(url, db, slot, async () => undefined);
  let transactions = 0;
  let stream: ReturnType<typeof openReplicationStream> | undefined;
  try {
    stream = openReplicationStream({
      url,
      slot,
      publication: 'invoice_gateway',
      logger,
      onTransaction: async (tx) => {
        transactions++;
        stream!.acknowledge(tx.lsn);
      },
    });
    await stream.started;
    return await work();
  } finally {
    await stream?.stop();
    await db.query({ name: 'bench_drop_bare_slot', text: 'SELECT pg_drop_replication_slot($1)' }, [slot]).catch(() => undefined);
    await db.close();
    console.error(`bare stream run: ${transactions} transactions streamed`);
  }
}

/** Reports the highest feed lag (seconds) seen on /readyz while it runs. */
function sampleLag(url: string) {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const ready = (await (await fetch(new URL('/readyz', url))).json()) as { feed: { lag: { seconds: number } } };
        max = Math.max(max, ready.feed.lag.seconds);
      } catch {
        // a sample missed under load says nothing about the lag
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return max;
    },
  };
}

async function waitForIdleFeed(url: string): Promise<void> {
  for (let quiet = 0; quiet < 4; ) {
    const ready = (await (await fetch(new URL('/readyz', url))).json()) as { feed: { lag: { seconds: number } } };
    quiet = ready.feed.lag.seconds === 0 ? quiet + 1 : 0;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function cursorNow(sql: pg.Pool): Promise<string> {
  const { rows } = await sql.query(`SELECT coalesce(max(live_seq), 0)::text AS n FROM invoice_risk_scores`);
  return Buffer.from(`live:${rows[0].n}`).toString('base64url');
}

async function scoredCount(sql: pg.Pool): Promise<number> {
  return (await sql.query(`SELECT count(*)::int AS n FROM invoice_risk_scores`)).rows[0].n;
}

async function waitUntilScored(sql: pg.Pool, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await sql.query(`SELECT (SELECT count(*) FROM invoices) - (SELECT count(*) FROM invoice_risk_scores) AS missing`);
    if (Number(rows[0].missing) <= 0) return;
    if (Date.now() > deadline) throw new Error(`${rows[0].missing} invoices not scored after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function dropFeed(sql: pg.Pool): Promise<void> {
  await sql.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [SLOT]);
  for (let i = 0; i < 50; i++) {
    const { rows } = await sql.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [SLOT]);
    if (rows.length === 0) return;
    if (!rows[0].active) {
      await sql.query(`SELECT pg_drop_replication_slot($1)`, [SLOT]);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Removes what earlier runs added, so the database matches its seed again. */
async function resetGatewayState(sql: pg.Pool, maxId: number): Promise<void> {
  await dropFeed(sql);
  await sql.query(`DROP TRIGGER IF EXISTS bench_notify ON invoices`);
  await sql.query(`DELETE FROM invoices WHERE invoice_id > $1`, [maxId]);
  await sql.query(`SELECT setval(pg_get_serial_sequence('invoices', 'invoice_id'), $1)`, [maxId]);
  await sql.query(`DELETE FROM invoice_risk_scores WHERE invoice_id > $1`, [maxId]).catch(() => undefined);
}

function printReport(r: {
  options: RiskOptions;
  cost: Record<'none' | 'trigger' | 'stream' | 'feed', number[]>;
  backfill: { scored: number; seconds: number; perSecond: number };
  latencyRows: string[];
  rss: number;
  flat: { rate: number; scoredPerSecond: number; drain: number; maxLag: number };
}): void {
  const none = median(r.cost.none);
  const pct = (v: number) => `${(((v - none) / none) * 100).toFixed(1)}%`;
  console.log(`## Writer cost (${r.options.writers} writers flat out, ${r.options.writerSeconds} s per run, ${r.options.rounds} alternating rounds, medians)\n`);
  console.log('| attached to invoices | inserts/s | runs | vs nothing |');
  console.log('|---|--:|---|--:|');
  console.log(`| nothing | ${Math.round(none)} | ${r.cost.none.map(Math.round).join(', ')} | – |`);
  console.log(`| pg_notify AFTER INSERT trigger + LISTEN | ${Math.round(median(r.cost.trigger))} | ${r.cost.trigger.map(Math.round).join(', ')} | ${pct(median(r.cost.trigger))} |`);
  console.log(`| the feed alone (slot streamed and acknowledged, nothing done with it) | ${Math.round(median(r.cost.stream))} | ${r.cost.stream.map(Math.round).join(', ')} | ${pct(median(r.cost.stream))} |`);
  console.log(`| the gateway's feed + scorer (+ cache invalidation) | ${Math.round(median(r.cost.feed))} | ${r.cost.feed.map(Math.round).join(', ')} | ${pct(median(r.cost.feed))} |`);
  console.log(`\n## Backfill\n\n${r.backfill.scored} invoices scored in ${r.backfill.seconds} s: ${r.backfill.perSecond} invoices/s\n`);
  console.log(`## Commit to subscriber (${r.options.duration} s per rate; commit = the writer's INSERT returning; event = the subscriber's socket receiving it)\n`);
  console.log('| target inserts/s | reached | subscribers | p50 ms | p95 ms | p99 ms | max ms | max feed lag s |');
  console.log('|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const row of r.latencyRows) console.log(row);
  console.log(`\ngateway peak RSS during the latency runs: ${(r.rss / 2 ** 20).toFixed(0)} MB`);
  console.log(`\n## Highest insert rate\n\n${r.options.writers} writers flat out for ${r.options.writerSeconds} s: ${Math.round(r.flat.rate)} inserts/s; ` +
    `scored ${Math.round(r.flat.scoredPerSecond)} invoices/s over the run and its drain; the last invoice scored ${r.flat.drain.toFixed(2)} s after the writers stopped; max feed lag ${r.flat.maxLag.toFixed(2)} s`);
}
