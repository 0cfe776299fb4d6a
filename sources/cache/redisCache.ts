import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Metrics } from '../../server/metrics.js';
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
 * Postgres; the outage is logged once, when it starts, and each failed call is counted.
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
  let down = false;
  redis.on('error', (err: Error) => markDown('connection', err));
  redis.on('ready', markUp);

  // Cleared by any success too, not only by a reconnect: a single timeout under load leaves the
  // connection ready, and the next real outage must still be logged.
  function markUp() {
    if (!down) return;
    down = false;
    logger.info('Redis cache reachable again');
  }

  function markDown(operation: string, err: unknown) {
    metrics?.cacheErrors.inc({ operation });
    if (down) return;
    down = true;
    logger.warn({ err: { message: (err as Error).message } }, 'Redis cache unavailable; answering from Postgres until it returns');
  }

  return {
    async getMany(keys) {
      if (keys.length === 0) return [];
      try {
        const values = await redis.mget(...keys);
        markUp();
        return values;
      } catch (err) {
        markDown('get', err);
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
        markDown('set', err);
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
