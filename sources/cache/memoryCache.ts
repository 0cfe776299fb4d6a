import { LRUCache } from 'lru-cache';
import { TOMBSTONE, type Cache } from './cache.js';

/** In-process LRU used when REDIS_URL is unset: one gateway, no shared state. */
export function createMemoryCache(options: { maxEntries: number; ttlSeconds: number; tombstoneSeconds: number }): Cache {
  const lru = new LRUCache<string, string>({ max: options.maxEntries, ttl: options.ttlSeconds * 1000 });
  const tombstone = (key: string) => lru.set(key, TOMBSTONE, { ttl: options.tombstoneSeconds * 1000 });
  return {
    getMany: async (keys) =>
      keys.map((k) => {
        const value = lru.get(k);
        return value === undefined || value === TOMBSTONE ? null : value;
      }),
    fill: async (entries) => {
      for (const [k, v, ttl] of entries) if (!lru.has(k)) lru.set(k, v, ttl === undefined ? undefined : { ttl: ttl * 1000 });
    },
    invalidate: async (keys) => {
      for (const key of keys) tombstone(key);
    },
    invalidatePrefix: async (prefix) => {
      for (const key of [...lru.keys()]) if (key.startsWith(prefix)) tombstone(key);
    },
    ready: async () => true,
    close: async () => lru.clear(),
  };
}
