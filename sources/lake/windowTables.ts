import { LIST, listValue, VARCHAR } from '@duckdb/node-api';
import { createDropQueue, type DuckSession } from '../duckdb/duckdb.js';

/**
 * Tables DuckDB keeps in memory between queries, each built once from immutable inputs (rollup
 * objects never change under their key and ETag: an export writes new keys), so the id a caller
 * gives says everything the table holds and it never goes stale. At most `maxRows` rows are held,
 * least recently used dropped first, but never a table a running query has taken (`using`): it may
 * still be about to read it, or be building the next of several tables it reads together. When
 * nothing else can go, the caller reads its files itself.
 */
export interface WindowTables {
  /** Runs `work` with `take`, whose tables stay held until `work` has finished. */
  using<T>(work: (take: TakeTable) => Promise<T>): Promise<T>;
  /**
   * Drops the tables whose id `keep` refuses (built from inputs no new query will use) once
   * unused for `idleMs` and taken by no running query.
   */
  release(s: DuckSession, keep: (id: string) => boolean, idleMs: number): Promise<void>;
}

/**
 * The table for `id`, built if not held by `build(name)`, a statement creating table `name` from
 * the local files `files()` gives (its parameter $1); `rows` bounds its size. Undefined when it
 * does not fit the budget: the caller reads the files itself. `invoices` is the SQL aggregate
 * that counts the table's invoices: a sum of per-group counts, or count(*) of per-invoice rows.
 */
export type TakeTable = (
  s: DuckSession,
  id: string,
  rows: number,
  build: (name: string) => string,
  files: () => Promise<string[]>,
  invoices?: string,
) => Promise<WindowTable | undefined>;

export interface WindowTable {
  readonly name: string;
  /** The sum of its `invoices` column, as exact text. */
  readonly invoices: string;
  /** Its rows, counted once built (the `rows` given to take only bounds them, for the budget). */
  readonly rows: number;
}

interface Entry {
  readonly name: string;
  readonly rows: number;
  /** Settles once the table exists (or failed to be made). */
  readonly made: Promise<WindowTable>;
  /** The session making it: the query that asked first. */
  readonly maker: DuckSession;
  /** performance.now() of its last use: the order of eviction, and how long it has been idle. */
  usedAt: number;
  /** Running queries that have taken it. */
  users: number;
}

/** `prefix` names its tables, apart from another set's in the same DuckDB. */
export function createWindowTables(maxRows: number, prefix = 'lake_window'): WindowTables {
  const entries = new Map<string, Entry>();
  let held = 0;
  let count = 0;
  // Tables no entry names any more, whose DROP has not run yet.
  const unnamed = createDropQueue();

  const forget = (id: string, entry: Entry) => {
    if (entries.get(id) !== entry) return;
    entries.delete(id);
    held -= entry.rows;
  };

  const drop = async (s: DuckSession, id: string, entry: Entry) => {
    forget(id, entry);
    // A table whose build failed is queued already.
    if (await entry.made.then(() => true, () => false)) unnamed.add(entry.name);
    await unnamed.drain(s);
  };

  /** Drops least recently used tables no running query has taken until `rows` more fit. */
  async function makeRoom(s: DuckSession, rows: number): Promise<boolean> {
    if (unnamed.size > 0) await unnamed.drain(s);
    if (rows > maxRows) return false;
    const victims = [...entries].filter(([, entry]) => entry.users === 0).sort((a, b) => a[1].usedAt - b[1].usedAt);
    while (held + rows > maxRows) {
      const victim = victims.shift();
      if (!victim) return false;
      // Taken meanwhile (this loop awaits each drop): kept.
      if (victim[1].users === 0) await drop(s, ...victim);
    }
    return true;
  }

  /** The held table `id`, made if it is not, counted as used: the caller gives it back. */
  const table = async (
    s: DuckSession,
    id: string,
    rows: number,
    build: (name: string) => string,
    files: () => Promise<string[]>,
    invoices: string,
  ): Promise<Entry | undefined> => {
    let entry = entries.get(id);
    if (!entry) {
      if (!(await makeRoom(s, rows))) return undefined;
      // Checked again: another query may have made it while this one made room.
      entry = entries.get(id);
      if (!entry) {
        const name = `${prefix}_${++count}`;
        const made = (async () => {
          await s.run(build(name), [listValue(await files())], [LIST(VARCHAR)]);
          const [row] = await s.all<{ invoices: string; rows: number }>(`SELECT coalesce(${invoices}, 0)::VARCHAR AS invoices, count(*)::INTEGER AS rows FROM ${name}`);
          return { name, invoices: row!.invoices, rows: row!.rows };
        })();
        const created: Entry = { name, rows, made, maker: s, usedAt: 0, users: 0 };
        entries.set(id, created);
        held += rows;
        created.made.catch(() => {
          forget(id, created);
          unnamed.add(name);
        });
        entry = created;
      }
    }
    entry.usedAt = performance.now();
    // Taken in the same turn it is found: a query making room resumes between an async
    // function's return and its caller, and would drop a table not yet counted as used.
    entry.users++;
    return entry;
  };

  return {
    async using(work) {
      const taken: Entry[] = [];
      const take: TakeTable = async (s, id, rows, build, files, invoices = 'sum(invoices)') => {
        for (let attempt = 0; ; attempt++) {
          const entry = await table(s, id, rows, build, files, invoices);
          if (!entry) return undefined;
          taken.push(entry);
          try {
            return await entry.made;
          } catch (err) {
            // Made in another query's session, which ended first (interrupted at its own time
            // limit, or failed elsewhere): its error is not this query's. The failed table is
            // forgotten already, so this query makes it again, once, in its own session.
            if (entry.maker === s || attempt > 0) throw err;
          }
        }
      };
      try {
        return await work(take);
      } finally {
        for (const entry of taken) entry.users--;
      }
    },

    async release(s, keep, idleMs) {
      if (unnamed.size > 0) await unnamed.drain(s);
      const idleSince = performance.now() - idleMs;
      for (const [id, entry] of [...entries]) if (!keep(id) && entry.users === 0 && entry.usedAt < idleSince) await drop(s, id, entry);
    },
  };
}
