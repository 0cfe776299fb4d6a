import { LRUCache } from 'lru-cache';

/**
 * Which rows read from Postgres are worth a cache write. `always` fills every miss. `second-read`
 * fills a key only when it missed before within the window: uniform traffic over a table larger
 * than the cache (each id read about once) then pays no SET per request and does not push the
 * hot entries out, while a row read twice is cached from its second read on.
 *
 * The "seen once" set is a bounded LRU of keys (a doorkeeper, as in TinyLFU): past its bound the
 * oldest are forgotten, which only delays their admission.
 */
export interface Admission {
  /** Whether to cache `key` now that it missed; records the miss either way. */
  admit(key: string): boolean;
}

export type AdmissionPolicy = 'always' | 'second-read';

export function createAdmission(policy: AdmissionPolicy, options: { windowSeconds: number; maxTracked: number }): Admission {
  if (policy === 'always') return { admit: () => true };
  const seenOnce = new LRUCache<string, true>({ max: options.maxTracked, ttl: options.windowSeconds * 1000 });
  return {
    admit(key) {
      // has() honours the window; delete() would also report an expired key.
      if (seenOnce.has(key)) {
        seenOnce.delete(key);
        return true;
      }
      seenOnce.set(key, true);
      return false;
    },
  };
}
