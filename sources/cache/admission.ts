/**
 * Which rows read from Postgres (and which computed answers) are worth a cache write.
 *
 * `always` fills every miss.
 *
 * `second-read` fills a key only from its second miss within the window: uniform traffic over a
 * table larger than the cache (each id read about once) then pays no SET per request and does not
 * push the hot entries out, while a row read twice is cached from its second read on (and again
 * at once when it misses after an invalidation). Skipping the cache read as well for keys never
 * missed was measured too: no difference in CPU per request, and one Postgres read per hot row
 * and process, so it was left out.
 *
 * The keys missed are remembered in a Bloom filter (TinyLFU's doorkeeper), not in a map of
 * strings: measured, an LRU of 200,000 keys that every uniform request wrote to cost about 60 µs
 * of machine CPU per request in garbage collection. A filter is a fixed array of bits; a false
 * positive only costs one cache read or one fill too many. Two filters take turns, so a key is
 * remembered for one to two windows (a window ends after `windowSeconds` or `maxTracked` keys).
 */
export interface Admission {
  /** Whether to cache `key` now that it missed; records the miss either way. */
  admit(key: string): boolean;
}

export type AdmissionPolicy = 'always' | 'second-read';

export function createAdmission(policy: AdmissionPolicy, options: { windowSeconds: number; maxTracked: number }): Admission {
  if (policy === 'always') return { admit: () => true };
  const doorkeeper = new Doorkeeper(options.maxTracked, options.windowSeconds * 1000);
  return {
    admit(key) {
      if (doorkeeper.has(key)) return true;
      doorkeeper.add(key);
      return false;
    },
  };
}

/** Bits per key remembered and probes per key: about a 2% false-positive rate. */
const BITS_PER_KEY = 8;
const PROBES = 4;

/** Two Bloom filters in turn: keys added in this window or the last one. */
class Doorkeeper {
  private current: Uint32Array;
  private previous: Uint32Array;
  private readonly bits: number;
  private added = 0;
  private windowStarted = Date.now();

  constructor(
    private readonly maxKeys: number,
    private readonly windowMs: number,
  ) {
    this.bits = Math.max(1024, maxKeys * BITS_PER_KEY);
    this.current = new Uint32Array(Math.ceil(this.bits / 32));
    this.previous = new Uint32Array(this.current.length);
  }

  has(key: string): boolean {
    this.turn();
    const [h1, h2] = hashes(key);
    return this.contains(this.current, h1, h2) || this.contains(this.previous, h1, h2);
  }

  add(key: string): void {
    this.turn();
    const [h1, h2] = hashes(key);
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + i * h2) % this.bits;
      this.current[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.added++;
  }

  private contains(filter: Uint32Array, h1: number, h2: number): boolean {
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + i * h2) % this.bits;
      if ((filter[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  /** Starts a new window when this one is full or old: the older filter is emptied and reused. */
  private turn(): void {
    const elapsed = Date.now() - this.windowStarted;
    if (this.added < this.maxKeys && elapsed < this.windowMs) return;
    const emptied = this.previous;
    emptied.fill(0);
    // Quiet for two windows or more: what the current filter holds is that old too.
    if (elapsed >= 2 * this.windowMs) this.current.fill(0);
    this.previous = this.current;
    this.current = emptied;
    this.added = 0;
    this.windowStarted = Date.now();
  }
}

/** Two independent 32-bit FNV-1a hashes of the key's UTF-16 code units (double hashing). */
function hashes(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193) ^ (b >>> 15);
  }
  // Odd and non-zero, so the probes differ.
  return [a >>> 0, (b | 1) >>> 0];
}
