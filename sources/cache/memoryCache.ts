import { LRUCache } from 'lru-cache';
import type { Cache } from './cache.js';

/** In-process LRU used when REDIS_URL is unset: one gateway, no shared state. */
export function createMemoryCache(options: { maxEntries: number; ttlSeconds: number }): Cache {
  const lru = new LRUCache<string, string>({ max: options.maxEntries, ttl: options.ttlSeconds * 1000 });
  return {
    getMany: async (keys) => keys.map((k) => lru.get(k) ?? null),
    setMany: async (entries) => {
      for (const [k, v] of entries) lru.set(k, v);
    },
    ready: async () => true,
    close: async () => lru.clear(),
  };
}
