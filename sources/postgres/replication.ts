import { createHash } from 'node:crypto';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type { Logger } from 'pino';
import { errorMessage } from '../../core/errors.js';
import type { Database, Queryable, Statement } from './database.js';

/**
 * Postgres logical replication (pgoutput) as the change feed: the publication, the slot, and one
 * stream of committed transactions in commit order. pg-logical-replication decodes the protocol;
 * this file holds what the library leaves to its caller (slot creation with an exported snapshot,
 * manual acknowledgement, a busy slot, lag).
 */

/** The tables whose changes the feed carries. */
const FEED_TABLES = ['invoices', 'customers'] as const;
export type FeedTable = (typeof FEED_TABLES)[number];

/** A position in the WAL, as a number so that positions compare correctly. */
export type Lsn = bigint;

export function parseLsn(text: string): Lsn {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export interface FeedChange {
  readonly table: FeedTable;
  readonly op: 'insert' | 'update' | 'delete' | 'truncate';
  /** The new row (insert, update). Values as node-postgres parses them (int8 and numeric as text). */
  readonly row: Readonly<Record<string, unknown>> | null;
  /** The old primary key (delete; update when the key changed). */
  readonly key: Readonly<Record<string, unknown>> | null;
}

/** One committed transaction, as the feed delivers it. */
export interface FeedTransaction {
  /** The commit's end position: acknowledging it releases the transaction's WAL. */
  readonly lsn: Lsn;
  /** The transaction's id (32 bits, as pgoutput reports it). */
  readonly xid: number;
  readonly commitTime: Date;
  readonly changes: readonly FeedChange[];
  /** Logical messages in it (pg_logical_emit_message), by prefix. */
  readonly messages: readonly string[];
}

/** The slot is being streamed by another process (SQLSTATE 55006). */
export class SlotBusyError extends Error {
  override name = 'SlotBusyError';
}

/** Why this Postgres cannot run the feed, or undefined when it can. */
export async function feedUnavailableReason(db: Queryable): Promise<string | undefined> {
  const [row] = await db.query<{ wal_level: string; replication: boolean; user: string }>(PREREQUISITES);
  if (row!.wal_level !== 'logical') {
    return `Postgres has wal_level=${row!.wal_level}; the change feed needs wal_level=logical (set it and restart Postgres)`;
  }
  if (!row!.replication) return `the role ${row!.user} lacks the REPLICATION attribute (ALTER ROLE ${row!.user} REPLICATION)`;
  return undefined;
}

const PREREQUISITES: Statement = {
  name: 'feed_prerequisites',
  text: `SELECT current_setting('wal_level') AS wal_level, r.rolname AS user, (r.rolreplication OR r.rolsuper) AS replication
    FROM pg_roles r WHERE r.rolname = current_user`,
};

/** Creates the publication, or adds a table it lacks. Identifiers are checked, then quoted. */
export async function ensurePublication(db: Database, publication: string): Promise<void> {
  const name = identifier(publication);
  await db.withClient(async (client) => {
    const { rows } = await client.query<{ table: string }>(
      `SELECT tablename AS table FROM pg_publication_tables WHERE pubname = $1 AND schemaname = current_schema()`,
      [publication],
    );
    const exists = (await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication])).rowCount! > 0;
    const tables = FEED_TABLES.map((t) => `"${t}"`).join(', ');
    if (!exists) {
      await client.query(`CREATE PUBLICATION ${name} FOR TABLE ${tables}`);
      return;
    }
    const missing = FEED_TABLES.filter((t) => !rows.some((r) => r.table === t));
    if (missing.length > 0) await client.query(`ALTER PUBLICATION ${name} ADD TABLE ${missing.map((t) => `"${t}"`).join(', ')}`);
  });
}

export interface SlotState {
  readonly active: boolean;
  readonly activePid: number | null;
}

export async function slotState(db: Queryable, slot: string): Promise<SlotState | undefined> {
  const [row] = await db.query<{ active: boolean; active_pid: number | null }>(SLOT_STATE, [slot]);
  return row ? { active: row.active, activePid: row.active_pid } : undefined;
}

const SLOT_STATE: Statement = {
  name: 'feed_slot_state',
  text: `SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`,
};

/**
 * Silence past which the stream is taken for lost. The walsender answers a report that asks
 * for it whenever it reads replies: at once when idle, and while decoding a long transaction
 * every wal_sender_timeout / 2 (30 s by default; Postgres 14 and older not at all then, nor
 * any version with wal_sender_timeout=0). A stream ended so comes again with a longer limit
 * (see the change feed), so such a decode ends eventually.
 */
export const SILENT_MS = 120_000;

/** The stream heard nothing from its server for its silence limit. */
export class SilentServerError extends Error {
  override name = 'SilentServerError';
}

/**
 * The feed's own connections, outside the pool. Without a connect timeout a server that accepts
 * and never answers (a proxy holding it, a frozen host) left the feed starting for good.
 */
const REPLICATION_CONNECTION = { application_name: 'invoice-gateway-feed', connectionTimeoutMillis: 10_000, keepAlive: true, keepAliveInitialDelayMillis: 10_000 };

/**
 * Creates the slot and runs `initialize` in the snapshot the slot starts from: what
 * `initialize` sees is exactly what the feed will not deliver, so state built from it plus the
 * feed counts every row once. The replication connection must stay open and idle until then.
 */
export async function createSlot(
  url: string,
  db: Database,
  slot: string,
  initialize: (tx: Queryable, consistentPoint: Lsn) => Promise<void>,
): Promise<Lsn> {
  const replication = new pg.Client({ connectionString: url, replication: 'database', ...REPLICATION_CONNECTION } as pg.ClientConfig);
  replication.on('error', () => undefined);
  await replication.connect();
  try {
    const { rows } = await replication.query<{ consistent_point: string; snapshot_name: string }>(
      `CREATE_REPLICATION_SLOT ${identifier(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
    );
    const consistentPoint = parseLsn(rows[0]!.consistent_point);
    try {
      await db.transaction((tx) => initialize(tx, consistentPoint), { snapshot: rows[0]!.snapshot_name });
    } catch (err) {
      // Without its initial state the slot is useless; the next attempt starts over.
      await replication.end().catch(() => undefined);
      await db.query(DROP_SLOT, [slot]).catch(() => undefined);
      throw err;
    }
    return consistentPoint;
  } finally {
    await replication.end().catch(() => undefined);
  }
}

const DROP_SLOT: Statement = {
  name: 'feed_drop_slot',
  text: `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`,
};

/** Removes the slot (ending whoever streams from it) and the publication. */
export async function dropFeed(db: Database, slot: string, publication: string): Promise<{ slot: boolean; publication: boolean }> {
  const state = await slotState(db, slot);
  if (state?.activePid) {
    await db.query(TERMINATE, [state.activePid]);
    for (let i = 0; i < 50 && (await slotState(db, slot))?.active; i++) await new Promise((r) => setTimeout(r, 100));
  }
  if (state) await db.query(DROP_SLOT, [slot]);
  const dropped = await db.withClient(async (client) => {
    const exists = (await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication])).rowCount! > 0;
    if (exists) await client.query(`DROP PUBLICATION ${identifier(publication)}`);
    return exists;
  });
  return { slot: state !== undefined, publication: dropped };
}

const TERMINATE: Statement = { name: 'feed_terminate', text: 'SELECT pg_terminate_backend($1)' };

export interface SlotLag {
  /** WAL written since the slot's confirmed position: what the feed has yet to acknowledge. */
  readonly bytes: number;
  /** WAL the slot keeps on disk. */
  readonly retainedBytes: number;
}

export async function slotLag(db: Queryable, slot: string): Promise<SlotLag | undefined> {
  const [row] = await db.query<{ bytes: string; retained: string }>(SLOT_LAG, [slot]);
  return row ? { bytes: Math.max(0, Number(row.bytes)), retainedBytes: Math.max(0, Number(row.retained)) } : undefined;
}

const SLOT_LAG: Statement = {
  name: 'feed_slot_lag',
  text: `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::text AS bytes,
      coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::text AS retained
    FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`,
};

/** Writes a logical message into the WAL: it comes back through the stream as a transaction. */
export const EMIT_MESSAGE: Statement = { name: 'feed_emit_message', text: `SELECT pg_logical_emit_message(true, $1, '')` };

export interface ReplicationStream {
  /** Resolves once this process holds the slot; rejects with SlotBusyError or the reason it could not start. */
  readonly started: Promise<void>;
  /** Resolves when the stream ends, with the reason. */
  readonly ended: Promise<Error>;
  /** Confirms everything up to `lsn` as handled: Postgres may release that WAL. */
  acknowledge(lsn: Lsn): void;
  stop(): Promise<void>;
}

export interface StreamOptions {
  readonly url: string;
  readonly slot: string;
  readonly publication: string;
  /** Receives each committed transaction in commit order; the next waits until it resolves. */
  readonly onTransaction: (tx: FeedTransaction) => Promise<void>;
  readonly logger: Logger;
  /** How often the stream's position is reported unasked (as a standby's wal_receiver_status_interval). */
  readonly statusIntervalMs?: number;
  /** A server that accepts the connection and never answers fails the start after this long (default 10 s). */
  readonly connectTimeoutMs?: number;
  /**
   * A stream that hears nothing from the server this long (no change, no answer to the position
   * reports, which ask for one) while no transaction is being handled has lost its server, and
   * ends with a SilentServerError (default SILENT_MS); so does one that has not begun streaming
   * that long after it was opened. A function is asked again at each report.
   */
  readonly silentMs?: number | (() => number);
  /**
   * Called with the server's WAL end (a keepalive's) once every transaction the stream received
   * before that keepalive has been handed to `onTransaction`: the walsender sends one when it has
   * decoded everything up to there and waits for more WAL, so no commit ending at or before it is
   * still to come. It moves on with WAL no transaction of the publication is in.
   */
  readonly onCaughtUp?: (walEnd: Lsn) => void;
}

/**
 * XLogData messages the library has received and not yet handed to the handler (flow control
 * queues them, while keepalives are emitted at once). Undefined if the library no longer keeps
 * that queue: then no keepalive is taken as caught up.
 */
function queuedMessages(service: LogicalReplicationService): number | undefined {
  const queue = (service as unknown as { _messageQueue?: unknown })._messageQueue;
  return Array.isArray(queue) ? queue.length : undefined;
}

/**
 * Streams the slot from its confirmed position: what was not acknowledged is delivered again.
 * A new service per stream, because the library resumes a re-subscribed service from the last
 * position it received, which would skip unacknowledged transactions.
 */
export function openReplicationStream(options: StreamOptions): ReplicationStream {
  const service = new LogicalReplicationService(
    {
      connectionString: options.url,
      ...REPLICATION_CONNECTION,
      connectionTimeoutMillis: options.connectTimeoutMs ?? REPLICATION_CONNECTION.connectionTimeoutMillis,
    },
    // No automatic acknowledgement (timeoutSeconds 0 also stops its timer from confirming what
    // was received but not handled); flow control awaits each handler and pauses the socket.
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [options.publication], messages: true });
  let acknowledged = 0n;
  /**
   * Reports `acknowledged` as written and flushed. The library sends the position plus one (a
   * standby's "last byte + 1"), but a logical slot's confirmed position is where decoding starts
   * again: a commit record beginning exactly there (two transactions committed back to back) would
   * be skipped on the next stream. So the position before it goes out, and the slot confirms the
   * commit's end, as Postgres's own subscribers report it.
   */
  const confirm = (ping = false) => service.acknowledge(formatLsn(acknowledged > 0n ? acknowledged - 1n : 0n), ping);
  let current: { xid: number; changes: FeedChange[]; messages: string[] } | undefined;
  let failure: Error | undefined;

  let resolveStarted!: () => void;
  const started = new Promise<void>((resolve) => (resolveStarted = resolve));
  service.once('start', () => {
    streaming = true;
    heardAt = performance.now();
    resolveStarted();
  });
  service.on('error', (err: unknown) => {
    failure ??= err instanceof Error ? err : new Error(errorMessage(err));
  });
  // When the server was last heard from (before streaming: when the stream was opened), and
  // whether a message is being handled (flow control then pauses the socket, and nothing can be
  // heard). connectTimeoutMs ends at login: a server that freezes before START_REPLICATION
  // answers is silent too.
  let streaming = false;
  let heardAt = performance.now();
  let handling = false;
  const silentMs = () => (typeof options.silentMs === 'function' ? options.silentMs() : (options.silentMs ?? SILENT_MS));
  // A keepalive that came behind messages still queued is passed on once they are handled.
  let caughtUpPending: Lsn | undefined;
  let caughtUpPassed: Lsn = 0n;
  const passCaughtUp = () => {
    // A stopped service has dropped its queue: a keepalive behind it says nothing of those transactions.
    if (caughtUpPending === undefined || failure || service.isStop() || handling || queuedMessages(service) !== 0) return;
    caughtUpPassed = caughtUpPending;
    caughtUpPending = undefined;
    options.onCaughtUp?.(caughtUpPassed);
  };
  service.on('heartbeat', (walEnd: string, _timestamp: number, shouldRespond: boolean) => {
    heardAt = performance.now();
    if (options.onCaughtUp) {
      const lsn = parseLsn(walEnd);
      if (lsn > (caughtUpPending ?? caughtUpPassed)) caughtUpPending = lsn;
      passCaughtUp();
    }
    // Without a reply the server drops the connection after wal_sender_timeout; replying with
    // the last acknowledged position confirms nothing new.
    if (shouldRespond && acknowledged > 0n) void confirm();
  });
  // Keepalives are read only while the socket is not paused, and flow control pauses it while a
  // transaction is handled: a handler busy for longer than wal_sender_timeout got the stream cut
  // ("terminating walsender process due to replication timeout"; seen during a 10M backfill).
  // The walsender reads replies even while it waits to send, so the position also goes out on a
  // timer. Before any acknowledgement the library sends 0/0 as 0/1: Postgres up to 17 then holds
  // the slot's confirmed position back there until the first acknowledgement (the idle tick's
  // within seconds); a stream ended before it replays from restart_lsn, which consumers skip or
  // apply again (they are idempotent). The report must go out all the same: it is the ping.
  // Each report asks for an answer: a partition, or a frozen host, says nothing at all, and TCP
  // keepalive never probes a socket that sends a report every 10 s (only the retransmission
  // limit, minutes, would end it).
  const statusTimer = setInterval(() => {
    const silent = performance.now() - heardAt;
    if (!handling && silent > silentMs()) {
      const what = streaming ? 'heard nothing from the server' : 'did not begin streaming';
      failure ??= new SilentServerError(`the replication stream ${what} for ${Math.round(silent)} ms`);
      // START_REPLICATION is running (the silence limit is past the connect timeout): pg's end()
      // closes the socket at once rather than wait for the server.
      void service.stop();
      return;
    }
    void confirm(true);
  }, options.statusIntervalMs ?? 10_000);
  statusTimer.unref();
  service.on('data', async (lsn: string, message: Pgoutput.Message) => {
    handling = true;
    heardAt = performance.now();
    try {
      if (message.tag === 'begin') {
        current = { xid: message.xid, changes: [], messages: [] };
      } else if (message.tag === 'commit' && current) {
        const tx: FeedTransaction = { lsn: parseLsn(lsn), commitTime: new Date(Number(BigInt(message.commitTime as bigint) / 1000n)), ...current };
        current = undefined;
        await options.onTransaction(tx);
      } else if (current) {
        if (message.tag === 'message') current.messages.push(message.prefix);
        else current.changes.push(...toChanges(message));
      }
    } catch (err) {
      // The library would log this handler's error and go on with the next message, skipping a
      // transaction; ending the stream instead makes it come again.
      failure ??= err instanceof Error ? err : new Error(errorMessage(err));
      void service.stop();
    } finally {
      handling = false;
      heardAt = performance.now();
      passCaughtUp();
    }
  });

  const subscribed = service.subscribe(plugin, options.slot, '0/00000000');
  const startedOrFailed = Promise.race([
    started,
    subscribed.then(
      () => {
        throw failure ?? new Error('the replication stream ended before it started');
      },
      (err: unknown) => {
        throw (err as { code?: string }).code === '55006' ? new SlotBusyError(errorMessage(err)) : err;
      },
    ),
  ]);
  startedOrFailed.catch(() => void service.destroy());
  const ended = subscribed.then(
    () => failure ?? new Error('the replication stream ended'),
    (err: unknown) => failure ?? (err instanceof Error ? err : new Error(errorMessage(err))),
  );
  void ended.finally(() => clearInterval(statusTimer));

  return {
    started: startedOrFailed,
    ended,
    acknowledge(lsn) {
      if (lsn <= acknowledged) return;
      acknowledged = lsn;
      void confirm();
    },
    // pg's end() closes the socket itself while START_REPLICATION runs (a query that may never
    // end), and a login that never finishes ends at the connect timeout.
    async stop() {
      clearInterval(statusTimer);
      await service.destroy();
    },
  };
}

function toChanges(message: Pgoutput.Message): FeedChange[] {
  switch (message.tag) {
    case 'insert':
    case 'update':
    case 'delete': {
      const table = feedTable(message.relation);
      if (!table) return [];
      const row = message.tag === 'delete' ? null : message.new;
      const key = message.tag === 'insert' ? null : (message.key ?? message.old);
      return [{ table, op: message.tag, row, key }];
    }
    case 'truncate':
      return message.relations.flatMap((relation) => {
        const table = feedTable(relation);
        return table ? [{ table, op: 'truncate' as const, row: null, key: null }] : [];
      });
    default:
      return [];
  }
}

function feedTable(relation: Pgoutput.MessageRelation): FeedTable | undefined {
  return (FEED_TABLES as readonly string[]).includes(relation.name) ? (relation.name as FeedTable) : undefined;
}

/** Slot and publication names: checked, then quoted (they cannot be query parameters). */
function identifier(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`"${name}" is not a valid slot or publication name (a-z, 0-9, _; at most 63)`);
  return `"${name}"`;
}

const DATABASE_NAME: Statement = { name: 'current_database', text: 'SELECT current_database() AS name' };

/**
 * The default slot name: slots are per cluster, so one gateway deployment per database gets its
 * own (ig_feed_<database>, shortened with a hash when the name is long or unusual).
 */
export async function defaultSlotName(db: Database): Promise<string> {
  const [row] = await db.query<{ name: string }>(DATABASE_NAME);
  const safe = row!.name.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  if (safe === row!.name && safe.length <= 48) return `ig_feed_${safe}`;
  return `ig_feed_${safe.slice(0, 40)}_${createHash('sha256').update(row!.name).digest('hex').slice(0, 8)}`;
}
