import { mkdir } from 'node:fs/promises';
import { DuckDBInstance, type DuckDBConnection, type DuckDBResultReader, type DuckDBType, type DuckDBValue } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { upstreamTimeout } from '../../core/errors.js';

/**
 * The UTC month ('YYYY-MM') of a TIMESTAMPTZ column, through a plain TIMESTAMP: strftime of a
 * TIMESTAMPTZ goes through ICU's calendar row by row, several times slower over a million rows.
 */
export const utcMonth = (column: string) => `strftime(make_timestamp(epoch_us(${column})), '%Y-%m')`;

export interface DuckOptions {
  /** DuckDB's own notation: 1GB, 512MB. */
  readonly memoryLimit: string;
  readonly threads: number;
  /** Where DuckDB spills what does not fit in memory. */
  readonly tempDir: string;
}

/** One query's connection: statements run in order; temporary tables live until it is released. */
export interface DuckSession {
  /** Rows as JSON-safe values: DECIMAL, BIGINT and HUGEINT as exact strings. */
  all<Row>(sql: string, values?: readonly DuckDBValue[], types?: readonly DuckDBType[]): Promise<Row[]>;
  run(sql: string, values?: readonly DuckDBValue[], types?: readonly DuckDBType[]): Promise<void>;
  /** As all(), with parameters by name ($name). */
  allNamed<Row>(sql: string, values: Record<string, DuckDBValue>, types: Record<string, DuckDBType>): Promise<Row[]>;
  readonly connection: DuckDBConnection;
}

/**
 * Tables to drop that may still be in DuckDB: a DROP refused (its session past its time limit,
 * interrupted, or no connection in time), or a build that failed after its CREATE. Left alone,
 * each holds its rows for good; `drain` drops them in a session that can still run statements,
 * and keeps those it could not for the next.
 */
export interface DropQueue {
  add(...names: string[]): void;
  readonly size: number;
  drain(s: DuckSession): Promise<void>;
}

export function createDropQueue(): DropQueue {
  const names = new Set<string>();
  return {
    add: (...more) => more.forEach((name) => names.add(name)),
    get size() {
      return names.size;
    },
    async drain(s) {
      for (const name of [...names]) {
        try {
          await s.run(`DROP TABLE IF EXISTS ${name}`);
          names.delete(name);
        } catch {
          // Kept for the next session.
        }
      }
    },
  };
}

/**
 * The process's one DuckDB instance. Each query gets a connection of its own (a connection runs
 * one statement at a time), at most `threads` at once; a query past its time limit is
 * interrupted and fails with UPSTREAM_TIMEOUT, its connection closed.
 */
export interface Duck {
  session<T>(work: (session: DuckSession) => Promise<T>, options: { timeoutMs: number; label: string }): Promise<T>;
  /** Sessions opened so far (tests count queries with it). */
  sessions(): number;
  close(): void;
}

export async function createDuck(options: DuckOptions, logger: Logger): Promise<Duck> {
  await mkdir(options.tempDir, { recursive: true });
  const instance = await DuckDBInstance.create(':memory:', {
    memory_limit: options.memoryLimit,
    threads: String(options.threads),
    temp_directory: options.tempDir,
    // Nothing is ever downloaded: the extensions needed (parquet, json, icu) are built in.
    autoinstall_known_extensions: 'false',
    autoload_known_extensions: 'false',
    preserve_insertion_order: 'false',
  });
  // Months and days are UTC everywhere in the gateway (icu's time zone is per instance).
  const setup = await instance.connect();
  await setup.run(`SET TimeZone = 'UTC'`);
  setup.closeSync();
  // Connections are the unit of concurrency; more queries than threads only queue for CPU.
  const limit = Math.max(2, options.threads);
  let running = 0;
  const waiting: (() => void)[] = [];
  /** A connection slot, or false when `deadline` passes first (the wait counts in the time limit). */
  const acquire = async (deadline: number): Promise<boolean> => {
    while (running >= limit) {
      const ms = deadline - Date.now();
      if (ms <= 0) return false;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          const at = waiting.indexOf(wake);
          if (at >= 0) waiting.splice(at, 1);
          resolve();
        }, ms);
        waiting.push(wake);
      });
    }
    running++;
    return true;
  };
  const release = () => {
    running--;
    waiting.shift()?.();
  };

  let opened = 0;
  return {
    sessions: () => opened,
    async session(work, { timeoutMs, label }) {
      const deadline = Date.now() + timeoutMs;
      if (!(await acquire(deadline))) {
        logger.warn({ query: label, timeoutMs }, 'analytics query waited for a DuckDB connection past its time limit');
        throw upstreamTimeout('The analytics engine');
      }
      opened++;
      let connection: DuckDBConnection;
      try {
        connection = await instance.connect();
      } catch (err) {
        // The slot taken above must be handed back, or every later query waits for it.
        release();
        throw err;
      }
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        connection.interrupt();
      }, Math.max(deadline - Date.now(), 0));
      // An interrupt while no statement runs (the work was waiting on a download, or on a table
      // another query makes) stops nothing: a statement begun after the limit is refused instead.
      const inTime = () => {
        if (timedOut) throw new Error('the time limit passed before the statement began');
      };
      const session: DuckSession = {
        connection,
        async all<Row>(sql: string, values?: readonly DuckDBValue[], types?: readonly DuckDBType[]) {
          inTime();
          const reader = await connection.runAndReadAll(sql, values as DuckDBValue[] | undefined, types as DuckDBType[] | undefined);
          return rowObjects<Row>(reader);
        },
        async allNamed<Row>(sql: string, values: Record<string, DuckDBValue>, types: Record<string, DuckDBType>) {
          inTime();
          const reader = await connection.runAndReadAll(sql, values, types);
          return rowObjects<Row>(reader);
        },
        async run(sql: string, values?: readonly DuckDBValue[], types?: readonly DuckDBType[]) {
          inTime();
          await connection.run(sql, values as DuckDBValue[] | undefined, types as DuckDBType[] | undefined);
        },
      };
      const started = performance.now();
      try {
        return await work(session);
      } catch (err) {
        if (timedOut) {
          logger.warn({ query: label, timeoutMs }, 'analytics query interrupted at its time limit');
          throw upstreamTimeout('The analytics engine', err);
        }
        throw err;
      } finally {
        clearTimeout(timer);
        connection.closeSync();
        release();
        logger.debug({ query: label, ms: performance.now() - started }, 'duckdb');
      }
    },
    close: () => instance.closeSync(),
  };
}

/**
 * Named parameters for one statement: bind() records a value with its type and returns its
 * placeholder; used() keeps only those the statement names (DuckDB refuses unused ones).
 */
export function namedParameters() {
  const values: Record<string, DuckDBValue> = {};
  const types: Record<string, DuckDBType> = {};
  return {
    values,
    types,
    bind(name: string, value: DuckDBValue, type: DuckDBType): string {
      values[name] = value;
      types[name] = type;
      return `$${name}`;
    },
    used(sql: string) {
      for (const name of Object.keys(values)) {
        if (!new RegExp(`\\$${name}\\b`).test(sql)) {
          delete values[name];
          delete types[name];
        }
      }
      return { values, types };
    },
  };
}

/**
 * Rows as objects of JSON values, as getRowObjectsJson gives them, but converted a column at a
 * time, which is faster for the 10,000-row pages of invoiceStats.
 */
function rowObjects<Row>(reader: DuckDBResultReader): Row[] {
  const columns = reader.getColumnsJson();
  const names = reader.columnNames();
  const rows = new Array<Record<string, unknown>>(reader.currentRowCount);
  for (let i = 0; i < rows.length; i++) {
    const row: Record<string, unknown> = {};
    for (let c = 0; c < names.length; c++) row[names[c]!] = columns[c]![i];
    rows[i] = row;
  }
  return rows as Row[];
}
