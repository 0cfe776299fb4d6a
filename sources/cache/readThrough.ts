import type { Metrics } from '../../core/metrics.js';
import { createBatchWindow, type BatchWindow } from '../../core/batchWindow.js';
import type { Admission } from './admission.js';
import type { Cache } from './cache.js';
import type { InvalidationChannel } from './invalidationChannel.js';

/**
 * The version changes whenever a cached record's shape does, so that during a rolling deploy
 * old and new gateways never read each other's entries.
 */
const RECORD_VERSION = 'v1';

/** The key of every cached entry of an entity starts with its prefix. */
export const cachePrefixes = {
  invoice: `inv:${RECORD_VERSION}:`,
  customer: `cust:${RECORD_VERSION}:`,
};

export const cacheKeys = {
  invoice: (id: string) => `${cachePrefixes.invoice}${id}`,
  customer: (id: string) => `${cachePrefixes.customer}${id}`,
};

/** What the cache holds for an id known to be absent. */
const ABSENT = '\u0000absent';
/**
 * Absences are kept briefly: enough to answer a repeated probe from the cache, too short for a
 * client asking for many random ids to fill the cache with them.
 */
const ABSENT_TTL_SECONDS = 10;

export interface ReadThroughOptions<T> {
  readonly cache: Cache;
  readonly metrics: Metrics;
  readonly entity: string;
  /** The entity's cache key prefix (cachePrefixes): an id's key is the prefix and the id. */
  readonly keyPrefix: string;
  /** Invalidations: a changed id is read afresh, not joined to a read in flight. */
  readonly invalidations: InvalidationChannel;
  /** Postgres, for the ids the cache does not hold; rows in id order, `null` for an absent id. */
  readonly fetch: (ids: readonly string[]) => Promise<(T | null)[]>;
  /** Which misses are written to the cache. */
  readonly admission: Admission;
  /**
   * Whether absent ids may be cached now: only while the change feed runs, which tombstones an
   * id when it is inserted. An id nobody may see and an id that does not exist then cost the same
   * work, so their answer times do not tell them apart.
   */
  readonly cacheAbsent: () => boolean;
}

/** Ids of one entity per Postgres statement, at most. */
const MAX_BATCH_SIZE = 1000;

/**
 * The process-wide reader of one entity by id, beneath every request's DataLoader: the ids all
 * requests in flight ask for within one batch window are read from the cache together (one MGET,
 * or none for ids the in-process tier holds), the misses from Postgres in one `= ANY($1)`
 * statement, and concurrent requests for one id share one read. The misses the admission policy
 * admits are then written to the cache (SET NX with a TTL, pipelined by the Redis client); a fill
 * never overwrites a tombstone, so a read racing an UPDATE cannot put the old row back after the
 * feed invalidated it.
 */
export function readThrough<T>(options: ReadThroughOptions<T>): BatchWindow<T | null> {
  const { cache, metrics, entity, keyPrefix, fetch, admission } = options;
  const keyOf = (id: string) => `${keyPrefix}${id}`;
  const read = async (ids: readonly string[]): Promise<(T | null)[]> => {
    const cached = await cache.getMany(ids.map(keyOf));
    const result: (T | null)[] = [];
    const missing: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      const value = cached[i] === ABSENT ? null : decode<T>(cached[i]!);
      if (value === null && cached[i] !== ABSENT) missing.push(ids[i]!);
      result.push(value);
    }
    metrics.cacheHits.inc({ entity }, ids.length - missing.length);
    if (missing.length === 0) return result;
    metrics.cacheMisses.inc({ entity }, missing.length);

    const fetched = await fetch(missing);
    const byId = new Map(missing.map((id, i) => [id, fetched[i] ?? null]));
    const cacheAbsent = options.cacheAbsent();
    const fill: [string, string, number?][] = [];
    let refused = 0;
    for (const [id, row] of byId) {
      if (row === null && !cacheAbsent) continue;
      const key = keyOf(id);
      if (!admission.admit(key)) refused++;
      else fill.push(row === null ? [key, ABSENT, ABSENT_TTL_SECONDS] : [key, JSON.stringify(row)]);
    }
    if (refused > 0) metrics.cacheFillsRefused.inc({ entity }, refused);
    // Not awaited: the response need not wait for the fill. Redis runs commands in order on one
    // connection, so a later MGET still sees it; a failed fill is only a later miss.
    if (fill.length > 0) void cache.fill(fill);
    return ids.map((id, i) => result[i] ?? byId.get(id) ?? null);
  };
  const window = createBatchWindow(read, { maxBatchSize: MAX_BATCH_SIZE, onJoined: (n) => metrics.readsJoined.inc({ entity }, n) });
  options.invalidations.onMessage(({ keys, prefix }) => {
    if (prefix !== undefined && keyPrefix.startsWith(prefix)) window.forget();
    const ids = keys?.filter((k) => k.startsWith(keyPrefix)).map((k) => k.slice(keyPrefix.length));
    if (ids?.length) window.forget(ids);
  });
  options.invalidations.onLost(() => window.forget());
  return window;
}

/** A cached entry that does not parse (written by hand, truncated) is a miss, not a failure. */
function decode<T>(value: string | null): T | null {
  if (value === null) return null;
  try {
    return JSON.parse(value) as T;
  } catch {
    return null;
  }
}
