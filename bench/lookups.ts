import { randomBytes, randomInt } from 'node:crypto';
import { SignJWT } from 'jose';
import { Redis } from 'ioredis';
import type { BenchInvoiceQuery, BenchInvoicesWithPartiesQuery } from '../test/generated/graphql.js';
import pg from 'pg';
import { ensureBenchDatabase } from './benchDatabase.js';
import { dropSlot, feedSlot } from './lakeGateway.js';
import { graphqlCheck, runLoad, type LoadResult } from './load.js';
import {
  GATEWAY_LIST, GATEWAY_ONE, PEER_ONE, busiestCustomer, cacheCounts, checkSameRow, deleteKeys, warmCache, warmList, type PeerInvoiceQuery,
} from './lookupData.js';
import { POSTGRAPHILE_4, POSTGRAPHILE_5, installPeer, lookupServers, settle, type Target } from './lookupServers.js';
import { LIST_SIZE, ROOT, RUNS_PER_ROUND, parseLookupOptions, type LookupOptions } from './lookupSettings.js';
import { printHeader, printReport, type RunFacts, type ScenarioRow } from './report.js';

const BENCH_ISSUER = 'https://bench.invoice-gateway.test/';
const BENCH_AUDIENCE = 'invoice-gateway';
/**
 * Pause before each measured run: autocannon returns with requests still in flight, and the
 * server finishing them (100 ms each for the list) would count in the next run's CPU and cache hits.
 */
const RUN_GAP_MS = 1000;

/** One scenario on one server. */
interface Scenario {
  readonly scenario: string;
  readonly target: Target;
  readonly body: () => string;
  readonly check: (body: string) => string | undefined;
  readonly headers?: Record<string, string>;
  readonly warm?: boolean;
}

export async function lookups(argv: string[]): Promise<void> {
  const options = parseLookupOptions(argv);
  const redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => undefined);
  // Without Redis the gateway silently serves every lookup from Postgres: "warm" would be a lie.
  await redis.connect().catch((err: Error) => {
    throw new Error(`Redis not reachable at ${options.redisUrl}: ${err.message}`);
  });
  // Every gateway shares the cache in Redis under this run's prefix.
  const keyPrefix = `igbench:${randomBytes(4).toString('hex')}:`;
  const slot = feedSlot('lookups', options.databaseUrl);
  const servers = lookupServers({ databaseUrl: options.databaseUrl, redisUrl: options.redisUrl, keyPrefix, slot });

  try {
    const data = await ensureBenchDatabase(options.databaseUrl, options, `${ROOT}dist/server/commands/seed.js`);
    const peerVersions = [`${POSTGRAPHILE_4.label}: ${await installPeer(POSTGRAPHILE_4)}`, `${POSTGRAPHILE_5.label}: ${await installPeer(POSTGRAPHILE_5)}`];

    // Warm and uniform lookups on gateways of their own: the uniform ids would evict the warm set
    // from the in-process tier. The authenticated trio differ from each other only in auth.
    const warmGateway = await servers.gateway('gateway-warm');
    // The same without the response cache: every request through Apollo, graphql-js and type-graphql.
    const fullPathGateway = await servers.gateway('gateway-no-response-cache', { RESPONSE_CACHE_MAX_ENTRIES: '0' }, 'gateway, RESPONSE_CACHE_MAX_ENTRIES=0');
    const uniformGateway = await servers.gateway('gateway-uniform');
    const secret = randomBytes(32).toString('hex');
    const auth = { AUTH_MODE: 'required', AUTH_JWT_SECRET: secret, AUTH_ISSUER: BENCH_ISSUER, AUTH_AUDIENCE: BENCH_AUDIENCE };
    // The production default path adds budgets kept in Redis (two checks per request), sized
    // here so that the load generator never reaches them.
    const budgets = { RATE_LIMIT_REQUESTS: '1000000000', RATE_LIMIT_COST: '1000000000000' };
    const authGateways = [
      await servers.gateway('gateway-auth-off'),
      await servers.gateway('gateway-token', auth),
      await servers.gateway('gateway-budgets', { ...auth, ...budgets }),
    ] as const;
    const peers = [await servers.postgraphile(POSTGRAPHILE_4), await servers.postgraphile(POSTGRAPHILE_5)];
    for (const peer of peers) await checkSameRow(warmGateway.url, { label: peer.label, url: peer.url }, data);
    const { holder, busyShare } = await settle([warmGateway, fullPathGateway, uniformGateway, ...authGateways]);

    const warmIds = await warmCache(warmGateway.url, data, options.warmIds);
    // The authenticated path: one customer's own invoices (cached), looked up without auth and
    // with that customer's token (verified, then every row checked against its rules).
    const customer = await busiestCustomer(options.databaseUrl);
    // Through a gateway not measured in that group, so the three start alike (the cache is in Redis).
    await warmList(warmGateway.url, customer.invoiceIds);
    const token = await new SignJWT({ role: 'customer', customer_id: customer.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(BENCH_ISSUER)
      .setAudience(BENCH_AUDIENCE)
      .setSubject(`bench-customer-${customer.id}`)
      .setExpirationTime('2h')
      .sign(new TextEncoder().encode(secret));
    const bearer = { authorization: `Bearer ${token}` };

    const facts: RunFacts = {
      peers: peerVersions, gateways: 3 + authGateways.length, feedHolder: holder, idleBusyShare: busyShare,
      warmSetSize: warmIds.length, customerInvoices: customer.invoiceIds.length,
    };
    printHeader(options, data, facts);

    const pick = (ids: readonly number[]) => () => ids[randomInt(ids.length)]!;
    const warmId = pick(warmIds);
    const anyId = () => randomInt(data.minId, data.maxId + 1);
    const ownId = pick(customer.invoiceIds);
    const one = (query: string) => {
      const head = `{"query":${JSON.stringify(query)},"variables":{"id":"`;
      return (id: () => number) => () => `${head}${id()}"}}`;
    };
    const gatewayOne = one(GATEWAY_ONE);
    const peerOne = one(PEER_ONE);
    const gatewayOk = graphqlCheck<BenchInvoiceQuery>((d) => (d.invoice ? undefined : 'invoice(id) returned null'));
    const peerOk = graphqlCheck<PeerInvoiceQuery>((d) => (d.invoiceByInvoiceId ? undefined : 'invoiceByInvoiceId returned null'));
    const typename = JSON.stringify({ query: '{ __typename }' });
    const typenameOk = graphqlCheck<{ __typename: string }>((d) => (d.__typename === 'Query' ? undefined : `__typename was ${d.__typename}`));
    const lookup = (scenario: string, gateway: Target, id: () => number, warm: boolean): Scenario[] => [
      { scenario, target: gateway, body: gatewayOne(id), check: gatewayOk, warm },
      ...peers.map((target) => ({ scenario, target, body: peerOne(id), check: peerOk })),
    ];
    const listHead = `{"query":${JSON.stringify(GATEWAY_LIST)},"variables":{"ids":`;
    const ownScenario = `invoice(id), one customer's ${customer.invoiceIds.length} invoices`;

    // Each group's servers are measured side by side in turns.
    const groups: Scenario[][] = [
      [warmGateway, ...peers, fullPathGateway].map((target) => ({ scenario: '{ __typename }', target, body: () => typename, check: typenameOk })),
      [...lookup('invoice(id), warm', warmGateway, warmId, true), { scenario: 'invoice(id), warm', target: fullPathGateway, body: gatewayOne(warmId), check: gatewayOk, warm: true }],
      lookup('invoice(id), uniform', uniformGateway, anyId, false),
      [
        { scenario: `${ownScenario}, AUTH_MODE=off`, target: authGateways[0], body: gatewayOne(ownId), check: gatewayOk, warm: true },
        { scenario: `${ownScenario}, that customer's token`, target: authGateways[1], body: gatewayOne(ownId), check: gatewayOk, headers: bearer, warm: true },
        { scenario: `${ownScenario}, token and per-client budgets in Redis`, target: authGateways[2], body: gatewayOne(ownId), check: gatewayOk, headers: bearer, warm: true },
      ],
      [
        {
          scenario: `invoices(ids: ${LIST_SIZE}) + issuer, receiver, warm`,
          target: warmGateway,
          body: () => `${listHead}${JSON.stringify(Array.from({ length: LIST_SIZE }, () => String(warmId())))}}}`,
          check: graphqlCheck<BenchInvoicesWithPartiesQuery>((d) =>
            d.invoices.length === LIST_SIZE && d.invoices.every((i) => i?.issuer.name && i.receiver.name) ? undefined : 'invoices(ids) missing rows',
          ),
          warm: true,
        },
      ],
    ];
    if (groups.flat().length !== RUNS_PER_ROUND) throw new Error(`RUNS_PER_ROUND (${RUNS_PER_ROUND}) does not count the ${groups.flat().length} scenarios`);

    const rows = await measureRounds(groups, options);
    const row = (scenario: Scenario) => rows[groups.flat().indexOf(scenario)]!;
    const [, warm, uniform, authRows] = groups.map((g) => g.map(row)) as [ScenarioRow[], ScenarioRow[], ScenarioRow[], ScenarioRow[]];
    printReport(
      rows,
      {
        warm: { gateway: warm[0]!, peers: warm.slice(1, 1 + peers.length) },
        uniform: { gateway: uniform[0]!, peers: uniform.slice(1) },
        authOff: authRows[0]!,
        token: authRows[1]!,
      },
      options,
      data,
      facts,
    );
  } finally {
    await servers.stopAll();
    const sql = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
    await dropSlot(sql, slot).catch((err: Error) => console.error(`could not drop the gateways' replication slot ${slot}: ${err.message}`));
    await sql.end();
    await deleteKeys(redis, keyPrefix).catch((err: Error) => console.error(`could not delete this run's cache keys (${keyPrefix}*): ${err.message}`));
    redis.disconnect();
  }
}

/**
 * Warms each scenario up once, then measures every scenario once per round: the groups in turn,
 * and within a group its servers in turn, a different one first each round (a single run of each
 * moved by ±10% on this VM, and whatever drifts during the run drifts for every server alike).
 * Returns a row per scenario, in the order given.
 */
async function measureRounds(groups: readonly (readonly Scenario[])[], options: LookupOptions): Promise<ScenarioRow[]> {
  const all = groups.flat();
  const measured = new Map(all.map((s) => [s, { warmup: undefined as LoadResult | undefined, runs: [] as LoadResult[], rss: 0, hits: 0, lookups: 0 }]));
  const run = (s: Scenario, duration: number) =>
    runLoad({ url: s.target.url, headers: s.headers, connections: options.connections, duration, body: s.body, check: s.check });
  if (options.warmup > 0) for (const s of all) measured.get(s)!.warmup = await run(s, options.warmup);

  const rotate = <T>(items: readonly T[], by: number) => items.map((_, i) => items[(i + by) % items.length]!);
  for (let round = 0; round < options.rounds; round++) {
    for (const group of rotate(groups, round)) {
      for (const s of rotate(group, round)) {
        const { server, url, gateway } = s.target;
        const m = measured.get(s)!;
        await new Promise((resolve) => setTimeout(resolve, RUN_GAP_MS));
        server.resetPeakRss();
        const before = gateway ? await cacheCounts(url) : undefined;
        const result = await run(s, options.duration);
        const after = gateway ? await cacheCounts(url) : undefined;
        if (server.exited()) throw new Error(`${server.name} exited (${server.exited()}) during "${s.scenario}"`);
        m.runs.push(result);
        m.rss = Math.max(m.rss, server.peakRss());
        if (before && after) {
          m.hits += after.hits - before.hits;
          m.lookups += after.hits + after.misses - before.hits - before.misses;
        }
        console.error(
          `round ${round + 1}/${options.rounds}, ${s.scenario} on ${server.name}: ${Math.round(result.requestsPerSecond)} req/s, ` +
            `${Math.round(result.cpuUsPerRequest)} CPU µs/req, ${result.errors} errors`,
        );
      }
    }
  }
  return all.map((s) => {
    const m = measured.get(s)!;
    return { scenario: s.scenario, server: s.target.label, warm: s.warm ?? false, warmup: m.warmup, runs: m.runs, rssBytes: m.rss, hitRate: m.lookups ? m.hits / m.lookups : undefined };
  });
}
