/**
 * The cache shared across requests (Redis) or across one process's requests (LRU). It never
 * throws: a failing or slow cache answers "miss" and the caller reads Postgres instead.
 */
export interface Cache {
  /** Values in key order, `null` for a miss. */
  getMany(keys: readonly string[]): Promise<(string | null)[]>;
  setMany(entries: ReadonlyArray<readonly [key: string, value: string]>): Promise<void>;
  /** Resolves `true` once the cache can answer, `false` if it could not within `timeoutMs`. */
  ready(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}
