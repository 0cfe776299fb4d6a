import type { Metrics } from '../../core/metrics.js';
import type { Cache } from './cache.js';
import type { InvalidationChannel } from './invalidationChannel.js';

/**
 * A bounded in-process tier in front of the shared (Redis) cache: a hot entry costs no network
 * round trip. Coherent across processes through the invalidation channel, not through a TTL:
 *
 * - an invalidation tombstones the key here and writes the shared tombstones; once they are
 *   written the shared tier tells every process (RedisCacheOptions.onInvalidated), which
 *   tombstones it in its own tier;
 * - this tier is filled only from values just read from the shared tier, and only if no
 *   invalidation of the key arrived meanwhile (its tombstone refuses the fill) and the channel
 *   did not drop meanwhile (its epoch is unchanged), since a dropped channel may have lost one;
 * - while the channel is down this tier is empty and unused: every read goes to the shared tier.
 *
 * As the shared tombstones are written before the message is sent, a process that has received an
 * invalidation can no longer read the old value from the shared tier either.
 */
export function createTieredCache(local: Cache, shared: Cache, channel: InvalidationChannel, metrics?: Metrics): Cache {
  channel.onMessage(({ keys, prefix }) => {
    if (prefix !== undefined) void local.invalidatePrefix(prefix);
    if (keys?.length) void local.invalidate(keys);
  });
  channel.onLost(() => void local.invalidatePrefix(''));

  return {
    async getMany(keys) {
      if (!channel.live()) return shared.getMany(keys);
      const epoch = channel.epoch();
      const values = await local.getMany(keys);
      const missing: number[] = [];
      for (let i = 0; i < keys.length; i++) if (values[i] === null) missing.push(i);
      metrics?.cacheLocalHits.inc(keys.length - missing.length);
      if (missing.length === 0) return values;
      const fromShared = await shared.getMany(missing.map((i) => keys[i]!));
      const fill: [string, string][] = [];
      missing.forEach((index, j) => {
        const value = fromShared[j] ?? null;
        values[index] = value;
        if (value !== null) fill.push([keys[index]!, value]);
      });
      if (fill.length > 0 && channel.live() && channel.epoch() === epoch) await local.fill(fill);
      return values;
    },

    // The shared tier only: a value read from Postgres reaches this tier on its next read, by
    // the path above that checks for invalidations that raced it.
    fill: (entries) => shared.fill(entries),

    async invalidate(keys) {
      if (keys.length === 0) return;
      await local.invalidate(keys);
      await shared.invalidate(keys);
    },

    async invalidatePrefix(prefix) {
      await local.invalidatePrefix(prefix);
      await shared.invalidatePrefix(prefix);
    },

    ready: (timeoutMs) => shared.ready(timeoutMs),

    // The channel belongs to whoever made it (it outlives this cache in the shared tier's callback).
    async close() {
      await Promise.allSettled([shared.close(), local.close()]);
    },
  };
}

/** `cache` (a single process's), telling the channel of every invalidation once it is applied. */
export function publishingInvalidations(cache: Cache, channel: InvalidationChannel): Cache {
  return {
    ...cache,
    async invalidate(keys) {
      if (keys.length === 0) return;
      await cache.invalidate(keys);
      channel.publish({ keys });
    },
    async invalidatePrefix(prefix) {
      await cache.invalidatePrefix(prefix);
      channel.publish({ prefix });
    },
    async close() {
      await Promise.allSettled([cache.close(), channel.close()]);
    },
  };
}
