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

/**
 * `work`'s result, or `late()` thrown once the deadline passes, whichever comes first. A stage
 * without a limit of its own (a download, a statement on another pool) can then not hold the
 * answer; `work` goes on, bounded by its stages' own limits, and its outcome is dropped.
 */
export async function within<T>(deadline: Deadline, work: Promise<T>, late: () => Error): Promise<T> {
  work.catch(() => undefined);
  const left = deadline.remainingMs();
  if (left === 0) throw late();
  // A timer of its own, not the signal's: AbortSignal.timeout does not keep the process alive.
  let timer!: NodeJS.Timeout;
  const passed = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(late()), left)));
  try {
    return await Promise.race([work, passed]);
  } finally {
    clearTimeout(timer);
  }
}
