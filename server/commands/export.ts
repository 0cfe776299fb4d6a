import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { errorMessage } from '../../core/errors.js';
import { Metrics } from '../../core/metrics.js';
import { createMemoryCache } from '../../sources/cache/memoryCache.js';
import { createRedisCache } from '../../sources/cache/redisCache.js';
import { createDatabase, waitUntilReachable } from '../../sources/postgres/database.js';
import { migrate } from '../../sources/postgres/migrate.js';
import { createEventBus } from '../../sources/pubsub/eventBus.js';
import { ConfigError, loadConfig, readEnvironment } from '../config.js';
import { startFeed } from '../feed.js';
import { createLake } from '../lake.js';
import { createLogger } from '../logger.js';

const usage = 'usage: npm run export [-- --full]';
const WAIT_FOR_POSTGRES_MS = 60_000;
/** How long to wait for a change feed (this one's, or a running gateway's) to record. */
const WAIT_FOR_FEED_MS = 60_000;

/**
 * `npm run export` exports the lake once, with a progress bar: incremental (the months that
 * changed), or everything with --full. The export trusts only what the change feed has recorded,
 * so this process runs the feed too: if a gateway already streams it, this one waits on standby
 * and the gateway records; if none does, this process records until the export is done.
 */
async function main() {
  const { values } = parseArgs({ options: { full: { type: 'boolean', default: false } } });
  const config = loadConfig(readEnvironment().env);
  if (!config.database.url) {
    throw new ConfigError(`DATABASE_URL must be set for npm run export (a gateway on the embedded Postgres exports on its own every LAKE_EXPORT_INTERVAL_MS)\n${usage}`);
  }
  const logger = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, name: 'export' });
  const metrics = new Metrics();
  const db = createDatabase({ url: config.database.url, poolMax: 5, statementTimeoutMs: 0, reportPool: false }, logger, metrics);
  const cache = config.cache.redisUrl ? createRedisCache({ url: config.cache.redisUrl, ...config.cache }, logger, metrics) : createMemoryCache(config.cache);
  const events = createEventBus({ redisUrl: config.cache.redisUrl, prefix: config.cache.keyPrefix }, logger);
  const bars = new cliProgress.MultiBar(
    { format: '{phase} |{bar}| {percentage}% {value}/{total} {unit}', stream: process.stderr, hideCursor: true, clearOnComplete: false },
    cliProgress.Presets.shades_classic,
  );
  let lake: Awaited<ReturnType<typeof createLake>> | undefined;
  let feed: Awaited<ReturnType<typeof startFeed>> | undefined;
  try {
    const deadline = Date.now() + WAIT_FOR_POSTGRES_MS;
    if (!(await waitUntilReachable(db, logger, () => Date.now() > deadline))) throw new Error(`Postgres was not reachable within ${WAIT_FOR_POSTGRES_MS / 1000} s`);
    await migrate(db, logger);
    lake = await createLake({ config, logger, metrics, analyticsDb: db, backgroundDb: db, lakeStateDb: db });
    feed = await startFeed({ config, databaseUrl: config.database.url, db, consumers: [lake.recorder], cache, events, logger, metrics });
    const feedDeadline = Date.now() + WAIT_FOR_FEED_MS;
    while (!['streaming', 'standby'].includes(feed.status().state) && Date.now() < feedDeadline) await new Promise((r) => setTimeout(r, 100));
    const status = feed.status();
    if (status.state !== 'streaming' && status.state !== 'standby') {
      throw new Error(`the change feed is not available (${status.state === 'off' ? status.reason : status.state}); the lake cannot be kept exact without it`);
    }

    const progress = new Map<string, cliProgress.SingleBar>();
    const units = { copy: 'rows', parquet: 'rows', upload: 'objects' } as const;
    const outcome = await lake.exportNow(
      (phase, done, total) => {
        if (phase === 'parquet') return;
        let bar = progress.get(phase);
        if (!bar) {
          bar = bars.create(total, 0, { phase: phase.padEnd(6), unit: units[phase] });
          progress.set(phase, bar);
        }
        bar.setTotal(Math.max(total, done));
        bar.update(done);
      },
      { full: values.full },
    );
    bars.stop();
    switch (outcome.kind) {
      case 'exported':
        console.log(
          `exported generation ${outcome.generation}: ${outcome.rows} rows in ${outcome.seconds.toFixed(1)} s ` +
            `(${Math.round(outcome.rows / outcome.seconds)} rows/s; ${outcome.rewritten} files rewritten, ${outcome.appended} appended) to ${lake.store.location}`,
        );
        break;
      case 'unchanged':
        console.log('nothing changed since the last export');
        break;
      case 'busy':
        throw new Error('another gateway is exporting right now; try again when it is done');
      case 'feed behind':
        throw new Error('the change feed did not catch up in time; nothing exported (see npm run feed -- --status)');
      case 'not recording':
        throw new Error('the change feed has not started recording yet; nothing exported');
    }
  } finally {
    bars.stop();
    await feed?.stop().catch(() => undefined);
    await lake?.stop().catch(() => undefined);
    await Promise.allSettled([db.close(), cache.close(), events.close()]);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `export failed: ${errorMessage(err)}`);
  process.exit(1);
});
