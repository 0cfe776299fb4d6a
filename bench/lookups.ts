import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { print } from 'graphql';
import { Redis } from 'ioredis';
import { BenchInvoiceDocument, BenchInvoicesWithPartiesDocument, type BenchInvoiceQuery, type BenchInvoicesWithPartiesQuery } from '../test/generated/graphql.js';
import { ensureBenchDatabase, type BenchData } from './benchDatabase.js';
import { freePort, startChildServer, type ChildServer } from './childServer.js';
import { graphqlCheck, runLoad, type LoadResult } from './load.js';
import { runCommand } from './runCommand.js';

const usage =
  'usage: npm run bench -- lookups [--invoices 1000000] [--customers 10000] [--connections 32] [--duration 15] [--warmup 5] ' +
  '[--warm-ids 20000] [--database-url postgres://postgres@127.0.0.1:5432/ig_bench_lookups] [--redis-url redis://127.0.0.1:6379]';

/** The repository root: this file runs as dist/bench/lookups.js. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PEER_DIR = `${ROOT}bench/postgraphile/`;
/** Postgres connections per server, the same for both (the gateway's default). */
const POOL_MAX = 20;
const WARM_BATCH = 1000;
const LIST_SIZE = 100;

const GATEWAY_ONE = print(BenchInvoiceDocument);
const GATEWAY_LIST = print(BenchInvoicesWithPartiesDocument);
// The same fields as BenchInvoice; PostGraphile v4 names a primary-key lookup <table>By<Pk>.
const PEER_ONE = 'query PeerInvoice($id: BigInt!) { invoiceByInvoiceId(invoiceId: $id) { invoiceId issueDate amountUsd issuerId receiverId } }';

interface Row {
  readonly scenario: string;
  readonly server: ChildServer;
  readonly result: LoadResult;
  readonly rssBytes: number;
  /** Share of cache lookups answered by Redis during the measured run (gateway only). */
  readonly hitRate?: number;
}

export async function lookups(argv: string[]): Promise<void> {
  const options = parseOptions(argv);
  const redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => undefined);
  // Without Redis the gateway silently serves every lookup from Postgres: "warm" would be a lie.
  await redis.connect().catch((err: Error) => {
    throw new Error(`Redis not reachable at ${options.redisUrl}: ${err.message}`);
  });
  const keyPrefix = `igbench:${randomBytes(4).toString('hex')}:`;
  const servers = new Set<ChildServer>();
  const stop = async (server: ChildServer) => {
    servers.delete(server);
    await server.stop();
  };
  // A fresh gateway per scenario, so each RSS figure is that scenario's alone, as PostGraphile's
  // is; the cache lives in Redis under this run's prefix and outlives the process.
  const startGateway = async () => {
    const port = await freePort();
    const server = await startChildServer({
      name: 'gateway',
      // As npm start and the Dockerfile run it.
      args: ['--max-old-space-size=256', `${ROOT}dist/server/main.js`],
      env: {
        NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1', PORT: String(port),
        DATABASE_URL: options.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX),
        REDIS_URL: options.redisUrl, CACHE_KEY_PREFIX: keyPrefix,
      },
      ready: async () => (await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) })).ok,
    });
    servers.add(server);
    return { server, url: `http://127.0.0.1:${port}/graphql` };
  };

  try {
    const data = await ensureBenchDatabase(options.databaseUrl, options, `${ROOT}dist/pipelines/seed.command.js`);
    if (!existsSync(`${PEER_DIR}node_modules/postgraphile/package.json`)) {
      await runCommand('npm', ['ci', '--prefix', PEER_DIR, '--no-audit', '--no-fund']);
    }
    printHeader(options, data);

    const peerPort = await freePort();
    const peerUrl = `http://127.0.0.1:${peerPort}/graphql`;
    const peer = await startChildServer({
      name: 'postgraphile',
      args: [`${PEER_DIR}server.js`],
      env: { NODE_ENV: 'production', PORT: String(peerPort), DATABASE_URL: options.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX) },
      ready: async () => (await graphql(peerUrl, '{ __typename }')).data !== undefined,
    });
    servers.add(peer);

    const anyId = () => randomInt(data.minId, data.maxId + 1);
    const one = (query: string) => {
      const head = `{"query":${JSON.stringify(query)},"variables":{"id":"`;
      return (id: number) => `${head}${id}"}}`;
    };
    const gatewayOne = one(GATEWAY_ONE);
    const gatewayOk = graphqlCheck<BenchInvoiceQuery>((d) => (d.invoice ? undefined : 'invoice(id) returned null'));
    const rows: Row[] = [];
    const measure = async (scenario: string, target: { server: ChildServer; url: string }, body: () => string, check: (body: string) => string | undefined) => {
      const { server, url } = target;
      const load = { url, connections: options.connections, body, check };
      const isGateway = server !== peer;
      server.resetPeakRss();
      const warmup = options.warmup > 0 ? await runLoad({ ...load, duration: options.warmup }) : { errors: 0, firstError: undefined };
      const before = isGateway ? await cacheCounts(url) : undefined;
      const result = await runLoad({ ...load, duration: options.duration });
      const after = isGateway ? await cacheCounts(url) : undefined;
      if (server.exited()) throw new Error(`${server.name} exited (${server.exited()}) during "${scenario}"`);
      const hits = before && after ? after.hits - before.hits : 0;
      const cacheLookups = before && after ? hits + after.misses - before.misses : 0;
      const row: Row = {
        scenario,
        server,
        result: { ...result, errors: warmup.errors + result.errors, firstError: warmup.firstError ?? result.firstError },
        rssBytes: server.peakRss(),
        hitRate: cacheLookups ? hits / cacheLookups : undefined,
      };
      rows.push(row);
      console.error(`${scenario} (${server.name}): ${Math.round(result.requestsPerSecond)} req/s, ${warmup.errors + result.errors} errors`);
      if (isGateway) await stop(server);
      return row;
    };

    const cold = await startGateway();
    await checkSameRow(cold.url, peerUrl, data);
    await measure('invoice(id), cold cache', cold, () => gatewayOne(anyId()), gatewayOk);

    const warmer = await startGateway();
    const warmIds = await warmCache(warmer.url, data, options.warmIds);
    await stop(warmer.server);
    const warmId = () => warmIds[randomInt(warmIds.length)]!;
    const warm = await measure('invoice(id), warm cache', await startGateway(), () => gatewayOne(warmId()), gatewayOk);

    const listHead = `{"query":${JSON.stringify(GATEWAY_LIST)},"variables":{"ids":`;
    await measure(
      `invoices(ids: ${LIST_SIZE}) + issuer, receiver, warm`,
      await startGateway(),
      () => `${listHead}${JSON.stringify(Array.from({ length: LIST_SIZE }, () => String(warmId())))}}}`,
      graphqlCheck<BenchInvoicesWithPartiesQuery>((d) =>
        d.invoices.length === LIST_SIZE && d.invoices.every((i) => i?.issuer.name && i.receiver.name) ? undefined : 'invoices(ids) missing rows',
      ),
    );

    const peerOne = one(PEER_ONE);
    const peerOk = graphqlCheck<{ invoiceByInvoiceId: unknown }>((d) => (d.invoiceByInvoiceId ? undefined : 'invoiceByInvoiceId returned null'));
    const peerRow = await measure('invoiceByInvoiceId(id)', { server: peer, url: peerUrl }, () => peerOne(anyId()), peerOk);

    printTable(rows, { warm, peer: peerRow }, options, data, warmIds.length);
  } finally {
    await Promise.allSettled([...servers].map((s) => s.stop()));
    await deleteKeys(redis, keyPrefix).catch((err: Error) => console.error(`could not delete this run's cache keys (${keyPrefix}*): ${err.message}`));
    redis.disconnect();
  }
}

interface Options {
  readonly invoices: number;
  readonly customers: number;
  readonly connections: number;
  readonly duration: number;
  /** Seconds of load before each measured run, discarded: a fresh Node process needs 2-3 s to reach steady speed (JIT). */
  readonly warmup: number;
  readonly warmIds: number;
  readonly databaseUrl: string;
  readonly redisUrl: string;
}

function parseOptions(argv: string[]): Options {
  const text = (fallback: string) => ({ type: 'string', default: fallback }) as const;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        invoices: text('1000000'), customers: text('10000'), connections: text('32'), duration: text('15'), warmup: text('5'), 'warm-ids': text('20000'),
        'database-url': text('postgres://postgres@127.0.0.1:5432/ig_bench_lookups'), 'redis-url': text('redis://127.0.0.1:6379'),
      },
    }));
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${usage}`);
  }
  const whole = (name: keyof typeof values, min: number) => {
    const value = Number(values[name].replaceAll('_', ''));
    if (!Number.isSafeInteger(value) || value < min) throw new Error(`--${name} must be a whole number of at least ${min}\n${usage}`);
    return value;
  };
  return {
    invoices: whole('invoices', LIST_SIZE),
    customers: whole('customers', 2),
    connections: whole('connections', 1),
    duration: whole('duration', 1),
    warmup: whole('warmup', 0),
    warmIds: whole('warm-ids', LIST_SIZE),
    databaseUrl: values['database-url'],
    redisUrl: values['redis-url'],
  };
}

async function graphql<T>(url: string, query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: unknown[] }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(30_000),
  });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
  return (await response.json()) as { data?: T; errors?: unknown[] };
}

/** Both servers must read the same rows, or the comparison compares nothing. */
async function checkSameRow(gatewayUrl: string, peerUrl: string, data: BenchData): Promise<void> {
  const id = String(randomInt(data.minId, data.maxId + 1));
  const ours = await graphql<BenchInvoiceQuery>(gatewayUrl, GATEWAY_ONE, { id });
  const theirs = await graphql<{ invoiceByInvoiceId: { amountUsd: string; issuerId: number; receiverId: number } | null }>(peerUrl, PEER_ONE, { id });
  const a = ours.data?.invoice;
  const b = theirs.data?.invoiceByInvoiceId;
  if (!a || !b || a.amountUsd !== b.amountUsd || a.issuerId !== String(b.issuerId) || a.receiverId !== String(b.receiverId)) {
    throw new Error(`gateway and PostGraphile disagree on invoice ${id}: ${JSON.stringify(ours)} vs ${JSON.stringify(theirs)}`);
  }
}

/** Loads `count` distinct random invoices (and their parties) into the cache; returns their ids. */
async function warmCache(url: string, data: BenchData, count: number): Promise<number[]> {
  const ids = new Set<number>();
  const wanted = Math.min(count, data.invoices);
  while (ids.size < wanted) ids.add(randomInt(data.minId, data.maxId + 1));
  const all = [...ids];
  for (let start = 0; start < all.length; start += WARM_BATCH) {
    const batch = all.slice(start, start + WARM_BATCH).map(String);
    const result = await graphql<BenchInvoicesWithPartiesQuery>(url, GATEWAY_LIST, { ids: batch });
    if (result.errors || result.data?.invoices.some((i) => i === null) !== false) {
      throw new Error(`warming the cache failed: ${JSON.stringify(result).slice(0, 300)}`);
    }
  }
  return all;
}

/** Cache hits and misses over all entities, from the gateway's Prometheus endpoint. */
async function cacheCounts(graphqlUrl: string): Promise<{ hits: number; misses: number }> {
  const text = await (await fetch(new URL('/metrics', graphqlUrl))).text();
  const sum = (metric: string) =>
    text
      .split('\n')
      .filter((line) => line.startsWith(`${metric}{`) || line.startsWith(`${metric} `))
      .reduce((total, line) => total + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
  return { hits: sum('gateway_cache_hits_total'), misses: sum('gateway_cache_misses_total') };
}

/** Removes this run's keys only: the Redis is shared with tests and other runs (no FLUSHALL). */
async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  for await (const keys of redis.scanStream({ match: `${prefix}*`, count: 1000 }) as AsyncIterable<string[]>) {
    if (keys.length) await redis.unlink(...keys);
  }
}

function printHeader(options: Options, data: BenchData): void {
  const database = new URL(options.databaseUrl);
  console.log('# lookup benchmark: invoice-gateway vs PostGraphile v4\n');
  console.log(`machine: ${availableParallelism()} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`);
  console.log(`gateway: ${gitRevision()}`);
  console.log(
    `data: ${data.invoices} invoices, ${data.customers} customers in ${database.host}${database.pathname}` +
      (data.seedSeconds ? ` (seeded in ${data.seedSeconds.toFixed(0)} s)` : ' (already seeded)'),
  );
  console.log(
    `load: autocannon, ${options.connections} connections, pipelining 1, ${options.duration} s per scenario after ${options.warmup} s warm-up, ` +
      `a random id in every request; ${POOL_MAX} Postgres connections per server; ` +
      'every response checked; a fresh gateway process per scenario\n',
  );
}

/** The commit measured, so that a figure can be traced to the code that produced it. */
function gitRevision(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `commit ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain') ? ' plus uncommitted changes' : ''}`;
  } catch {
    return 'commit unknown (not a git checkout)';
  }
}

function printTable(rows: Row[], goal: { warm: Row; peer: Row }, options: Options, data: BenchData, warmSet: number): void {
  const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
  const ms = (value: number) => value.toFixed(2);
  console.log('| scenario | server | req/s | p50 ms | p99 ms | max RSS MB | cache hits | errors |');
  console.log('|---|---|--:|--:|--:|--:|--:|--:|');
  for (const { scenario, server, result, rssBytes, hitRate } of rows) {
    const hits = hitRate === undefined ? '–' : `${(hitRate * 100).toFixed(1)}%`;
    console.log(`| ${scenario} | ${server.name} | ${Math.round(result.requestsPerSecond)} | ${ms(result.p50Ms)} | ${ms(result.p99Ms)} | ${mb(rssBytes)} | ${hits} | ${result.errors} |`);
  }
  console.log(
    `\ncold: ids drawn at random over all ${data.invoices} invoices, starting from an empty cache that fills as it goes. ` +
      `warm: ${warmSet} random invoices and their parties loaded into Redis first (invoices(ids), ${WARM_BATCH} per request), ids drawn from that set. ` +
      `PostGraphile: ids drawn over all ${data.invoices} invoices (it has no cache).`,
  );

  const { warm, peer } = goal;
  const ratio = warm.result.requestsPerSecond / peer.result.requestsPerSecond;
  const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log(`\nwarm invoice(id) / PostGraphile req/s: ${ratio.toFixed(2)}x (goal >= 1.5x: ${mark(ratio >= 1.5)})`);
  console.log(`p99 ${ms(warm.result.p99Ms)} ms vs ${ms(peer.result.p99Ms)} ms (goal lower: ${mark(warm.result.p99Ms < peer.result.p99Ms)})`);
  console.log(`max RSS ${mb(warm.rssBytes)} MB vs ${mb(peer.rssBytes)} MB (goal no higher: ${mark(warm.rssBytes <= peer.rssBytes)})`);

  const failed = rows.filter((r) => r.result.errors > 0);
  for (const r of failed) console.log(`\nERRORS in "${r.scenario}" (${r.result.errors}), first: ${r.result.firstError}`);
  if (failed.length || options.duration < 10) {
    console.log(failed.length ? '\nthese figures measure failures: do not use them' : '\nshort run: a smoke test, not a measurement');
  }
  if (failed.length) process.exitCode = 1;
}
