/**
 * One time limit shared by every stage of a piece of work (an analytics query's Postgres
 * snapshot, its barrier, its DuckDB session): each stage gets what is left, so the stages
 * together end at the limit instead of each taking the whole of it.
 */
export interface Deadline {
  /** Milliseconds left; 0 once the limit has passed. */
  remainingMs(): number;
  /** Aborted when the limit passes. */
  readonly signal: AbortSignal;
}

export function deadlineIn(ms: number): Deadline {
  const at = performance.now() + ms;
  return { remainingMs: () => Math.max(0, at - performance.now()), signal: AbortSignal.timeout(ms) };
}
