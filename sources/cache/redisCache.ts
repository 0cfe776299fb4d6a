import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../../core/errors.js';
import { atMostEvery } from '../../core/throttle.js';
import type { Metrics } from '../../core/metrics.js';
import { TOMBSTONE, type Cache } from './cache.js';
import type { Invalidation } from './invalidationChannel.js';
import { closeRedis } from '../../core/closeRedis.js';

export interface RedisCacheOptions {
  readonly url: string;
  readonly ttlSeconds: number;
  /** How long an invalidated key refuses fills: longer than any read that could race it. */
  readonly tombstoneSeconds: number;
  /** A call slower than this is abandoned and counted as a failure. */
  readonly timeoutMs: number;
  /** Prefix of every key, so several deployments can share one Redis. */
  readonly keyPrefix: string;
  /**
   * Told of each invalidation once its tombstones are in Redis (at once, or when Redis is back):
   * only then may other processes drop the keys, or they could read the old row again from Redis.
   */
  readonly onInvalidated?: (invalidation: Invalidation) => void;
}

/** Invalidations kept while Redis is unreachable; past this, everything reads as a miss until a full flush. */
const MAX_PENDING_INVALIDATIONS = 100_000;

/**
 * Redis as the cache shared by every gateway replica. While Redis is down every call fails fast
 * (no offline queue, no retries per request) and is answered as a miss, so requests go to
 * Postgres; each failed call is counted. Invalidations that fail are retried until they land.
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
  const slowLogNow = atMostEvery(60_000);
  redis.on('error', (err: Error) => markFailed('connection', err));
  redis.on('ready', () => {
    void applyPending();
    if (!down) return;
    down = false;
    logger.info('Redis cache reachable again');
  });

  function markFailed(operation: string, err: unknown) {
    metrics?.cacheErrors.inc({ operation });
    const reason = { err: { message: errorMessage(err) } };
    if (redis.status === 'ready') {
      if (!slowLogNow()) return;
      logger.warn(reason, 'Redis cache call failed on a live connection; answered from Postgres');
      return;
    }
    if (down) return;
    down = true;
    logger.warn(reason, 'Redis cache unavailable; answering from Postgres until it returns');
  }

  // Invalidations that could not be written. Their keys read as misses until they land, so a
  // row changed during an outage is never served from an entry written before it.
  const pendingKeys = new Set<string>();
  const pendingPrefixes = new Set<string>();
  let retryTimer: NodeJS.Timeout | undefined;
  const isPending = (key: string) => pendingKeys.has(key) || [...pendingPrefixes].some((p) => key.startsWith(p));

  async function writeTombstones(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const pipeline = redis.pipeline();
      for (const key of keys.slice(i, i + 1000)) pipeline.set(key, TOMBSTONE, 'EX', options.tombstoneSeconds);
      const results = await pipeline.exec();
      const failed = results?.find(([err]) => err);
      if (failed) throw failed[0];
    }
  }

  async function tombstonePrefix(prefix: string): Promise<void> {
    // SCAN patterns do not get ioredis's keyPrefix; the keys it returns carry it.
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${options.keyPrefix}${prefix}*`, 'COUNT', 1000);
      await writeTombstones(keys.map((k) => k.slice(options.keyPrefix.length)));
      cursor = next;
    } while (cursor !== '0');
  }

  async function applyPending(): Promise<void> {
    if (pendingKeys.size === 0 && pendingPrefixes.size === 0) return;
    try {
      for (const prefix of [...pendingPrefixes]) {
        await tombstonePrefix(prefix);
        pendingPrefixes.delete(prefix);
        options.onInvalidated?.({ prefix });
      }
      const keys = [...pendingKeys];
      await writeTombstones(keys);
      for (const key of keys) pendingKeys.delete(key);
      if (keys.length > 0) options.onInvalidated?.({ keys });
      logger.info({ keys: keys.length }, 'invalidations kept during the Redis outage applied');
    } catch (err) {
      markFailed('invalidate', err);
      retryTimer ??= setTimeout(() => {
        retryTimer = undefined;
        void applyPending();
      }, 1000);
    }
  }

  function keepPending(keys: readonly string[], prefix?: string) {
    if (prefix !== undefined) pendingPrefixes.add(prefix);
    for (const key of keys) pendingKeys.add(key);
    if (pendingKeys.size > MAX_PENDING_INVALIDATIONS) {
      // Too many to track one by one: everything of this gateway reads as a miss until flushed.
      pendingKeys.clear();
      pendingPrefixes.add('');
    }
    retryTimer ??= setTimeout(() => {
      retryTimer = undefined;
      void applyPending();
    }, 1000);
  }

  return {
    async getMany(keys) {
      if (keys.length === 0) return [];
      try {
        const values = await redis.mget(...keys);
        const anyPending = pendingKeys.size > 0 || pendingPrefixes.size > 0;
        return values.map((v, i) => (v === TOMBSTONE || (anyPending && isPending(keys[i]!)) ? null : v));
      } catch (err) {
        markFailed('get', err);
        return keys.map(() => null);
      }
    },

    async fill(entries) {
      if (entries.length === 0) return;
      try {
        // Separate commands, not a pipeline: auto-pipelining sends them in the same write as the
        // other requests' commands of this tick. NX: never over a newer value or a tombstone.
        await Promise.all(entries.map(([key, value, ttl]) => redis.set(key, value, 'EX', ttl ?? options.ttlSeconds, 'NX')));
      } catch (err) {
        markFailed('set', err);
      }
    },

    async invalidate(keys) {
      if (keys.length === 0) return;
      try {
        await writeTombstones(keys);
        options.onInvalidated?.({ keys });
      } catch (err) {
        markFailed('invalidate', err);
        keepPending(keys);
      }
    },

    async invalidatePrefix(prefix) {
      try {
        await tombstonePrefix(prefix);
        options.onInvalidated?.({ prefix });
      } catch (err) {
        markFailed('invalidate', err);
        keepPending([], prefix);
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
      clearTimeout(retryTimer);
      // QUIT lets queued fills finish while Redis is there.
      await closeRedis(redis);
    },
  };
}
