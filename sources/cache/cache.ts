/**
 * The cache shared across requests (Redis) or across one process's requests (LRU). Reads never
 * throw: a failing or slow cache answers "miss" and the caller reads Postgres instead.
 *
 * Invalidation leaves a tombstone rather than deleting, and fills only write where nothing is:
 * a read that began before a row changed cannot put the old row back after the change was
 * invalidated (its fill finds the tombstone).
 */
export interface Cache {
  /** Values in key order, `null` for a miss (a tombstone reads as a miss). */
  getMany(keys: readonly string[]): Promise<(string | null)[]>;
  /**
   * Writes each entry only where the key holds nothing (no value, no tombstone), for the
   * cache's TTL or the entry's own (shorter) one.
   */
  fill(entries: ReadonlyArray<readonly [key: string, value: string, ttlSeconds?: number]>): Promise<void>;
  /**
   * Replaces the entries with tombstones. Never throws: what cannot reach the cache now is kept
   * and applied when it is back, and until then those keys read as misses.
   */
  invalidate(keys: readonly string[]): Promise<void>;
  /** Invalidates every entry whose key starts with `prefix` (after a TRUNCATE); same guarantee. */
  invalidatePrefix(prefix: string): Promise<void>;
  /** Resolves `true` once the cache can answer, `false` if it could not within `timeoutMs`. */
  ready(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/** What an invalidated key holds until the tombstone expires. */
export const TOMBSTONE = '\u0000tombstone';
