import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { print } from 'graphql';
import { Redis } from 'ioredis';
import { freePort } from '../test/fixtures/network.js';
import { BenchInvoiceDocument, BenchInvoicesWithPartiesDocument, type BenchInvoiceQuery, type BenchInvoicesWithPartiesQuery } from '../test/generated/graphql.js';
import { ensureBenchDatabase, type BenchData } from './benchDatabase.js';
import { startChildServer, type ChildServer } from './childServer.js';
import { graphqlCheck, runLoad } from './load.js';
import { CACHE_TTL_SECONDS, LIST_SIZE, POOL_MAX, ROOT, START_TIMEOUT_S, WARM_BATCH, parseLookupOptions } from './lookupSettings.js';
import { printHeader, printReport, type ScenarioRow } from './report.js';
import { runCommand } from './runCommand.js';

const PEER_DIR = `${ROOT}bench/postgraphile/`;

const GATEWAY_ONE = print(BenchInvoiceDocument);
const GATEWAY_LIST = print(BenchInvoicesWithPartiesDocument);
// The same fields as BenchInvoice; PostGraphile v4 names a primary-key lookup <table>By<Pk>.
const PEER_ONE = 'query PeerInvoice($id: BigInt!) { invoiceByInvoiceId(invoiceId: $id) { invoiceId issueDate amountUsd issuerId receiverId } }';

export async function lookups(argv: string[]): Promise<void> {
  const options = parseLookupOptions(argv);
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
      args: ['--max-old-space-size=256', '--max-semi-space-size=8', `${ROOT}dist/server/main.js`],
      env: {
        NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1', PORT: String(port),
        DATABASE_URL: options.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX),
        REDIS_URL: options.redisUrl, CACHE_KEY_PREFIX: keyPrefix, CACHE_TTL_SECONDS: String(CACHE_TTL_SECONDS),
      },
      readyTimeoutMs: START_TIMEOUT_S * 1000,
      ready: async () => (await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) })).ok,
    });
    servers.add(server);
    return { server, url: `http://127.0.0.1:${port}/graphql` };
  };

  try {
    const data = await ensureBenchDatabase(options.databaseUrl, options, `${ROOT}dist/server/commands/seed.js`);
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
    const rows: ScenarioRow[] = [];
    const measure = async (
      { scenario, warm }: { scenario: string; warm: boolean },
      target: { server: ChildServer; url: string },
      body: () => string,
      check: (body: string) => string | undefined,
    ) => {
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
      const row: ScenarioRow = {
        scenario,
        serverName: server.name,
        result: { ...result, errors: warmup.errors + result.errors, firstError: warmup.firstError ?? result.firstError },
        rssBytes: server.peakRss(),
        hitRate: cacheLookups ? hits / cacheLookups : undefined,
        warm,
      };
      rows.push(row);
      console.error(`${scenario} (${server.name}): ${Math.round(result.requestsPerSecond)} req/s, ${warmup.errors + result.errors} errors`);
      if (isGateway) await stop(server);
      return row;
    };

    const cold = await startGateway();
    await checkSameRow(cold.url, peerUrl, data);
    await measure({ scenario: 'invoice(id), cold cache', warm: false }, cold, () => gatewayOne(anyId()), gatewayOk);

    const warmer = await startGateway();
    const warmIds = await warmCache(warmer.url, data, options.warmIds);
    await stop(warmer.server);
    const warmId = () => warmIds[randomInt(warmIds.length)]!;
    const warm = await measure({ scenario: 'invoice(id), warm cache', warm: true }, await startGateway(), () => gatewayOne(warmId()), gatewayOk);

    const listHead = `{"query":${JSON.stringify(GATEWAY_LIST)},"variables":{"ids":`;
    await measure(
      { scenario: `invoices(ids: ${LIST_SIZE}) + issuer, receiver, warm`, warm: true },
      await startGateway(),
      () => `${listHead}${JSON.stringify(Array.from({ length: LIST_SIZE }, () => String(warmId())))}}}`,
      graphqlCheck<BenchInvoicesWithPartiesQuery>((d) =>
        d.invoices.length === LIST_SIZE && d.invoices.every((i) => i?.issuer.name && i.receiver.name) ? undefined : 'invoices(ids) missing rows',
      ),
    );

    const peerOne = one(PEER_ONE);
    const peerOk = graphqlCheck<{ invoiceByInvoiceId: unknown }>((d) => (d.invoiceByInvoiceId ? undefined : 'invoiceByInvoiceId returned null'));
    const peerRow = await measure({ scenario: 'invoiceByInvoiceId(id)', warm: false }, { server: peer, url: peerUrl }, () => peerOne(anyId()), peerOk);

    printReport(rows, { warm, peer: peerRow }, options, data, warmIds.length);
  } finally {
    await Promise.allSettled([...servers].map((s) => s.stop()));
    await deleteKeys(redis, keyPrefix).catch((err: Error) => console.error(`could not delete this run's cache keys (${keyPrefix}*): ${err.message}`));
    redis.disconnect();
  }
}

// Not test/fixtures/gateway.ts's postGraphQL: importing that module loads the server in this
// process, and the peer's query is plain text, not a typed document of our schema.
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
// Not test/fixtures/services.ts's deleteRedisKeys: that one only reaches the tests' REDIS_URL.
async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  for await (const keys of redis.scanStream({ match: `${prefix}*`, count: 1000 }) as AsyncIterable<string[]>) {
    if (keys.length) await redis.unlink(...keys);
  }
}
