import { LRUCache } from 'lru-cache';

/**
 * Which rows read from Postgres are worth a cache write, and which are worth a cache read.
 *
 * `always` reads the cache for every id and fills every miss.
 *
 * `second-read` fills a key only from its second miss within the window: uniform traffic over a
 * table larger than the cache (each id read about once) then pays no SET per request and does not
 * push the hot entries out, while a row read twice is cached from its second read on. A key this
 * process has not missed within the window is not looked up in the cache at all but read from
 * Postgres directly: it is in the shared cache only if another process read it twice, so the
 * cache read would almost always be a wasted round trip.
 *
 * The keys are remembered in a bounded LRU (a doorkeeper, as in TinyLFU): past its bound the
 * oldest are forgotten, which only costs them one more Postgres read.
 */
export interface Admission {
  /** Whether the cache may hold `key` (else it is read from Postgres without asking the cache). */
  worthReading(key: string): boolean;
  /** Whether to cache `key` now that it missed; records the miss either way. */
  admit(key: string): boolean;
}

export type AdmissionPolicy = 'always' | 'second-read';

export function createAdmission(policy: AdmissionPolicy, options: { windowSeconds: number; maxTracked: number }): Admission {
  if (policy === 'always') return { worthReading: () => true, admit: () => true };
  // 'once': missed once, not cached; 'admitted': missed again and cached (if it misses once more,
  // say after an update's invalidation, it is cached again at once).
  // Every look refreshes a key, so the rows read all the time stay known however many others pass.
  const missed = new LRUCache<string, 'once' | 'admitted'>({ max: options.maxTracked, ttl: options.windowSeconds * 1000, updateAgeOnGet: true });
  return {
    worthReading: (key) => missed.get(key) !== undefined,
    admit(key) {
      if (missed.has(key)) {
        missed.set(key, 'admitted');
        return true;
      }
      missed.set(key, 'once');
      return false;
    },
  };
}
