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
import { buildGatewaySchema } from './schema.js';
import type { Cache } from '../sources/cache/cache.js';
import { createMemoryCache } from '../sources/cache/memoryCache.js';
import { createRedisCache } from '../sources/cache/redisCache.js';
import { createCustomerStore } from '../sources/postgres/customerStore.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { createInvoiceStore } from '../sources/postgres/invoiceStore.js';
import type { Config } from './config.js';
import type { Context } from '../resolvers/context.js';
import { complexityLimitPlugin } from './complexityLimit.js';
import { createErrorFormatter } from './errors.js';
import { createHttpHandler, sendJson } from './http.js';
import { createLoaders } from '../resolvers/loaders.js';
import { Metrics } from '../core/metrics.js';
import { metricsPlugin } from './metricsPlugin.js';

export interface Gateway {
  /** http://host:port/graphql */
  readonly url: string;
  readonly metrics: Metrics;
  readonly db: Database;
  /** Drains in-flight requests, then closes the HTTP server, the pool and the cache. */
  stop(): Promise<void>;
}

/**
 * Wires the gateway: sources, schema, Apollo Server on node:http, health and metrics endpoints.
 * `databaseUrl` is passed separately because it may be the embedded Postgres's.
 */
export async function startGateway(config: Config, logger: Logger, databaseUrl: string): Promise<Gateway> {
  const metrics = new Metrics();
  const db = createDatabase({ url: databaseUrl, poolMax: config.database.poolMax, statementTimeoutMs: config.database.statementTimeoutMs }, logger, metrics);
  const cache: Cache = config.cache.redisUrl
    ? createRedisCache({ url: config.cache.redisUrl, ...config.cache }, logger, metrics)
    : createMemoryCache({ maxEntries: config.cache.maxEntries, ttlSeconds: config.cache.ttlSeconds });
  try {
    return await serve(config, logger, metrics, db, cache);
  } catch (err) {
    // A gateway that failed to start must not keep a pool or a reconnecting Redis client alive.
    await Promise.allSettled([db.close(), cache.close()]);
    throw err;
  }
}

async function serve(config: Config, logger: Logger, metrics: Metrics, db: Database, cache: Cache): Promise<Gateway> {
  if (!(await cache.ready(2000))) logger.warn('cache not reachable at start; serving from Postgres until it is');
  const invoices = createInvoiceStore(db);
  const customers = createCustomerStore(db);

  const httpServer = http.createServer();
  const production = config.env === 'production';

  const schema = await buildGatewaySchema();
  const apollo = new ApolloServer<Context>({
    schema,
    formatError: createErrorFormatter(logger, config.exposeErrors && !production),
    includeStacktraceInErrorResponses: false,
    introspection: config.introspection,
    // main.ts owns the signals: it drains, stops the embedded Postgres, then exits. Apollo's own
    // handler would re-raise SIGTERM after stopping and kill the process half-way.
    stopOnTerminationSignals: false,
    plugins: [
      ApolloServerPluginDrainHttpServer({ httpServer }),
      production ? ApolloServerPluginLandingPageProductionDefault() : ApolloServerPluginLandingPageLocalDefault({ embed: true }),
      metricsPlugin(metrics, logger),
      complexityLimitPlugin(schema, config.maxQueryComplexity, metrics),
      // Cache hints are unused here, and the plugin instruments every field resolver: measured,
      // it cost more CPU than resolving the fields.
      ApolloServerPluginCacheControlDisabled(),
    ],
  });
  await apollo.start();

  httpServer.on(
    'request',
    createHttpHandler<Context>({
      apollo,
      context: async () => ({ loaders: createLoaders({ invoices, customers, cache, metrics }), invoices, logger }),
      maxBodyBytes: config.maxRequestBytes,
      onError: (err) => logger.error({ err }, 'HTTP handler failed'),
      routes: {
        '/healthz': (res) => sendJson(res, 200, { status: 'ok' }),
        '/readyz': async (res) => {
          const postgres = await db.ping(1000);
          sendJson(res, postgres ? 200 : 503, { status: postgres ? 'ready' : 'unavailable', postgres });
        },
        '/metrics': async (res) => {
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
  logger.info({ url }, 'gateway listening');

  let stopping: Promise<void> | undefined;
  return {
    url,
    metrics,
    db,
    stop() {
      stopping ??= (async () => {
        await apollo.stop();
        await Promise.allSettled([db.close(), cache.close()]);
      })();
      return stopping;
    },
  };
}
