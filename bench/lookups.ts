import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { print } from 'graphql';
import { SignJWT } from 'jose';
import pg from 'pg';
import { Redis } from 'ioredis';
import { freePort } from '../test/fixtures/network.js';
import { BenchInvoiceDocument, BenchInvoicesWithPartiesDocument, type BenchInvoiceQuery, type BenchInvoicesWithPartiesQuery } from '../test/generated/graphql.js';
import { ensureBenchDatabase, type BenchData } from './benchDatabase.js';
import { startChildServer, type ChildServer } from './childServer.js';
import { graphqlCheck, runLoad, type LoadResult } from './load.js';
import { median } from './stats.js';
import { AUTH_ROUNDS, CACHE_TTL_SECONDS, LIST_SIZE, POOL_MAX, ROOT, START_TIMEOUT_S, WARM_BATCH, parseLookupOptions } from './lookupSettings.js';
import { printHeader, printReport, type ScenarioRow } from './report.js';
import { runCommand } from './runCommand.js';

const PEER_DIR = `${ROOT}bench/postgraphile/`;
const BENCH_ISSUER = 'https://bench.invoice-gateway.test/';
const BENCH_AUDIENCE = 'invoice-gateway';


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
  // The authenticated scenarios' gateway verifies HS256 tokens signed with this run's secret.
  const secret = randomBytes(32).toString('hex');
  const startGateway = async (env: Record<string, string> = {}) => {
    const port = await freePort();
    const server = await startChildServer({
      name: 'gateway',
      // As npm start and the Dockerfile run it.
      args: ['--max-old-space-size=256', '--max-semi-space-size=8', `${ROOT}dist/server/main.js`],
      env: {
        NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1', PORT: String(port),
        DATABASE_URL: options.databaseUrl, DATABASE_POOL_MAX: String(POOL_MAX),
        REDIS_URL: options.redisUrl, CACHE_KEY_PREFIX: keyPrefix, CACHE_TTL_SECONDS: String(CACHE_TTL_SECONDS),
        // One load generator is one client: per-client budgets would measure the limit, not the path.
        AUTH_MODE: 'off', RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '0',
        ...env,
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
      headers?: Record<string, string>,
    ) => {
      const { server, url } = target;
      const load = { url, connections: options.connections, body, check, headers };
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

    // The authenticated path: one customer's own invoices (warm), looked up without auth and
    // with that customer's token (verified, then every row checked against its rules).
    const customer = await busiestCustomer(options.databaseUrl);
    const ownIds = customer.invoiceIds;
    await warmList(await startGateway(), ownIds, stop);
    const ownId = () => ownIds[randomInt(ownIds.length)]!;
    const customerToken = await new SignJWT({ role: 'customer', customer_id: customer.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(BENCH_ISSUER)
      .setAudience(BENCH_AUDIENCE)
      .setSubject(`bench-customer-${customer.id}`)
      .setExpirationTime('2h')
      .sign(new TextEncoder().encode(secret));
    const auth = { AUTH_MODE: 'required', AUTH_JWT_SECRET: secret, AUTH_ISSUER: BENCH_ISSUER, AUTH_AUDIENCE: BENCH_AUDIENCE };
    const bearer = { authorization: `Bearer ${customerToken}` };
    // The production default path adds budgets kept in Redis (two checks per request), sized
    // here so that the load generator never reaches them.
    const budgets = { RATE_LIMIT_REQUESTS: '1000000000', RATE_LIMIT_COST: '1000000000000' };
    // Three gateways live at once: none runs the feed or exports, so none does background work
    // the others do not (the first would hold the slot, and export the lake every 10 s).
    const quiet = { CHANGE_FEED: '0', LAKE_EXPORT_INTERVAL_MS: '0' };
    const authScenarios = [
      { scenario: `invoice(id), warm, one customer's ${ownIds.length} invoices, AUTH_MODE=off`, target: await startGateway(quiet) },
      { scenario: "the same, that customer's token", target: await startGateway({ ...quiet, ...auth }), headers: bearer },
      { scenario: 'the same, token and per-client budgets in Redis', target: await startGateway({ ...quiet, ...auth, ...budgets }), headers: bearer },
    ];
    // Side by side, in turns, several rounds: a single run of each moved by ±10% on this VM.
    const authResults = await alternate(authScenarios.map((s) => ({ ...s.target, headers: s.headers })), AUTH_ROUNDS, options, () => gatewayOne(ownId()), gatewayOk);
    for (const s of authScenarios) await stop(s.target.server);

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
    console.log(`\nThe authenticated path: ${AUTH_ROUNDS} rounds, the three scenarios in turns (a different one first each round), ${options.duration} s each; medians.\n`);
    console.log('| scenario | req/s (median) | p99 ms (median) | vs AUTH_MODE=off | req/s of each round |');
    console.log('|---|--:|--:|--:|---|');
    const base = median(authResults[0]!.map((r) => r.requestsPerSecond));
    authScenarios.forEach((s, i) => {
      const rps = median(authResults[i]!.map((r) => r.requestsPerSecond));
      const change = i === 0 ? '–' : `${rps >= base ? '+' : ''}${((rps / base - 1) * 100).toFixed(1)}%`;
      console.log(`| ${s.scenario} | ${Math.round(rps)} | ${median(authResults[i]!.map((r) => r.p99Ms)).toFixed(2)} | ${change} | ${authResults[i]!.map((r) => Math.round(r.requestsPerSecond)).join(', ')} |`);
    });
    const tokenChange = median(authResults[1]!.map((r) => r.requestsPerSecond)) / base - 1;
    console.log(`\ncustomer token vs AUTH_MODE=off: ${(tokenChange * 100).toFixed(1)}% (goal: within 10%: ${Math.abs(tokenChange) <= 0.1 ? 'met' : 'NOT met'})`);
    const failed = authResults.flat().reduce((n, r) => n + r.errors, 0);
    if (failed > 0) {
      console.log(`authenticated scenarios: ${failed} failed requests (${authResults.flat().find((r) => r.firstError)?.firstError}): do not use these figures`);
      process.exitCode = 1;
    }
  } finally {
    await Promise.allSettled([...servers].map((s) => s.stop()));
    await dropFeedSlot(options.databaseUrl).catch((err: Error) => console.error(`could not drop the gateways' replication slot: ${err.message}`));
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

/** Measures each target once per round, rotating which goes first; results per target, per round. */
async function alternate(
  targets: readonly { url: string; headers?: Record<string, string> }[],
  rounds: number,
  options: { connections: number; duration: number; warmup: number },
  body: () => string,
  check: (body: string) => string | undefined,
): Promise<LoadResult[][]> {
  const results: LoadResult[][] = targets.map(() => []);
  for (const t of targets) if (options.warmup > 0) await runLoad({ url: t.url, headers: t.headers, connections: options.connections, duration: options.warmup, body, check });
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < targets.length; k++) {
      const i = (round + k) % targets.length;
      const t = targets[i]!;
      results[i]!.push(await runLoad({ url: t.url, headers: t.headers, connections: options.connections, duration: options.duration, body, check }));
    }
  }
  return results;
}

/** The customer party to the most invoices (at most 2,000 of them, all returned). */
async function busiestCustomer(databaseUrl: string): Promise<{ id: number; invoiceIds: number[] }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: number }>('SELECT issuer_id AS id FROM invoices GROUP BY issuer_id ORDER BY count(*) DESC LIMIT 1');
    const id = rows[0]!.id;
    const invoices = await client.query<{ id: string }>('SELECT invoice_id::text AS id FROM invoices WHERE issuer_id = $1 OR receiver_id = $1 LIMIT 2000', [id]);
    return { id, invoiceIds: invoices.rows.map((r) => Number(r.id)) };
  } finally {
    await client.end();
  }
}

/**
 * The slot the gateways' change feed created (ig_feed_<database>): a slot left behind keeps WAL
 * for ever, and the next run creates it again anyway.
 */
async function dropFeedSlot(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'ig_feed_' || current_database() AND NOT active`);
  } finally {
    await client.end();
  }
}

/** Loads the given invoices into the cache through a gateway, then stops it. */
async function warmList(target: { server: ChildServer; url: string }, ids: number[], stop: (server: ChildServer) => Promise<void>): Promise<void> {
  for (let start = 0; start < ids.length; start += WARM_BATCH) {
    const result = await graphql<BenchInvoicesWithPartiesQuery>(target.url, GATEWAY_LIST, { ids: ids.slice(start, start + WARM_BATCH).map(String) });
    if (result.errors) throw new Error(`warming the cache failed: ${JSON.stringify(result).slice(0, 300)}`);
  }
  await stop(target.server);
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
