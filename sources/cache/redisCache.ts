import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Metrics } from '../../core/metrics.js';
import type { Cache } from './cache.js';

export interface RedisCacheOptions {
  readonly url: string;
  readonly ttlSeconds: number;
  /** A call slower than this is abandoned and counted as a failure. */
  readonly timeoutMs: number;
  /** Prefix of every key, so several deployments can share one Redis. */
  readonly keyPrefix: string;
}

/**
 * Redis as the cache shared by every gateway replica. While Redis is down every call fails fast
 * (no offline queue, no retries per request) and is answered as a miss, so requests go to
 * Postgres; each failed call is counted.
 */
export function createRedisCache(options: RedisCacheOptions, logger: Logger, metrics?: Metrics): Cache {
  const redis = new Redis(options.url, {
    keyPrefix: options.keyPrefix,
    // Commands issued in the same tick by concurrent requests go out in one write: measured, a
    // socket write per MGET was the largest single cost of a warm lookup.
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: options.timeoutMs,
    connectTimeout: Math.max(options.timeoutMs, 1000),
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  // An outage is a lost connection: logged once when it starts and once when it ends. A single
  // slow call on a live connection is counted, and logged at most once a minute, so a flaky
  // Redis cannot flood the log.
  let down = false;
  let lastSlowLog = 0;
  redis.on('error', (err: Error) => markFailed('connection', err));
  redis.on('ready', () => {
    if (!down) return;
    down = false;
    logger.info('Redis cache reachable again');
  });

  function markFailed(operation: string, err: unknown) {
    metrics?.cacheErrors.inc({ operation });
    const reason = { err: { message: (err as Error).message } };
    if (redis.status === 'ready') {
      if (Date.now() - lastSlowLog < 60_000) return;
      lastSlowLog = Date.now();
      logger.warn(reason, 'Redis cache call failed on a live connection; answered from Postgres');
      return;
    }
    if (down) return;
    down = true;
    logger.warn(reason, 'Redis cache unavailable; answering from Postgres until it returns');
  }

  return {
    async getMany(keys) {
      if (keys.length === 0) return [];
      try {
        return await redis.mget(...keys);
      } catch (err) {
        markFailed('get', err);
        return keys.map(() => null);
      }
    },

    async setMany(entries) {
      if (entries.length === 0) return;
      try {
        // Separate commands, not a pipeline: auto-pipelining sends them in the same write as the
        // other requests' commands of this tick.
        await Promise.all(entries.map(([key, value]) => redis.set(key, value, 'EX', options.ttlSeconds)));
      } catch (err) {
        markFailed('set', err);
      }
    },

    async ready(timeoutMs) {
      if (redis.status === 'ready') return true;
      return new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          redis.off('ready', onReady);
          resolve(false);
        }, timeoutMs);
        const onReady = () => {
          clearTimeout(timer);
          resolve(true);
        };
        redis.once('ready', onReady);
      });
    },

    async close() {
      // QUIT lets queued fills finish; a Redis that is down cannot answer it.
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
