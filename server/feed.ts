import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';
import { createCacheInvalidator } from '../pipelines/cacheInvalidator.js';
import { startChangeFeed, type ChangeFeed, type FeedStatus } from '../pipelines/changeFeed.js';
import { RiskModel } from '../pipelines/riskModel.js';
import { createRiskScorer } from '../pipelines/riskScorer.js';
import { RISK_TOPIC } from '../resolvers/riskSubscription.js';
import type { Cache } from '../sources/cache/cache.js';
import { createDatabase, type Database, type Statement } from '../sources/postgres/database.js';
import type { EventBus } from '../sources/pubsub/eventBus.js';
import { createRiskStore } from '../sources/postgres/riskStore.js';
import { createRiskBackfillStore } from '../sources/postgres/riskBackfillStore.js';
import type { Config } from './config.js';

/** Connections of the feed's own pool: the stream's side queries, the scorer, the backfill. */
const FEED_POOL_MAX = 4;

const DATABASE_NAME: Statement = { name: 'current_database', text: 'SELECT current_database() AS name' };

/**
 * The default slot name: slots are per cluster, so one gateway deployment per database gets its
 * own (ig_feed_<database>, shortened with a hash when the name is long or unusual).
 */
export async function defaultSlotName(db: Database): Promise<string> {
  const [row] = await db.query<{ name: string }>(DATABASE_NAME);
  const safe = row!.name.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  if (safe === row!.name && safe.length <= 48) return `ig_feed_${safe}`;
  return `ig_feed_${safe.slice(0, 40)}_${createHash('sha256').update(row!.name).digest('hex').slice(0, 8)}`;
}

export interface FeedDependencies {
  readonly config: Config;
  readonly databaseUrl: string;
  readonly cache: Cache;
  readonly events: EventBus;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** The change feed with its consumers (cache invalidation, risk scoring), or a fixed "off" status. */
export async function startFeed(deps: FeedDependencies): Promise<ChangeFeed> {
  const { config, logger, metrics } = deps;
  if (!config.feed.enabled) {
    const status: FeedStatus = { state: 'off', reason: 'CHANGE_FEED=0 on this gateway' };
    logger.info('change feed off on this gateway (CHANGE_FEED=0)');
    return { status: () => status, lag: async () => ({ bytes: null, seconds: 0 }), stop: async () => undefined };
  }
  // Its own pool, without the request statement timeout: building the first aggregates of a
  // large table and backfill batches take longer than any request may, and must not take the
  // connections requests need.
  const db = createDatabase({ url: deps.databaseUrl, poolMax: FEED_POOL_MAX, statementTimeoutMs: 0, reportPool: false }, logger, metrics);
  const slot = config.feed.slot ?? (await defaultSlotName(db).catch(async (err: unknown) => {
    await db.close();
    throw err;
  }));
  const scorer = createRiskScorer({
    model: new RiskModel(config.risk.model),
    store: createRiskStore(db),
    backfillStore: createRiskBackfillStore(db),
    backfillBatch: config.risk.backfillBatch,
    logger,
    metrics,
    publish: async (scores) => {
      for (const score of scores) deps.events.publish(RISK_TOPIC, score);
    },
  });
  const feed = startChangeFeed(
    { url: deps.databaseUrl, slot, publication: config.feed.publication, retryMs: config.feed.retryMs },
    [createCacheInvalidator(deps.cache, metrics), scorer],
    db,
    logger,
    metrics,
  );
  return {
    ...feed,
    async stop() {
      await feed.stop();
      await db.close();
    },
  };
}
