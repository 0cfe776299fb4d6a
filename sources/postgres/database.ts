import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { Logger } from 'pino';
import { serviceUnavailable, upstreamTimeout, PublicError } from '../../core/errors.js';
import type { Metrics } from '../../core/metrics.js';

/** Settings the Postgres source needs; a slice of the gateway config. */
export interface DatabaseOptions {
  readonly url: string;
  readonly poolMax: number;
  /** 0 disables the limit (seeding, migrations, the feed's long statements). */
  readonly statementTimeoutMs: number;
  /** Whether this pool's connections are the ones /metrics reports (the request pool). Default true. */
  readonly reportPool?: boolean;
  /**
   * Prepared statements planned once for any values (plan_cache_mode=force_generic_plan), where
   * Postgres would otherwise plan each run again; a transaction may SET LOCAL it back.
   */
  readonly genericPlans?: boolean;
  /**
   * false: Postgres never JIT-compiles this pool's statements. For pools of small bookkeeping
   * statements, where a misestimate (a one-row table never analyzed, planned as hundreds of rows)
   * can cross jit_above_cost: 10 ms of compiling for a statement that runs in 1.
   */
  readonly jit?: boolean;
}

/** A statement's name labels metrics and logs; its text is constant, values are parameters. */
export interface Statement {
  readonly name: string;
  readonly text: string;
}

export interface Queryable {
  query<Row extends pg.QueryResultRow>(statement: Statement, values?: readonly unknown[]): Promise<Row[]>;
}

export interface TransactionOptions {
  /**
   * Run in a snapshot exported by another session (pg_export_snapshot, or a replication slot
   * created with EXPORT_SNAPSHOT): the transaction sees exactly what that session saw.
   */
  readonly snapshot?: string;
}

/**
 * All access to Postgres goes through here: one place that counts and times statements, logs
 * them (name, duration, rows; never parameters) and translates driver errors into public ones.
 */
export interface Database extends Queryable {
  /** Runs `work` in a transaction on one checked-out client; rolls back if it throws. */
  transaction<T>(work: (tx: Queryable) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Runs `work` on one checked-out client outside a transaction (advisory locks, DDL). When
   * `signal` aborts first (a query's time limit), the client's running statement is cancelled,
   * and the client is not pooled again.
   */
  withClient<T>(work: (client: pg.PoolClient) => Promise<T>, options?: { readonly signal?: AbortSignal }): Promise<T>;
  /** `true` when Postgres answers a trivial query within `timeoutMs`. */
  ping(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
  readonly pool: pg.Pool;
}

/**
 * pg's defaults return bigint and numeric as strings, which keeps ids beyond 2^53 and money exact;
 * nothing here changes them.
 */
export function createDatabase(options: DatabaseOptions, logger: Logger, metrics?: Metrics): Database {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolMax,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs,
    // statement_timeout is enforced by the server; when the server stops answering altogether
    // (a partition, a hung host) only a client-side limit and TCP keepalive end the wait.
    query_timeout: options.statementTimeoutMs > 0 ? options.statementTimeoutMs + 1000 : undefined,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: 'invoice-gateway',
    options: [options.genericPlans ? '-c plan_cache_mode=force_generic_plan' : '', options.jit === false ? '-c jit=off' : ''].filter(Boolean).join(' ') || undefined,
  });
  // An idle client losing its connection (server restart) must not crash the process; the pool
  // drops it and the next query opens a new connection, so the gateway recovers by itself.
  pool.on('error', (err) => logger.warn({ err: describe(err) }, 'idle Postgres connection failed'));

  /**
   * Cancels the statement a checked-out client's backend runs, again (after 0.2, 0.4, 0.8 ... s,
   * at most 5 s apart) until the client's work has settled: a cancel that reaches the backend
   * between statements cancels nothing, and a statement sent just then would run on.
   */
  async function cancelUntilSettled(client: pg.PoolClient, settled: () => boolean): Promise<void> {
    // The driver keeps the server's BackendKeyData; @types/pg does not declare it.
    const backend = client as unknown as { host: string; port: number; processID?: unknown; secretKey?: unknown };
    const { processID, secretKey } = backend;
    if (typeof processID !== 'number' || typeof secretKey !== 'number') return;
    let warned = false;
    for (let pause = CANCEL_AGAIN_MS; !settled(); pause = Math.min(pause * 2, 5_000)) {
      try {
        await sendCancelRequest(backend.host, backend.port, processID, secretKey);
      } catch (err) {
        if (!warned) logger.warn({ err: describe(err) }, 'could not cancel a statement past its time limit');
        warned = true;
      }
      await sleep(pause, undefined, { ref: false });
    }
  }

  if (metrics && options.reportPool !== false) metrics.poolStats = () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount });

  async function run<Row extends pg.QueryResultRow>(
    client: pg.Pool | pg.PoolClient,
    statement: Statement,
    values: readonly unknown[] = [],
  ): Promise<Row[]> {
    const started = performance.now();
    try {
      // Named, so each connection parses and plans a statement once and then only binds values.
      const result = await client.query<Row>({ name: statement.name, text: statement.text, values: values as unknown[] });
      const seconds = (performance.now() - started) / 1000;
      metrics?.sqlStatements.inc({ statement: statement.name, outcome: 'ok' });
      metrics?.sqlDuration.observe({ statement: statement.name }, seconds);
      logger.debug({ statement: statement.name, ms: seconds * 1000, rows: result.rowCount }, 'sql');
      return result.rows;
    } catch (err) {
      metrics?.sqlStatements.inc({ statement: statement.name, outcome: 'error' });
      throw translate(err, statement.name, logger);
    }
  }

  return {
    pool,
    query: (statement, values) => run(pool, statement, values),

    async withClient(work, { signal } = {}) {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw translate(err, 'connect', logger);
      }
      let broken: Error | undefined;
      // The pool listens for errors only on idle clients. A connection lost while checked out
      // between statements (a server restart while DuckDB works inside a snapshot) would
      // otherwise be an uncaught exception, ending the process; the next statement on it fails.
      let connectionLost = false;
      const lost = (err: Error) => {
        connectionLost = true;
        broken ??= err;
        logger.warn({ err: describe(err) }, 'Postgres connection lost while in use');
      };
      client.on('error', lost);
      let settled = false;
      const abandon = () => {
        broken ??= upstreamTimeout('The database');
        // A connection already lost (the server ended the session) has nothing left to cancel.
        void cancelUntilSettled(client, () => settled || connectionLost);
      };
      signal?.addEventListener('abort', abandon, { once: true });
      try {
        return await work(client);
      } catch (err) {
        // After a client-side timeout the statement may still run on that connection, and after
        // a connection error it is dead: either way it must not go back into the pool.
        if (err instanceof PublicError && (err.code === 'UPSTREAM_TIMEOUT' || err.code === 'SERVICE_UNAVAILABLE')) broken = err;
        throw err;
      } finally {
        settled = true;
        signal?.removeEventListener('abort', abandon);
        client.removeListener('error', lost);
        client.release(broken);
      }
    },

    async transaction(work, options = {}) {
      return this.withClient(async (client) => {
        const { snapshot } = options;
        // SET TRANSACTION SNAPSHOT takes no parameters; the id's shape is checked instead.
        if (snapshot !== undefined && !/^[0-9A-F]+(-[0-9A-F]+)+$/i.test(snapshot)) throw new Error('not a snapshot id');
        await run(client, snapshot === undefined ? BEGIN : BEGIN_REPEATABLE_READ);
        try {
          if (snapshot !== undefined) await client.query(`SET TRANSACTION SNAPSHOT '${snapshot}'`);
          const result = await work({ query: (statement, values) => run(client, statement, values) });
          await run(client, COMMIT);
          return result;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      });
    },

    async ping(timeoutMs) {
      const timeout = new Promise<false>((resolve) => setTimeout(resolve, timeoutMs, false).unref());
      const answer = run(pool, PING).then(() => true, () => false);
      return Promise.race([answer, timeout]);
    },

    close: () => pool.end(),
  };
}

/** The first pause before a cancel is sent again while the cancelled client's work has not ended. */
const CANCEL_AGAIN_MS = 200;

/**
 * The protocol's CancelRequest, as psql sends it on Ctrl-C: its own short connection, no login
 * and no connection slot, and keyed by the backend's secret, so it reaches no other backend
 * (through pgbouncer too, which answers it for the server it forwards to).
 */
function sendCancelRequest(host: string, port: number, processID: number, secretKey: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = host.startsWith('/') ? connect(`${host}/.s.PGSQL.${port}`) : connect(port, host);
    socket.setTimeout(5_000, () => socket.destroy(new Error('the cancel request timed out')));
    socket.once('connect', () => {
      const request = Buffer.alloc(16);
      request.writeInt32BE(16, 0);
      request.writeInt32BE(80877102, 4);
      request.writeInt32BE(processID, 8);
      request.writeInt32BE(secretKey, 12);
      // The server reads it, signals the backend and closes the connection.
      socket.end(request);
    });
    socket.once('error', reject);
    socket.once('close', () => resolve());
    socket.resume();
  });
}

const BEGIN: Statement = { name: 'begin', text: 'BEGIN' };
const BEGIN_REPEATABLE_READ: Statement = { name: 'begin_repeatable_read', text: 'BEGIN ISOLATION LEVEL REPEATABLE READ' };
const COMMIT: Statement = { name: 'commit', text: 'COMMIT' };
const PING: Statement = { name: 'ping', text: 'SELECT 1' };

/** SQLSTATE classes meaning "the server is not there for us right now". */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

/** Translates the driver errors we know into public ones; anything else is rethrown as is. */
export function translate(err: unknown, statementName: string, logger: Logger): unknown {
  if (err instanceof PublicError) return err;
  const code = (err as { code?: string }).code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === '57014' || /Query read timeout/.test(message)) {
    logger.warn({ statement: statementName }, 'statement timed out');
    return upstreamTimeout('The database', err);
  }
  if (
    (code && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_NODE_CODES.has(code) || code.startsWith('08'))) ||
    /Connection terminated|timeout exceeded when trying to connect|connect ECONNREFUSED|Client has encountered a connection error/i.test(message)
  ) {
    logger.warn({ statement: statementName, err: describe(err) }, 'Postgres unavailable');
    return serviceUnavailable('The database', err);
  }
  return err;
}

/** Error fields safe to log: never a connection string or parameters. */
function describe(err: unknown) {
  const e = err as { code?: string; message?: string };
  return { code: e.code, message: e.message };
}

/**
 * Waits until Postgres answers, retrying while it is unavailable (refused, starting up, gone)
 * with a growing pause of at most 5 s, and logging the first failure and every tenth after it.
 * Any other error (wrong password, no such database) is thrown at once: retrying cannot fix it.
 * `false` when `stop()` said to give up.
 */
export async function waitUntilReachable(db: Database, logger: Logger, stop: () => boolean): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await db.query(PING);
      return true;
    } catch (err) {
      if (!(err instanceof PublicError && err.code === 'SERVICE_UNAVAILABLE')) throw err;
      if (attempt % 10 === 1) logger.warn({ attempt, reason: (err.cause as Error | undefined)?.message }, 'Postgres not reachable yet; retrying');
    }
    if (stop()) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(attempt * 500, 5000)));
    if (stop()) return false;
  }
}

/** Rows matched back to the requested ids, in their order, `null` where absent. */
export function inKeyOrder<Row extends { id: string }>(ids: readonly string[], rows: readonly Row[]): (Row | null)[] {
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => byId.get(id) ?? null);
}
