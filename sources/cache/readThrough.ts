import type { Metrics } from '../../core/metrics.js';
import type { Cache } from './cache.js';

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

/**
 * A batch function that reads the cache first (one MGET), Postgres for the misses only, then
 * fills the cache (SET NX with a TTL, pipelined by the Redis client). A fill never overwrites a
 * tombstone, so a read racing an UPDATE cannot put the old row back after the feed invalidated it.
 *
 * With `cacheAbsent` (only while the change feed runs, which tombstones an id when it is
 * inserted), absent ids are cached too: an id nobody may see and an id that does not exist then
 * cost the same work, so their answer times do not tell them apart.
 */
export function readThrough<T>(
  cache: Cache,
  metrics: Metrics,
  entity: string,
  keyOf: (id: string) => string,
  fetch: (ids: readonly string[]) => Promise<(T | null)[]>,
  { cacheAbsent = false } = {},
): (ids: readonly string[]) => Promise<(T | null)[]> {
  return async (ids) => {
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
    const fill: [string, string, number?][] = [];
    for (const [id, row] of byId) {
      if (row !== null) fill.push([keyOf(id), JSON.stringify(row)]);
      else if (cacheAbsent) fill.push([keyOf(id), ABSENT, ABSENT_TTL_SECONDS]);
    }
    // Not awaited: the response need not wait for the fill. Redis runs commands in order on one
    // connection, so a later MGET still sees it; a failed fill is only a later miss.
    void cache.fill(fill);
    return ids.map((id, i) => result[i] ?? byId.get(id) ?? null);
  };
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
