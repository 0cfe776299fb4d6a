import path from 'node:path';
import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';
import { createCacheInvalidator } from '../pipelines/cacheInvalidator.js';
import { startChangeFeed, type ChangeFeed, type FeedConsumer, type FeedStatus } from '../pipelines/changeFeed.js';
import { createReceiverPaymentsRefresh } from '../pipelines/receiverPaymentsRefresh.js';
import { RiskModel } from '../pipelines/riskModel.js';
import { createRiskScorer } from '../pipelines/riskScorer.js';
import { RISK_TOPIC } from '../resolvers/riskSubscription.js';
import type { Cache } from '../sources/cache/cache.js';
import type { Database } from '../sources/postgres/database.js';
import { defaultSlotName } from '../sources/postgres/replication.js';
import type { ReceiverPayments } from '../sources/lake/receiverPayments.js';
import type { EventBus } from '../sources/pubsub/eventBus.js';
import { createReceiverPaymentsStore } from '../sources/postgres/receiverPaymentsStore.js';
import { createRiskStore } from '../sources/postgres/riskStore.js';
import { createRiskBackfillStore } from '../sources/postgres/riskBackfillStore.js';
import type { Config } from './config.js';

export interface FeedDependencies {
  readonly config: Config;
  readonly databaseUrl: string;
  /** The background pool: no request statement timeout, apart from the connections requests need. */
  readonly db: Database;
  /** Consumers besides cache invalidation and scoring (the lake's change recorder). */
  readonly consumers: readonly FeedConsumer[];
  /** The lake's view of how receivers pay, for the risk model (absent: no lake). */
  readonly receiverPayments?: ReceiverPayments;
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
  const { db } = deps;
  const slot = config.feed.slot ?? (await defaultSlotName(db));
  const scorer = createRiskScorer({
    model: new RiskModel(config.risk.model),
    store: createRiskStore(db),
    backfillStore: createRiskBackfillStore(db),
    backfillBatch: config.risk.backfillBatch,
    receiverPayments:
      deps.receiverPayments && config.risk.receiverPaymentsIntervalMs > 0
        ? createReceiverPaymentsRefresh({
            lake: deps.receiverPayments,
            store: createReceiverPaymentsStore(db),
            stagingDir: path.join(config.dataDir, 'lake-staging'),
            intervalMs: config.risk.receiverPaymentsIntervalMs,
            logger,
          })
        : undefined,
    logger,
    metrics,
    publish: async (scores) => {
      for (const score of scores) deps.events.publish(RISK_TOPIC, score);
    },
  });
  return startChangeFeed(
    { url: deps.databaseUrl, slot, publication: config.feed.publication, retryMs: config.feed.retryMs },
    [createCacheInvalidator(deps.cache, metrics), scorer, ...deps.consumers],
    db,
    logger,
    metrics,
  );
}
