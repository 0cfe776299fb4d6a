import type { Database, Queryable, Statement } from './database.js';
import { parseLsn, type Lsn } from './replication.js';

/** What lake_state says: the generation queries read, and how far the feed has been recorded. */
export interface LakeState {
  readonly generation: number;
  readonly manifestKey: string | null;
  readonly exportedAt: string | null;
}

/**
 * The lake's generation, manifest and how many batches of changes were recorded, and whether a
 * query's snapshot sees every recorded change. Two snapshots that both see every change
 * recorded at one version see the same invoices: those of the generation's export plus those
 * changes (after a barrier, every commit before a snapshot is recorded).
 */
export interface LakeVersion {
  readonly version: string;
  readonly seenBySnapshot: boolean;
}

/** The invoices a lake lacks or holds stale: every one above `above` (null: none is), and those listed in `ids`. */
export interface LakeMisses {
  /**
   * The highest invoice id the generation's export saw, when a change above it is recorded: every
   * invoice above it is missing from the lake (one range of the primary key, however many were
   * inserted since). Null when none is recorded: after the barrier every commit before the
   * query's snapshot is recorded, so the snapshot sees no invoice above it.
   */
  readonly above: string | null;
  /** Changed invoices at or below that id (all of them when the highest id is not known). */
  readonly ids: readonly string[];
}

/** The invoices the lake does not reflect, as a query in a snapshot reads them. */
export interface LakeChanges extends LakeState, LakeVersion, LakeMisses {
  readonly ids: string[];
  /** Invoices the lake may hold an older version of (whatever their id). */
  readonly changed: string[];
}

/** One invoice's change, as the lake consumer records it. */
export interface LakeChange {
  readonly invoiceId: string;
  /** The lake may hold an older version of it (true), or cannot hold it at all (false). */
  readonly changed: boolean;
  /** The 32-bit transaction id pgoutput reports. */
  readonly xid: number;
}

/**
 * Records a batch of changes and the feed position they reach, in one statement. The 32-bit
 * xid becomes the full xid8 nearest the current snapshot's xmax (within 2^31 either side): the
 * feed can decode a commit before Postgres counts it as completed, so the xid may still be at or
 * above xmax. (Assuming it below put such an xid an epoch back: never visible to any snapshot, so
 * no export removed its entry.) An existing entry keeps its `changed` (whether the lake may hold
 * the invoice is decided by its first change since the export).
 *
 * The main UPDATE locks lake_state before the WITH's upsert runs (Postgres runs a data-modifying
 * WITH that the main statement does not read after it): an export's finish, which locks
 * lake_state first, therefore sees a record whole or not at all (test/lakeRaces.test.ts).
 */
const RECORD: Statement = {
  name: 'lake_record_changes',
  text: `WITH cur AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x),
    incoming AS (
      SELECT t.id, t.changed,
        (cur.x - ((((cur.x & 4294967295) - t.xid + 2147483648) & 4294967295) - 2147483648))::text::xid8 AS xid
      FROM unnest($1::bigint[], $2::bool[], $3::bigint[]) AS t(id, changed, xid), cur
    ), recorded AS (
      INSERT INTO lake_changes AS c (invoice_id, changed, xid) SELECT id, changed, xid FROM incoming ORDER BY id
      ON CONFLICT (invoice_id) DO UPDATE SET xid = excluded.xid
    )
    UPDATE lake_state SET position = greatest(position, $4::pg_lsn), changes_recorded = changes_recorded + 1`,
};

const POSITION: Statement = { name: 'lake_recorded_position', text: `SELECT position::text AS position FROM lake_state` };

/**
 * A new transaction id, plus one: every transaction at or above it began after this call. (A
 * snapshot's xmax would not do: a transaction whose commit is written, and decoded, but waits for
 * a synchronous standby is still running, and may hold an xid at or above it.)
 */
const NEXT_XID: Statement = { name: 'lake_next_xid', text: `SELECT (pg_current_xact_id()::text::bigint + 1)::text AS xid` };

const RECORDED: Statement = { name: 'lake_recorded_past', text: `SELECT position >= $1::pg_lsn AS passed FROM lake_state` };

const ADVANCE: Statement = { name: 'lake_advance', text: `UPDATE lake_state SET position = greatest(position, $1::pg_lsn)` };

/** lake_state's columns as when no lake is usable (generation 0), counted as a reset (an export begun before it is void). */
const NO_LAKE = `generation = 0, manifest_key = NULL, exported_at = NULL, exported_max_id = NULL, exported_max_generation = NULL,
  resets = resets + 1`;

/** After TRUNCATE invoices the lake describes rows that are gone: analytics use Postgres until a full export. */
const FORGET: Statement[] = [
  { name: 'lake_forget_state', text: `UPDATE lake_state SET ${NO_LAKE}, position = greatest(position, $1::pg_lsn)` },
  { name: 'lake_forget_changes', text: `TRUNCATE lake_changes` },
];

/** A logical message through the feed: once the lake consumer has passed it, it has seen every earlier commit. */
const BARRIER: Statement = { name: 'lake_barrier', text: `SELECT pg_logical_emit_message(true, 'invoice-gateway:barrier', '')::text AS lsn` };

/** LakeVersion.version of the lake_state row `s`. */
const versionOf = (s: string) => `concat_ws(' ', ${s}.generation, ${s}.manifest_key, ${s}.changes_recorded)`;

/** The lake's version as a statement's snapshot sees lake_state (see LakeVersion). */
export const LAKE_VERSION_NOW = `(SELECT ${versionOf('s')} FROM lake_state s LIMIT 1)`;

/**
 * `snapshot`: an SQL expression of type pg_snapshot (the query's), or null: not asked.
 * A recorded (so committed) transaction is unseen exactly when it began at or past the
 * snapshot's xmax or was running when it was taken (its xip list): both are probes of the index
 * on xid (migration 014), whatever the table's statistics. lake_changes is rarely analyzed, as
 * it fills and empties between exports: asked as a range from the snapshot's xmin, the planner
 * took 10,000 fresh inserts for thousands of rows in range and scanned them all (1.4 ms by hand
 * at 1M, on every lake answer until the next export); a long transaction's old xmin would make
 * even the range's index scan read every change. A LIMIT in a scalar subquery keeps the index
 * order (an EXISTS would drop it), and LATERAL probes the index once per running transaction.
 */
export const versionColumns = (snapshot: string) => `${versionOf('s')} AS version,
      CASE WHEN ${snapshot} IS NULL THEN false
        ELSE (SELECT xid FROM lake_changes WHERE xid >= pg_snapshot_xmax(${snapshot}) ORDER BY xid LIMIT 1) IS NULL
          AND NOT EXISTS (SELECT FROM pg_snapshot_xip(${snapshot}) AS running(xid), LATERAL (SELECT FROM lake_changes c WHERE c.xid = running.xid LIMIT 1) AS recorded)
        END AS "seenBySnapshot"`;

/** The highest exported id as text when unknown (see EXPORTED_MAX_ID): nothing is above it. */
export const UNKNOWN_MAX_ID = '9223372036854775807';

/**
 * The export's highest invoice id, over a lake_state row. Unknown (a lake exported before it
 * was kept): the highest bigint, so every change is listed. A highest id recorded for another
 * generation (by a gateway older than migration 010's) is unknown too.
 */
export const EXPORTED_MAX_ID = `coalesce(CASE WHEN exported_max_generation = generation THEN exported_max_id END, ${UNKNOWN_MAX_ID})`;

/**
 * The generation and the invoices it does not reflect, read together (one snapshot), and
 * whether the query's snapshot (`snapshot`, see `versionColumns`) sees every one of those changes: if it
 * does not, a change committed after it was recorded already, and the answer must not be reused
 * for later queries. Read in the query's own snapshot when the feed had recorded past it before
 * the snapshot began (see StatsWindow.changes), or after the barrier in another.
 */
export const changesSelect = (snapshot: string) =>
  // Fresh inserts are above the export's highest id: listing them cost more than reading them.
  // `changed` is every entry the lake may hold stale, above the highest id too: a deleted invoice
  // re-inserted under its id after the export's snapshot can still be in a month file kept from before.
  // LIMIT 1 (lake_state has one row): never analyzed, it can be estimated at hundreds, and the
  // subqueries' cost with it: 325,000 with 10,000 changes recorded, past jit_above_cost on the
  // analytics pool, which reads the list in its snapshot (2,030 with the limit).
  `WITH s AS (
      SELECT *, ${EXPORTED_MAX_ID} AS max_id FROM lake_state LIMIT 1)
    SELECT s.generation::int AS generation, s.manifest_key AS "manifestKey",
      -- The highest id recorded, from the primary key's end: an EXISTS of the range scanned every
      -- change when none was above (updates of exported invoices only).
      CASE WHEN (SELECT max(invoice_id) FROM lake_changes) > s.max_id THEN s.max_id::text END AS above,
      to_char(s.exported_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "exportedAt",
      coalesce((SELECT array_agg(invoice_id::text) FROM lake_changes WHERE invoice_id <= s.max_id), '{}') AS ids,
      coalesce((SELECT array_agg(invoice_id::text) FROM lake_changes WHERE changed), '{}') AS changed, ${versionColumns(snapshot)}
    FROM s`;

const CHANGES: Statement = { name: 'lake_changes_for_query', text: changesSelect('$1::pg_snapshot') };

const LAKE_VERSION: Statement = { name: 'lake_version', text: `SELECT ${versionColumns('$1::pg_snapshot')} FROM (SELECT * FROM lake_state LIMIT 1) s` };

/** When the feed's slot is created (in its snapshot): record from here on; the lake is rebuilt. */
const INITIALIZE: Statement[] = [
  { name: 'lake_init_state', text: `UPDATE lake_state SET ${NO_LAKE}, position = '0/0', recording = true` },
  { name: 'lake_init_changes', text: `TRUNCATE lake_changes` },
];

export interface LakeStore {
  initialize(tx: Queryable): Promise<void>;
  record(changes: readonly LakeChange[], position: string): Promise<void>;
  /** Moves the recorded position on (a batch without invoice changes). */
  advance(position: string): Promise<void>;
  forget(position: string): Promise<void>;
  /** The feed position every change up to which is recorded (lake_state's). */
  recordedPosition(): Promise<string>;
  /** An xid (xid8 text) such that every transaction at or above it begins after this call (it takes an xid to know). */
  nextXid(): Promise<string>;
  /**
   * Writes a barrier into the WAL and waits until the lake consumer has recorded past it: then
   * every change committed before the call is in lake_changes. False when `waitMs` runs out or
   * `signal` aborts (a stopping gateway stops its feed: nothing would record the barrier).
   */
  recordedUpToNow(waitMs: number, signal?: AbortSignal): Promise<boolean>;
  /**
   * The same, for a query whose snapshot read `wal`: while this process's feed is streaming, it
   * waits for the feed to have recorded up to there (the walsender says when it has decoded that
   * far), writing nothing; when another process streams, or that takes longer than
   * PASSIVE_WAIT_MS (UNFLUSHED_WAIT_MS when the WAL was not yet flushed that far, none when by
   * more than UNFLUSHED_WAIT_BYTES), it writes the barrier, and passes it when the feed has
   * recorded past either.
   */
  recordedUpTo(wal: WalPosition, waitMs: number, signal?: AbortSignal): Promise<BarrierPassed | undefined>;
  /** How far this process's feed has recorded (committed) every change. */
  recordedHere(): Lsn;
  /**
   * How many batches of changes this process's feed has recorded: once it has recorded another,
   * the lake's version (LakeVersion) is another too.
   */
  batchesRecordedHere(): number;
  /** Whether this process's feed streams (see recordedHereUpTo). */
  streamsHere(): boolean;
  /**
   * Whether this process's own feed, streaming, records up to `wal` within `waitMs`: nothing is
   * written and lake_state is not read, so no other process's feed can pass it. `recorded`: it
   * had already; undefined: not in time (at once when it does not stream).
   */
  recordedHereUpTo(wal: WalPosition, waitMs: number, signal?: AbortSignal): Promise<'recorded' | 'decoded' | undefined>;
  /** This process's feed has recorded every change up to `position` (see FeedConsumer.caughtUp). */
  caughtUp(position: Lsn): void;
  /** This process's feed streams (its position follows the WAL), or stopped. */
  feedStreaming(streaming: boolean): void;
  /** `snapshot`: the query's, as pg_current_snapshot() text; null: not asked whether it sees every change (false). */
  changesForQuery(snapshot: string | null): Promise<LakeChanges>;
  /** The version alone, without the changes; `snapshot` null: not asked whether it sees every change (false). */
  version(snapshot: string | null): Promise<LakeVersion>;
}

/**
 * How far this process's own feed has recorded. A barrier it has passed needs no read of
 * lake_state, and its waiter is woken at once instead of polling; when another gateway holds the
 * slot this never moves and lake_state answers, as before.
 */
export interface RecordedPosition {
  /** Every change up to `position` is durable in lake_changes. */
  reached(position: string | Lsn): void;
  passed(lsn: Lsn): boolean;
  /** The position now. */
  at(): Lsn;
  /** Whether this process's feed is streaming, so the position moves with the WAL (see LakeStore.feedStreaming). */
  following: boolean;
  /** Batches of changes this process's feed has recorded (each bumps the lake's version). */
  batches: number;
  /** Resolves when the position moves, or after `ms`. */
  moved(ms: number): Promise<void>;
}

export function createRecordedPosition(): RecordedPosition {
  let position = 0n;
  const waiters = new Set<() => void>();
  return {
    following: false,
    batches: 0,
    reached(to) {
      const lsn = typeof to === 'string' ? parseLsn(to) : to;
      if (lsn <= position) return;
      position = lsn;
      for (const wake of waiters) wake();
    },
    passed: (lsn) => position >= lsn,
    at: () => position,
    moved: (ms) =>
      new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, ms);
        waiters.add(wake);
      }),
  };
}

/** Where a snapshot stood in the WAL, read in the statement that took it. */
export interface WalPosition {
  /** pg_current_wal_insert_lsn(): every commit the snapshot sees ends at or before it. */
  readonly insert: string;
  /** pg_current_wal_flush_lsn(), read with it. */
  readonly flush: string;
  /** wal_block_size and wal_segment_size, in bytes. */
  readonly blockSize: number;
  readonly segmentSize: number;
}

/** A WalPosition as JSON, read in the statement whose snapshot it describes. */
export const WAL_POSITION = `json_build_object('insert', pg_current_wal_insert_lsn()::text, 'flush', pg_current_wal_flush_lsn()::text,
  'blockSize', current_setting('wal_block_size')::int, 'segmentSize', pg_size_bytes(current_setting('wal_segment_size')))`;

/** How a barrier was passed: on the feed's report of the WAL it decoded, or past a message written for it. */
export type BarrierPassed = 'decoded' | 'written';

/** SizeOfXLogShortPHD and SizeOfXLogLongPHD: a WAL page's header, the long one on a segment's first page. */
const PAGE_HEADER_BYTES = 24n;
export const SEGMENT_HEADER_BYTES = 40n;

/**
 * How long a query waits for its own feed to report the WAL decoded past its snapshot before
 * writing a barrier instead (a feed far behind, or a position the walsender never reports).
 */
export const PASSIVE_WAIT_MS = 100;

/**
 * The same when the WAL was not yet flushed that far, by at most UNFLUSHED_WAIT_BYTES: the
 * walsender decodes only flushed WAL. Such a gap is usually a commit in flight, which flushes it
 * within a millisecond or two (the feed's own writes after each insert it handles were the common
 * case, a few hundred bytes). A larger gap is a bulk load, which keeps it unflushed for up to
 * wal_writer_delay: the barrier is written at once, and its commit flushes it.
 */
export const UNFLUSHED_WAIT_MS = 10;
export const UNFLUSHED_WAIT_BYTES = 65_536n;

/**
 * The position a walsender reports once it has decoded every record a snapshot at `wal` may see
 * committed. At a page's start the insert position is past the page's header, and the walsender
 * reports (and the WAL is flushed to) the end of the record before it: the page's start. No
 * record ends inside a header; a record continued on an ordinary page may end 40 bytes into it,
 * so 40 counts as a header only on a segment's first page.
 */
export function decodedEnd(wal: WalPosition): Lsn {
  const insert = parseLsn(wal.insert);
  const header = insert % BigInt(wal.segmentSize) === SEGMENT_HEADER_BYTES ? SEGMENT_HEADER_BYTES : insert % BigInt(wal.blockSize) === PAGE_HEADER_BYTES ? PAGE_HEADER_BYTES : 0n;
  return insert - header;
}

/** `position`: shared by every LakeStore of the process, so the feed's records wake the queries' barriers. */
export function createLakeStore(db: Database, position: RecordedPosition): LakeStore {
  /** Writes a barrier and waits until the feed has recorded past it (or past `enough`, when given). */
  const writeBarrier = async (waitMs: number, signal?: AbortSignal, enough?: Lsn) => {
    const [{ lsn }] = (await db.query<{ lsn: string }>(BARRIER)) as [{ lsn: string }];
    const barrier = parseLsn(lsn);
    const passed = () => position.passed(barrier) || (enough !== undefined && position.passed(enough));
    const deadline = Date.now() + waitMs;
    // This process's feed passes the barrier within milliseconds and says so; lake_state is read
    // only when it has not (another gateway holds the slot, or the feed is behind).
    for (let pause = 2; ; pause = Math.min(pause * 2, 50)) {
      if (!passed()) await position.moved(pause);
      if (passed()) return true;
      if ((await db.query<{ passed: boolean }>(RECORDED, [lsn]))[0]!.passed) return true;
      if (Date.now() >= deadline || signal?.aborted) return false;
    }
  };
  return {
    async initialize(tx) {
      for (const statement of INITIALIZE) await tx.query(statement);
    },
    async record(changes, to) {
      await db.query(RECORD, [changes.map((c) => c.invoiceId), changes.map((c) => c.changed), changes.map((c) => c.xid), to]);
      position.batches++;
      position.reached(to);
    },
    async advance(to) {
      // Nothing to record up to here: earlier batches are durable already, so waiters need not
      // wait for this write (it is for other processes' barriers).
      position.reached(to);
      await db.query(ADVANCE, [to]);
    },
    async forget(position) {
      await db.transaction(async (tx: Queryable) => {
        await tx.query(FORGET[0]!, [position]);
        await tx.query(FORGET[1]!);
      });
    },
    async recordedPosition() {
      return (await db.query<{ position: string }>(POSITION))[0]!.position;
    },
    async nextXid() {
      return (await db.query<{ xid: string }>(NEXT_XID))[0]!.xid;
    },
    recordedUpToNow: (waitMs, signal) => writeBarrier(waitMs, signal),
    async recordedUpTo(wal, waitMs, signal) {
      const target = decodedEnd(wal);
      if (position.passed(target) || position.following) {
        const unflushed = target - parseLsn(wal.flush);
        const passiveMs = unflushed <= 0n ? PASSIVE_WAIT_MS : unflushed <= UNFLUSHED_WAIT_BYTES ? UNFLUSHED_WAIT_MS : 0;
        const started = performance.now();
        const until = started + Math.min(waitMs, passiveMs);
        // The first wait is the limit itself: `until - started` can come out a rounding above it.
        for (let left = Math.min(waitMs, passiveMs); !position.passed(target) && left > 0 && !signal?.aborted; left = until - performance.now()) {
          await position.moved(left);
        }
        if (position.passed(target)) return 'decoded';
        waitMs -= performance.now() - started;
      }
      // A feed merely behind may still pass the snapshot before the barrier written after it.
      return (await writeBarrier(Math.max(waitMs, 0), signal, target)) ? 'written' : undefined;
    },
    recordedHere: () => position.at(),
    batchesRecordedHere: () => position.batches,
    streamsHere: () => position.following,
    async recordedHereUpTo(wal, waitMs, signal) {
      const target = decodedEnd(wal);
      if (position.passed(target)) return 'recorded';
      const until = performance.now() + waitMs;
      for (let left = waitMs; !position.passed(target) && position.following && left > 0 && !signal?.aborted; left = until - performance.now()) {
        await position.moved(left);
      }
      return position.passed(target) ? 'decoded' : undefined;
    },
    caughtUp: (to) => position.reached(to),
    feedStreaming(streaming) {
      position.following = streaming;
    },
    async changesForQuery(snapshot) {
      const [row] = await db.query<LakeChanges>(CHANGES, [snapshot]);
      return row!;
    },
    async version(snapshot) {
      const [row] = await db.query<LakeVersion>(LAKE_VERSION, [snapshot]);
      return row!;
    },
  };
}
