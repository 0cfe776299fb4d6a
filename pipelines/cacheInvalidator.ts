import type { Metrics } from '../core/metrics.js';
import type { Cache } from '../sources/cache/cache.js';
import { cacheKeys, cachePrefixes } from '../sources/cache/readThrough.js';
import type { FeedTransaction } from '../sources/postgres/replication.js';
import type { FeedConsumer } from './changeFeed.js';

/** Primary key column of each table the feed carries, and the cache key of one of its rows. */
const ENTITIES = {
  invoices: { entity: 'invoice', column: 'invoice_id', key: cacheKeys.invoice, prefix: cachePrefixes.invoice },
  customers: { entity: 'customer', column: 'customer_id', key: cacheKeys.customer, prefix: cachePrefixes.customer },
} as const;

/**
 * The feed consumer that keeps the cache coherent: an INSERT, UPDATE or DELETE of an invoice or
 * customer, from any client, replaces its cache entry with a tombstone (an insert: in case its id
 * was cached as absent); a TRUNCATE does so for the whole table.
 */
export function createCacheInvalidator(cache: Cache, metrics: Metrics): FeedConsumer {
  return {
    name: 'cache',
    async handle(batch: readonly FeedTransaction[]) {
      const keys = new Map<string, string>();
      const truncated = new Set<keyof typeof ENTITIES>();
      for (const tx of batch) {
        for (const change of tx.changes) {
          const table = ENTITIES[change.table];
          if (change.op === 'truncate') truncated.add(change.table);
          if (change.op === 'truncate') continue;
          // An UPDATE that changes the key carries the old key too: both entries go.
          for (const row of [change.row, change.key]) {
            const id = row?.[table.column];
            if (id !== undefined && id !== null) keys.set(table.key(String(id)), table.entity);
          }
        }
      }
      for (const table of truncated) await cache.invalidatePrefix(ENTITIES[table].prefix);
      await cache.invalidate([...keys.keys()]);
      for (const entity of keys.values()) metrics.cacheInvalidations.inc({ entity });
    },
  };
}
