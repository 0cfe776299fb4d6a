import path from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { Metrics } from '../core/metrics.js';
import type { FeedConsumer } from '../pipelines/changeFeed.js';
import { exportLake, type ExportOutcome, type ExportProgress } from '../pipelines/lakeExporter.js';
import { createLakeChangeRecorder } from '../pipelines/lakeChanges.js';
import { createDuck, type Duck } from '../sources/duckdb/duckdb.js';
import { createDatasets } from '../sources/lake/datasets.js';
import { createFewAnswers } from '../sources/lake/fewAnswers.js';
import { createFreshInvoices } from '../sources/lake/freshInvoices.js';
import { createJoined, type Joined } from '../sources/lake/joined.js';
import { createLakeWriter } from '../sources/lake/lakeWriter.js';
import { createReceiverPayments, type ReceiverPayments } from '../sources/lake/receiverPayments.js';
import { createStatsEngine, type StatsEngine } from '../sources/lake/statsEngine.js';
import { createLocalStore } from '../sources/objectStore/localStore.js';
import { createObjectCache } from '../sources/objectStore/objectCache.js';
import type { ObjectStore } from '../sources/objectStore/objectStore.js';
import { createS3Store } from '../sources/objectStore/s3Store.js';
import type { Database } from '../sources/postgres/database.js';
import { createLakeStore, createRecordedPosition } from '../sources/postgres/lakeStore.js';
import { createStatsStore } from '../sources/postgres/statsStore.js';
import type { Config } from './config.js';

/** How long an analytics query waits for the feed to confirm the lake is current. */
const BARRIER_TIMEOUT_MS = 2_000;
/** An export waits this long for the change feed to record what its snapshot sees. */
const FEED_WAIT_MS = 30_000;
/** An export may take this long (a first export of a large table) before it is interrupted. */
const EXPORT_TIMEOUT_MS = 60 * 60_000;
/** The receivers' payment behaviour reads every invoice and payment: background work, not a request. */
const RECEIVER_PAYMENTS_TIMEOUT_MS = 30 * 60_000;

export interface Lake {
  readonly engine: StatsEngine;
  /** Invoices joined with the users' datasets (profiles, payments, ratings). */
  readonly joined: Joined;
  /** How receivers pay, for the risk model. */
  readonly receiverPayments: ReceiverPayments;
  /** DuckDB queries run so far. */
  duckQueries(): number;
  /** The feed consumer that records what the lake does not hold yet. */
  readonly recorder: FeedConsumer;
  readonly store: ObjectStore;
  /** One export now (npm run export, tests); 'busy' when another gateway is exporting. */
  exportNow(onProgress?: ExportProgress, options?: { full?: boolean }): Promise<ExportOutcome>;
  /** Exports every LAKE_EXPORT_INTERVAL_MS (a first one soon after start). */
  startExports(): void;
  stop(): Promise<void>;
}

export function createObjectStore(config: Config): ObjectStore {
  const { s3, localDir, prefix } = config.lake;
  // A store silent for as long as a query may take is unavailable, not waited for.
  return s3 ? createS3Store({ ...s3, prefix, silentMs: config.analytics.timeoutMs }) : createLocalStore(path.join(localDir, prefix));
}

/**
 * The lake's parts: the object store (S3 or a directory), the local object cache, the process's
 * DuckDB, the analytics engine for requests, and the exporter on the background pool.
 */
export async function createLake(deps: { config: Config; logger: Logger; metrics: Metrics; analyticsDb: Database; backgroundDb: Database; lakeStateDb: Database }): Promise<Lake> {
  const { config, logger, metrics } = deps;
  const store = createObjectStore(config);
  // A query reads its files within its time limit.
  const cache = await createObjectCache({ dir: config.lake.cacheDir, maxBytes: config.lake.cacheMaxBytes, inUseMs: config.analytics.timeoutMs });
  let duck: Duck | undefined;
  try {
    duck = await createDuck(config.analytics.duckdb, logger);
  } catch (err) {
    store.close();
    throw err;
  }
  // The feed's recorder (background pool) wakes the barriers of this process's queries (lake-state pool).
  const recordedPosition = createRecordedPosition();
  // The feed's recorder keeps the invoices it delivers; this process's queries group the fresh ones from it.
  const fresh = createFreshInvoices(config.lake.freshMaxChanges);
  // The same feed proves kept few-customer answers current.
  const few = createFewAnswers();
  const engine = createStatsEngine({
    fresh,
    few,
    stats: createStatsStore(deps.analyticsDb, logger),
    lakeStore: createLakeStore(deps.lakeStateDb, recordedPosition),
    lake: { store, cache, duck },
    postgresMaxCustomers: config.analytics.postgresMaxCustomers,
    postgresMaxInvoices: config.analytics.postgresMaxInvoices,
    timeoutMs: config.analytics.timeoutMs,
    barrierTimeoutMs: BARRIER_TIMEOUT_MS,
    logger,
    metrics,
  });
  const stopping = new AbortController();
  const datasets = createDatasets({ store, cache, duck, ...config.lake.sources, timeoutMs: config.analytics.timeoutMs, logger });
  const joined = createJoined({ datasets, duck, stats: engine, timeoutMs: config.analytics.timeoutMs });
  // The feed's recorder and the exporter share the background pool: neither works for a request.
  const backgroundLakeStore = createLakeStore(deps.backgroundDb, recordedPosition);
  const exporter = {
    db: deps.backgroundDb,
    store,
    cache,
    writer: createLakeWriter(duck, EXPORT_TIMEOUT_MS),
    stagingDir: path.join(config.dataDir, 'lake-staging'),
    logger: logger.child({ component: 'lake' }),
    lakeStore: backgroundLakeStore,
    feedWaitMs: FEED_WAIT_MS,
    signal: stopping.signal,
  };
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  let stopped = false;
  let lastError = '';

  const exportNow = async (onProgress?: ExportProgress, options?: { full?: boolean }) => {
    const outcome = await exportLake(exporter, onProgress, options);
    metrics.lakeExports.inc({ outcome: outcome.kind });
    if (outcome.kind === 'exported') {
      metrics.lakeExportedRows.inc(outcome.rows);
      metrics.lakeGeneration.set(outcome.generation);
    }
    return outcome;
  };
  const round = async () => {
    try {
      await exportNow();
      lastError = '';
    } catch (err) {
      metrics.lakeExports.inc({ outcome: 'failed' });
      // Logged once per distinct error: an object store that is down does not flood the log.
      const message = errorMessage(err);
      if (message !== lastError) exporter.logger.warn({ err }, 'lake export failed; the lake keeps its last generation and tries again');
      lastError = message;
    }
  };
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = round().finally(() => schedule(config.lake.exportIntervalMs));
    }, ms);
    timer.unref();
  };

  return {
    engine,
    joined,
    receiverPayments: createReceiverPayments({ datasets, duck, timeoutMs: RECEIVER_PAYMENTS_TIMEOUT_MS }),
    duckQueries: () => duck!.sessions(),
    recorder: createLakeChangeRecorder(backgroundLakeStore, fresh, few),
    store,
    exportNow,
    startExports() {
      if (config.lake.exportIntervalMs > 0) schedule(Math.min(2_000, config.lake.exportIntervalMs));
    },
    async stop() {
      stopped = true;
      stopping.abort();
      clearTimeout(timer);
      await running.catch(() => undefined);
      duck?.close();
      store.close();
    },
  };
}
