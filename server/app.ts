import 'reflect-metadata';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginCacheControlDisabled } from '@apollo/server/plugin/disabled';
import { ApolloServerPluginDrainHttpServer } from '@apollo/server/plugin/drainHttpServer';
import {
  ApolloServerPluginLandingPageLocalDefault,
  ApolloServerPluginLandingPageProductionDefault,
} from '@apollo/server/plugin/landingPage/default';
import type { Logger } from 'pino';
import { Metrics } from '../core/metrics.js';
import type { ChangeFeed } from '../pipelines/changeFeed.js';
import type { Context } from '../resolvers/context.js';
import { createLoaders } from '../resolvers/loaders.js';
import type { Cache } from '../sources/cache/cache.js';
import { createMemoryCache } from '../sources/cache/memoryCache.js';
import { createRedisCache } from '../sources/cache/redisCache.js';
import { createAdmission } from '../sources/cache/admission.js';
import { createInvalidationChannel, createLocalInvalidationChannel, type InvalidationChannel } from '../sources/cache/invalidationChannel.js';
import { cachePrefixes, readThrough } from '../sources/cache/readThrough.js';
import { createTieredCache, publishingInvalidations } from '../sources/cache/tieredCache.js';
import { createCustomerStore } from '../sources/postgres/customerStore.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { createInvoiceStore } from '../sources/postgres/invoiceStore.js';
import { createRiskStore } from '../sources/postgres/riskStore.js';
import { createEventBus, type EventBus } from '../sources/pubsub/eventBus.js';
import type { Config } from './config.js';
import { complexityLimitPlugin } from './complexityLimit.js';
import { createErrorFormatter } from './errors.js';
import { startFeed } from './feed.js';
import { createLake, type Lake } from './lake.js';
import { createHttpHandler, sendJson } from './http.js';
import { bearerMatches, createAuthenticator, untilExpiry } from './auth.js';
import { createRateLimits, type RateLimits } from './rateLimits.js';
import { trustedQuery } from './trustedDocuments.js';
import type { Viewer } from '../resolvers/viewer.js';
import { metricsPlugin, operationRecorder } from './metricsPlugin.js';
import { createKeptAnalytics } from './keptAnalytics.js';
import { createLeanPath } from './leanPath.js';
import { createResponseCache } from './responseCache.js';
import { createCompiledOperations } from './compiledOperations.js';
import { buildGatewaySchema } from './schema.js';
import { attachSubscriptions } from './subscriptions.js';

export interface Gateway {
  /** http://host:port/graphql (ws:// on the same path for subscriptions) */
  readonly url: string;
  readonly metrics: Metrics;
  readonly db: Database;
  readonly feed: ChangeFeed;
  readonly lake: Lake;
  /** Drains in-flight requests and sockets, then stops the feed and closes pools and clients. */
  stop(): Promise<void>;
}

interface Resources {
  readonly metrics: Metrics;
  readonly db: Database;
  /** For work that outlasts requests (the feed, the backfill, exports): no statement timeout. */
  readonly backgroundDb: Database;
  /**
   * For the lake-state reads of analytics queries (the feed barrier, the changes), made while the
   * query holds an analytics connection for its snapshot: from the analytics pool, as many
   * concurrent queries as it has connections would each hold one and wait for another.
   */
  readonly lakeStateDb: Database;
  /**
   * For analytics' own reads (their snapshots, the few-customer aggregates): the analytics time
   * limit as every connection's statement timeout, so a single statement needs no transaction to
   * set it, and analytics never take the lookups' connections.
   */
  readonly analyticsDb: Database;
  readonly cache: Cache;
  /** Every cache invalidation of every process (closed with the cache). */
  readonly invalidations: InvalidationChannel;
  readonly events: EventBus;
  readonly rateLimits: RateLimits;
  lake?: Lake;
  feed?: ChangeFeed;
}

/** Connections of the background pool: the feed's side queries, the scorer, the backfill, an export. */
const BACKGROUND_POOL_MAX = 5;
/** Keys per window of the second-read admission policy (a Bloom filter of 8 bits a key: 200 KB). */
const ADMISSION_TRACKED = 200_000;
/** Short reads, each released at once: a few connections serve every concurrent analytics query. */
const LAKE_STATE_POOL_MAX = 4;
/**
 * How long an idle kept-alive connection stays open: above the 60 s idle timeout of common load
 * balancers (AWS's ALB), so that the proxy closes an idle connection first and never sends a
 * request on one the gateway is closing (a 502). Node's 5 s also closed a client's connection
 * between requests a few seconds apart, and a request sent as the close arrived failed with
 * "socket hang up" (the analytics benchmark, between Postgres runs of about 5 s).
 * headersTimeout stays above it, as Node asks.
 */
const KEEP_ALIVE_MS = 65_000;

/**
 * Wires the gateway: sources, the change feed and its consumers, schema, Apollo Server on
 * node:http with graphql-ws beside it, health and metrics endpoints. `databaseUrl` is passed
 * separately because it may be the embedded Postgres's.
 */
export async function startGateway(config: Config, logger: Logger, databaseUrl: string): Promise<Gateway> {
  const metrics = new Metrics();
  const resources: Resources = {
    metrics,
    db: createDatabase({ url: databaseUrl, poolMax: config.database.poolMax, statementTimeoutMs: config.database.statementTimeoutMs }, logger, metrics),
    backgroundDb: createDatabase({ url: databaseUrl, poolMax: BACKGROUND_POOL_MAX, statementTimeoutMs: 0, reportPool: false }, logger, metrics),
    // Every lake query's barrier and change list: small statements, never worth compiling.
    lakeStateDb: createDatabase({ url: databaseUrl, poolMax: LAKE_STATE_POOL_MAX, statementTimeoutMs: config.database.statementTimeoutMs, reportPool: false, jit: false }, logger, metrics),
    analyticsDb: createDatabase(
      { url: databaseUrl, poolMax: config.analytics.poolMax, statementTimeoutMs: config.analytics.timeoutMs, reportPool: false, genericPlans: true },
      logger,
      metrics,
    ),
    ...createCache(config.cache, logger, metrics),
    events: createEventBus({ redisUrl: config.cache.redisUrl, prefix: config.cache.keyPrefix }, logger),
    rateLimits: createRateLimits(config, logger),
  };
  try {
    return await serve(config, logger, databaseUrl, resources);
  } catch (err) {
    // A gateway that failed to start must not keep a pool, a feed or a Redis client alive.
    await closeAll(resources);
    throw err;
  }
}

/**
 * Without Redis, one in-process LRU. With Redis, Redis behind an in-process tier (unless
 * CACHE_LOCAL_MAX_ENTRIES=0). Either way every invalidation the feed applies reaches every
 * process through the channel, which keeps the in-process tier and the response cache coherent.
 */
function createCache(options: Config['cache'], logger: Logger, metrics: Metrics): { cache: Cache; invalidations: InvalidationChannel } {
  if (!options.redisUrl) {
    const invalidations = createLocalInvalidationChannel();
    return { cache: publishingInvalidations(createMemoryCache(options), invalidations), invalidations };
  }
  const invalidations = createInvalidationChannel({ url: options.redisUrl, keyPrefix: options.keyPrefix }, logger);
  const shared = createRedisCache({ url: options.redisUrl, ...options, onInvalidated: (invalidation) => invalidations.publish(invalidation) }, logger, metrics);
  const withChannel: Cache = { ...shared, close: async () => void (await Promise.allSettled([shared.close(), invalidations.close()])) };
  if (options.localMaxEntries === 0) return { cache: withChannel, invalidations };
  const local = createMemoryCache({ ...options, maxEntries: options.localMaxEntries });
  return { cache: createTieredCache(local, withChannel, invalidations, metrics), invalidations };
}

async function closeAll({ feed, lake, db, backgroundDb, lakeStateDb, analyticsDb, cache, events, rateLimits }: Resources): Promise<void> {
  // The lake first: an export waiting for the feed gives up rather than outwait its stop.
  await lake?.stop().catch(() => undefined);
  await feed?.stop().catch(() => undefined);
  await Promise.allSettled([db.close(), backgroundDb.close(), lakeStateDb.close(), analyticsDb.close(), cache.close(), events.close(), rateLimits.close()]);
}

async function serve(config: Config, logger: Logger, databaseUrl: string, resources: Resources): Promise<Gateway> {
  const { metrics, db, backgroundDb, lakeStateDb, analyticsDb, cache, events, rateLimits } = resources;
  const auth = createAuthenticator(config.auth);
  if (auth.mode === 'off') logger.warn('AUTH_MODE=off: every client may read and write everything; set AUTH_MODE=required with AUTH_JWT_SECRET or AUTH_JWKS_URL before exposing the gateway');
  const trusted = config.trustedDocuments;
  const trustedDocuments = trusted ? (query: unknown, extensions: unknown) => trustedQuery(trusted, query, extensions) : undefined;
  if (!(await cache.ready(2000))) logger.warn('cache not reachable at start; serving from Postgres until it is');
  const invoices = createInvoiceStore(db);
  const customers = createCustomerStore(db);
  const risk = createRiskStore(db);
  const lake = await createLake({ config, logger, metrics, analyticsDb, backgroundDb, lakeStateDb });
  resources.lake = lake;
  const feed = await startFeed({ config, databaseUrl, db: backgroundDb, consumers: [lake.recorder], receiverPayments: lake.receiverPayments, cache, events, logger, metrics });
  resources.feed = feed;

  const httpServer = http.createServer({ keepAliveTimeout: KEEP_ALIVE_MS, headersTimeout: KEEP_ALIVE_MS + 1_000 });
  const production = config.env === 'production';
  const schema = await buildGatewaySchema();
  const formatError = createErrorFormatter(logger, config.exposeErrors && !production);
  // Absent ids and whole answers may be cached only while a feed invalidates (it tombstones ids
  // when they are inserted): this process's (streaming), or another's writing to the shared Redis (standby).
  const feedInvalidates = () => {
    const state = feed.status().state;
    return state === 'streaming' || (state === 'standby' && Boolean(config.cache.redisUrl));
  };
  // One per process, beneath every request's loaders (see readThrough).
  const admission = () => createAdmission(config.cache.admission, { windowSeconds: config.cache.admissionWindowSeconds, maxTracked: ADMISSION_TRACKED });
  const readOptions = { cache, metrics, invalidations: resources.invalidations, admission: admission(), cacheAbsent: feedInvalidates };
  const invoiceReads = readThrough({ ...readOptions, entity: 'invoice', keyPrefix: cachePrefixes.invoice, fetch: (ids) => invoices.byIds(ids) });
  const customerReads = readThrough({ ...readOptions, entity: 'customer', keyPrefix: cachePrefixes.customer, fetch: (ids) => customers.byIds(ids) });
  const context = (memoize: boolean, viewer: Viewer): Context => ({
    viewer,
    loaders: createLoaders({ invoices, invoiceReads, customerReads, risk, analytics: lake.engine, joined: lake.joined }, { memoize }),
    invoices,
    risk,
    analytics: lake.engine,
    joined: lake.joined,
    events,
    feed,
    limits: { subscriptionQueue: config.subscriptions.queue },
    metrics,
    logger,
    operation: {},
  });
  /** Charges an operation's estimated cost to its client's budget, over HTTP and WebSocket alike. */
  const spend = (viewer: Viewer, cost: number) => rateLimits.spend(viewer.subject, cost);
  const subscriptions = attachSubscriptions({
    httpServer,
    schema,
    connect: (authorization, address) => auth.authenticate(authorization, address),
    untilExpiry: (viewer) => untilExpiry(viewer, config.auth.clockSkewSeconds),
    recheckEveryMs: config.auth.keysMaxAgeSeconds * 1000,
    admit: (viewer) => rateLimits.request(viewer.subject),
    spend,
    maxCost: config.maxQueryComplexity,
    trustedQuery: trustedDocuments,
    context: (viewer) => context(false, viewer),
    formatError,
    maxPerConnection: config.subscriptions.maxPerConnection,
    maxMessageBytes: config.maxRequestBytes,
    logger,
  });

  const recordOperation = operationRecorder(metrics, logger);
  const apollo = new ApolloServer<Context>({
    schema,
    formatError,
    includeStacktraceInErrorResponses: false,
    introspection: config.introspection,
    // main.ts owns the signals: it drains, stops the embedded Postgres, then exits. Apollo's own
    // handler would re-raise SIGTERM after stopping and kill the process half-way.
    stopOnTerminationSignals: false,
    plugins: [
      // Also destroys, after its grace period, WebSockets whose peers never answer the close.
      ApolloServerPluginDrainHttpServer({ httpServer, stopGracePeriodMillis: 5_000 }),
      { serverWillStart: async () => ({ drainServer: () => subscriptions.dispose() }) },
      production ? ApolloServerPluginLandingPageProductionDefault() : ApolloServerPluginLandingPageLocalDefault({ embed: true }),
      metricsPlugin(recordOperation),
      complexityLimitPlugin<Context>(schema, config.maxQueryComplexity, metrics, async (ctx, cost) => {
        // Charged already when a compiled run began (and failed): once per operation.
        if (ctx.operation.cost !== undefined) return;
        ctx.operation.cost = cost;
        await rateLimits.spend(ctx.viewer.subject, cost);
      }),
      // Cache hints are unused here, and the plugin instruments every field resolver: measured,
      // it cost more CPU than resolving the fields.
      ApolloServerPluginCacheControlDisabled(),
    ],
  });
  await apollo.start();

  httpServer.on(
    'request',
    createHttpHandler<Context, Viewer>({
      apollo,
      admit: async (req) => {
        const viewer = await auth.authenticate(req.headers.authorization, req.socket.remoteAddress ?? 'unknown');
        await rateLimits.request(viewer.subject);
        return viewer;
      },
      context: (viewer) => context(true, viewer),
      leanPath:
        config.responseCacheMaxEntries > 0
          ? createLeanPath({
              cache: createResponseCache({
                maxEntries: config.responseCacheMaxEntries,
                ttlSeconds: config.cache.ttlSeconds,
                invalidations: resources.invalidations,
                invalidating: feedInvalidates,
                admission: admission(),
                metrics,
              }),
              compiled: createCompiledOperations(schema),
              spend,
              record: recordOperation,
              metrics,
              formatError,
              kept: createKeptAnalytics(),
              analytics: lake.engine,
            })
          : undefined,
      trustedQuery: trustedDocuments,
      maxBodyBytes: config.maxRequestBytes,
      onError: (err) => logger.error({ err }, 'HTTP handler failed'),
      routes: {
        '/healthz': (res) => sendJson(res, 200, { status: 'ok' }),
        '/readyz': async (res) => {
          const [postgres, lag] = await Promise.all([db.ping(1000), feed.lag().catch(() => ({ bytes: null, seconds: 0 }))]);
          // The feed does not decide readiness: lookups work without it; its state is shown.
          sendJson(res, postgres ? 200 : 503, { status: postgres ? 'ready' : 'unavailable', postgres, feed: { ...feed.status(), lag } });
        },
        '/metrics': async (res, req) => {
          if (!bearerMatches(req.headers.authorization, config.http.metricsToken)) {
            res.writeHead(401, { 'www-authenticate': 'Bearer realm="metrics"' }).end();
            return;
          }
          const body = await metrics.registry.metrics();
          res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body);
        },
      },
    }),
  );

  try {
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(config.http.port, config.http.host, resolve);
    });
  } catch (err) {
    await apollo.stop();
    throw err;
  }
  const { port } = httpServer.address() as AddressInfo;
  const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? 'localhost' : config.http.host;
  const url = `http://${host}:${port}/graphql`;
  logger.info({ url, lake: lake.store.location }, 'gateway listening');
  lake.startExports();

  let stopping: Promise<void> | undefined;
  return {
    url,
    metrics,
    db,
    feed,
    lake,
    stop() {
      stopping ??= (async () => {
        await apollo.stop();
        await closeAll(resources);
      })();
      return stopping;
    },
  };
}
