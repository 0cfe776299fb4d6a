import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { Metrics } from '../core/metrics.js';
import type { Database, Queryable } from '../sources/postgres/database.js';
import {
  createSlot,
  EMIT_MESSAGE,
  ensurePublication,
  feedUnavailableReason,
  openReplicationStream,
  SILENT_MS,
  SilentServerError,
  SlotBusyError,
  slotLag,
  slotState,
  type FeedTransaction,
  type Lsn,
  type ReplicationStream,
} from '../sources/postgres/replication.js';

/**
 * One consumer of the change feed (the risk scorer, cache invalidation, later the lake). Each has
 * its own queue and its own acknowledged position; the slot is acknowledged up to the lowest of
 * them, so a crash replays, for each consumer, at least what it had not finished.
 */
export interface FeedConsumer {
  readonly name: string;
  /**
   * Runs once, when the slot is created, inside the snapshot the feed starts from: rows visible
   * here will never come through the feed, rows not visible here always will.
   */
  initialize?(tx: Queryable): Promise<void>;
  /**
   * Handles transactions in commit order, several at a time; resolves when their effects are
   * durable. Must be idempotent: after a crash the feed delivers them again.
   */
  handle(batch: readonly FeedTransaction[]): Promise<void>;
  /**
   * Runs each time this process starts streaming, before the stream's first batch: a stream
   * begins again from the slot's acknowledged position, so it replays what this consumer (or the
   * gateway that held the slot before) may have finished already.
   */
  resume?(): Promise<void>;
  /**
   * Every transaction committed up to `position` has been handed to this consumer and handled:
   * the server has nothing before it still to send (see StreamOptions.onCaughtUp). Called only
   * once `handle` has returned for every transaction delivered before the server said so (it may
   * be handling later ones), and only while the stream runs, possibly before `resume` returns
   * (what precedes the stream was acknowledged, so handled, before); WAL of other tables moves
   * it on without a transaction.
   */
  caughtUp?(position: Lsn): void;
  /** This process's stream ended: `caughtUp` is not called again on it. */
  streamEnded?(): void;
  /** Background work that only the process holding the slot does (the backfill). */
  whileHolding?(signal: AbortSignal): Promise<void>;
}

export type FeedStatus =
  | { readonly state: 'starting' }
  | { readonly state: 'off'; readonly reason: string }
  | { readonly state: 'standby'; readonly holderPid: number | null }
  | { readonly state: 'streaming' }
  | { readonly state: 'stopped' };

export interface FeedSettings {
  readonly url: string;
  readonly slot: string;
  readonly publication: string;
  /** Pause between attempts to take the slot while another process holds it. */
  readonly retryMs: number;
}

export interface ChangeFeed {
  status(): FeedStatus;
  /** Bytes and seconds the feed is behind (null while it has never connected). */
  lag(): Promise<{ bytes: number | null; seconds: number }>;
  stop(): Promise<void>;
}

/** Transactions a consumer may have queued before the stream waits for it (backpressure). */
const MAX_QUEUED = 10_000;
/** Transactions handed to a consumer at once. */
const MAX_BATCH = 2_000;
/**
 * With nothing to acknowledge for this long, a logical message is written so the slot can move
 * past WAL of tables the feed does not carry (otherwise that WAL is kept for ever).
 */
const IDLE_TICK_MS = 10_000;
const TICK_PREFIX = 'invoice-gateway:tick';
const ACK_EVERY_MS = 50;
/** Caught-up positions kept for consumers behind the stream (see passCaughtUp). */
const MAX_CAUGHT_UP_MARKS = 64;
/** The silence limit doubles for each stream in a row ended by silence, up to 2^7 times (over 4 h by default). */
const MAX_SILENCE_DOUBLINGS = 7;

/**
 * Runs the feed: takes the slot when it can (one active consumer per slot; the others wait and
 * take over within `retryMs` when it goes), hands transactions to each consumer, acknowledges
 * what every consumer has finished. When this Postgres cannot run a feed it says why once and
 * checks again now and then; the gateway keeps serving lookups meanwhile.
 */
export function startChangeFeed(settings: FeedSettings, consumers: readonly FeedConsumer[], db: Database, logger: Logger, metrics: Metrics): ChangeFeed {
  let status: FeedStatus = { state: 'starting' };
  let stopping = false;
  let requestStop!: () => void;
  const stopRequested = new Promise<Error>((resolve) => (requestStop = () => resolve(new Error('stopping'))));
  let stream: ReplicationStream | undefined;
  let wake: (() => void) | undefined;
  let oldestUnacknowledged: Date | undefined;
  /** Streams in a row that ended hearing nothing from the server (see SilentServerError). */
  let silentEnds = 0;
  /** The furthest commit any stream delivered: one delivered again after a reconnect is no progress. */
  let furthest: Lsn = 0n;
  const log = logger.child({ component: 'feed', slot: settings.slot });

  const setStatus = (next: FeedStatus) => {
    if (next.state !== status.state) {
      const details = next.state === 'off' ? { reason: next.reason } : next.state === 'standby' ? { holderPid: next.holderPid } : {};
      const message = {
        starting: 'change feed starting',
        off: `change feed off: ${next.state === 'off' ? next.reason : ''}`,
        standby: 'change feed on standby: another gateway holds the slot; taking over when it goes',
        streaming: 'change feed streaming',
        stopped: 'change feed stopped',
      }[next.state];
      (next.state === 'off' ? log.warn.bind(log) : log.info.bind(log))(details, message);
    }
    status = next;
    for (const state of ['off', 'standby', 'streaming'] as const) metrics.feedState.set({ state }, next.state === state ? 1 : 0);
  };

  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  async function ensureSlot(): Promise<void> {
    await ensurePublication(db, settings.publication);
    if (await slotState(db, settings.slot)) return;
    // Two gateways may get here at once; the loser's CREATE fails with "already exists" (42710)
    // and it goes on to stream (or wait) like any other.
    try {
      const point = await createSlot(settings.url, db, settings.slot, async (tx) => {
        for (const consumer of consumers) await consumer.initialize?.(tx);
      });
      log.info({ consistentPoint: point.toString(16) }, 'replication slot created');
    } catch (err) {
      if ((err as { code?: string }).code !== '42710') throw err;
    }
  }

  /** Streams until the stream ends; returns the reason. */
  async function holdAndStream(): Promise<Error> {
    const positions = new Map<FeedConsumer, Lsn>();
    const queues = new Map<FeedConsumer, FeedTransaction[]>(consumers.map((c) => [c, []]));
    const notify = new Map<FeedConsumer, () => void>();
    let delivered: Lsn = 0n;
    const abort = new AbortController();
    /**
     * The server's caught-up positions, each with the last transaction delivered before it, oldest
     * first (both rise): a consumer behind a busy stream still passes the ones it has caught up with.
     */
    const caughtUps: { position: Lsn; after: Lsn }[] = [];
    /**
     * A consumer that has handled every transaction delivered before a caught-up position is there
     * too, and may be acknowledged there: the slot then moves past WAL of other tables, and a
     * Postgres shutting down, which waits until its walsender's client has confirmed everything
     * sent, can finish (it waited for good when only commits were confirmed). The position is the
     * consumer's from then on: every transaction delivered after the keepalive ends past it.
     */
    const passCaughtUp = (consumer: FeedConsumer) => {
      // An ending stream may have dropped transactions delivered after those.
      if (abort.signal.aborted) return;
      const handled = positions.get(consumer) ?? 0n;
      let reached: (typeof caughtUps)[number] | undefined;
      for (const mark of caughtUps) if (mark.after <= handled) reached = mark;
      if (!reached || reached.position <= handled) return;
      positions.set(consumer, reached.position);
      consumer.caughtUp?.(reached.position);
      acknowledgeDone();
    };
    let lastAckAt = Date.now();
    let roomWaiter: (() => void) | undefined;

    // Acknowledgements go out at most every ACK_EVERY_MS: one per transaction would be a status
    // message per insert for the walsender to handle. A crash replays the unacknowledged rest.
    let ackTimer: NodeJS.Timeout | undefined;
    const acknowledgeDone = () => {
      ackTimer ??= setTimeout(() => {
        ackTimer = undefined;
        // Every transaction is queued to every consumer, so the lowest position is what all have
        // done: a consumer's is its last transaction handled, or the caught-up position it passed.
        const highest = caughtUps.at(-1)?.position ?? 0n;
        const lowest = consumers.reduce((min, c) => {
          const position = positions.get(c) ?? 0n;
          return position < min ? position : min;
        }, delivered > highest ? delivered : highest);
        if (lowest > 0n) {
          stream?.acknowledge(lowest);
          lastAckAt = Date.now();
        }
      }, ACK_EVERY_MS);
      const waiting = consumers.map((c) => queues.get(c)![0]).filter((tx) => tx !== undefined);
      oldestUnacknowledged = waiting.length > 0 ? new Date(Math.min(...waiting.map((tx) => tx.commitTime.getTime()))) : undefined;
    };

    stream = openReplicationStream({
      url: settings.url,
      slot: settings.slot,
      publication: settings.publication,
      logger: log,
      // Asked at each report: a delivered transaction sets the running stream's limit back too.
      silentMs: () => SILENT_MS * 2 ** Math.min(silentEnds, MAX_SILENCE_DOUBLINGS),
      onCaughtUp: (position) => {
        if (abort.signal.aborted) return;
        // One mark per delivered transaction is enough: a later position after the same one replaces it.
        if (caughtUps.at(-1)?.after === delivered) caughtUps.pop();
        caughtUps.push({ position, after: delivered });
        if (caughtUps.length > MAX_CAUGHT_UP_MARKS) caughtUps.shift();
        for (const consumer of consumers) passCaughtUp(consumer);
      },
      onTransaction: async (tx) => {
        if (tx.lsn > furthest) {
          furthest = tx.lsn;
          silentEnds = 0;
        }
        metrics.feedTransactions.inc();
        delivered = tx.lsn;
        oldestUnacknowledged ??= tx.commitTime;
        for (const consumer of consumers) {
          queues.get(consumer)!.push(tx);
          notify.get(consumer)?.();
        }
        // Backpressure: while a consumer is this far behind, the stream (and its socket) waits.
        while (!abort.signal.aborted && consumers.some((c) => queues.get(c)!.length >= MAX_QUEUED)) {
          await new Promise<void>((resolve) => (roomWaiter = resolve));
        }
      },
    });
    const current = stream;
    try {
      await current.started;
      for (const consumer of consumers) await consumer.resume?.();
    } catch (err) {
      await current.stop();
      // A consumer resumed before another failed to is streaming no more.
      for (const consumer of consumers) consumer.streamEnded?.();
      throw err;
    }
    setStatus({ state: 'streaming' });

    const runConsumer = async (consumer: FeedConsumer) => {
      const queue = queues.get(consumer)!;
      while (!abort.signal.aborted) {
        if (queue.length === 0) {
          await new Promise<void>((resolve) => notify.set(consumer, resolve));
          // One turn of the event loop lets the transactions arriving together form one batch.
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        const batch = queue.slice(0, MAX_BATCH);
        const started = performance.now();
        await consumer.handle(batch);
        metrics.feedBatchDuration.observe({ consumer: consumer.name }, (performance.now() - started) / 1000);
        queue.splice(0, batch.length);
        positions.set(consumer, batch.at(-1)!.lsn);
        passCaughtUp(consumer);
        acknowledgeDone();
        roomWaiter?.();
      }
    };
    const ticker = setInterval(() => {
      if (Date.now() - lastAckAt >= IDLE_TICK_MS) {
        lastAckAt = Date.now();
        db.query(EMIT_MESSAGE, [TICK_PREFIX]).catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'idle tick failed'));
      }
    }, 1000).unref();

    // A consumer that fails ends the stream: the transactions it had not finished come again
    // from the slot on the next stream, to every consumer that had not acknowledged them.
    const consumerFailed = Promise.race(
      consumers.map((c) =>
        runConsumer(c).then(
          () => new Promise<Error>(() => undefined),
          (err: unknown) => new Error(`consumer ${c.name} failed: ${errorMessage(err)}`, { cause: err }),
        ),
      ),
    );
    const background = consumers.map((c) =>
      c.whileHolding?.(abort.signal).catch((err: unknown) => log.error({ err, consumer: c.name }, 'background work of a feed consumer failed')),
    );
    try {
      return await Promise.race([current.ended, consumerFailed, stopRequested]);
    } finally {
      abort.abort();
      for (const wake of notify.values()) wake();
      roomWaiter?.();
      clearInterval(ticker);
      clearTimeout(ackTimer);
      await current.stop();
      for (const consumer of consumers) consumer.streamEnded?.();
      await Promise.allSettled(background);
      oldestUnacknowledged = undefined;
      stream = undefined;
    }
  }

  async function run(): Promise<void> {
    let lastError = '';
    while (!stopping) {
      try {
        const reason = await feedUnavailableReason(db);
        if (reason) {
          setStatus({ state: 'off', reason });
          await pause(60_000);
          continue;
        }
        await ensureSlot();
        if (stopping) break;
        const ended = await holdAndStream();
        // Silence can be a server decoding a long transaction without reading replies: the
        // next stream waits longer, until one delivers a transaction past any delivered before
        // (the unacknowledged ones before that transaction come again first).
        silentEnds = ended instanceof SilentServerError ? silentEnds + 1 : 0;
        if (!stopping) log.warn({ err: errorMessage(ended) }, 'change feed stream ended; reconnecting');
        lastError = '';
      } catch (err) {
        if (stopping) break;
        if (err instanceof SlotBusyError) {
          const holder = await slotState(db, settings.slot).catch(() => undefined);
          setStatus({ state: 'standby', holderPid: holder?.activePid ?? null });
        } else {
          // Logged once per distinct error, so a Postgres that is down does not flood the log.
          const message = errorMessage(err);
          if (message !== lastError) log.warn({ err: message }, 'change feed could not stream; retrying');
          lastError = message;
          if (status.state === 'streaming') setStatus({ state: 'starting' });
        }
      }
      if (!stopping) await pause(settings.retryMs);
    }
  }

  const lagBytes = async () => (await slotLag(db, settings.slot).catch(() => undefined))?.bytes ?? null;
  const lagSeconds = () => (oldestUnacknowledged ? (Date.now() - oldestUnacknowledged.getTime()) / 1000 : 0);
  metrics.feedLagBytesNow = lagBytes;
  metrics.feedLagSecondsNow = lagSeconds;
  const running = run().catch((err: unknown) => log.error({ err }, 'change feed stopped unexpectedly'));
  setStatus(status);

  return {
    status: () => status,
    lag: async () => ({ bytes: await lagBytes(), seconds: lagSeconds() }),
    async stop() {
      stopping = true;
      requestStop();
      wake?.();
      await stream?.stop();
      await running;
      setStatus({ state: 'stopped' });
    },
  };
}
