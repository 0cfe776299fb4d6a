import type { Metrics } from '../core/metrics.js';
import type { EventBus } from '../sources/pubsub/eventBus.js';
import type { RiskScoreRecord, RiskStore, ScoreFilter } from '../sources/postgres/riskStore.js';

/** The topic live scores are published on. */
export const RISK_TOPIC = 'riskScored';

/** Rows read from the scores table at a time while catching up. */
const REPLAY_PAGE = 500;

export interface RiskStreamOptions {
  readonly bus: EventBus;
  readonly store: RiskStore;
  readonly metrics: Metrics;
  readonly filter: ScoreFilter;
  /** Live cursor position (live_seq) to resume after; null: from now on. */
  readonly after: string | null;
  /** Events a subscriber may fall behind before its subscription ends. */
  readonly maxQueued: number;
}

/**
 * Live scores for one subscriber: first those after its cursor, from the scores table, then live
 * ones, with no gap and no duplicate at the seam. Live cursors are gap-free (see the migration),
 * so the iterator also heals a gap inside the live stream (an event lost to a Redis outage or a
 * crash between commit and push) from the table, and drops what it has already sent.
 *
 * A hand-written iterator rather than an async generator: a generator parked on the next live
 * event ignores return() until that event comes, keeping its listener on a quiet topic.
 */
export function riskScoreStream(options: RiskStreamOptions): AsyncIterableIterator<RiskScoreRecord> {
  const { store, filter } = options;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    options.metrics.subscriptions.dec();
  };
  const live = options.bus.subscribe<RiskScoreRecord>(RISK_TOPIC, {
    maxQueued: options.maxQueued,
    onOverflow: () => {
      options.metrics.subscriptionEvents.inc({ outcome: 'too_slow' });
      finish();
    },
  });
  const ready: RiskScoreRecord[] = [];
  let last: bigint | undefined;
  options.metrics.subscriptions.inc();

  const matches = (s: RiskScoreRecord) =>
    (filter.minScore == null || s.score >= filter.minScore) &&
    (filter.band == null || s.band === filter.band) &&
    (filter.issuerId == null || s.issuerId === filter.issuerId) &&
    (filter.receiverId == null || s.receiverId === filter.receiverId);

  /**
   * Stored scores still to send (after < live_seq < before), read a page at a time as the
   * subscriber takes them: a cursor a million scores old never holds more than a page in memory.
   * `then` is the live event that revealed a gap, sent once the gap is.
   */
  let replay: { after: bigint; before: bigint; then?: RiskScoreRecord } | undefined;
  async function readPage(): Promise<void> {
    const { after, before, then } = replay!;
    const rows = await store.replay(after.toString(), before.toString(), filter, REPLAY_PAGE);
    ready.push(...rows);
    if (rows.length === REPLAY_PAGE) {
      replay = { after: BigInt(rows.at(-1)!.liveSeq!), before, then };
      return;
    }
    replay = undefined;
    if (then && matches(then)) ready.push(then);
  }

  async function start(): Promise<void> {
    // Listening first, then reading: whatever commits after the read's snapshot arrives live.
    await live.ready;
    const newest = BigInt(await store.maxLiveSeq());
    const after = options.after === null ? newest : BigInt(options.after);
    if (after < newest) replay = { after, before: newest + 1n };
    last = newest;
  }

  const iterator: AsyncIterableIterator<RiskScoreRecord> = {
    async next() {
      try {
        if (last === undefined) await start();
        while (ready.length === 0) {
          if (replay) {
            await readPage();
            continue;
          }
          const event = await live.next();
          if (event.done) {
            finish();
            return { value: undefined, done: true };
          }
          const seq = BigInt(event.value.liveSeq!);
          if (seq <= last!) continue;
          const gap = seq > last! + 1n ? { after: last!, before: seq, then: event.value } : undefined;
          last = seq;
          if (gap) replay = gap;
          else if (matches(event.value)) ready.push(event.value);
        }
        const value = ready.shift()!;
        options.metrics.subscriptionEvents.inc({ outcome: 'sent' });
        return { value, done: false };
      } catch (err) {
        finish();
        await live.return?.();
        throw err;
      }
    },
    async return() {
      finish();
      ready.length = 0;
      await live.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
