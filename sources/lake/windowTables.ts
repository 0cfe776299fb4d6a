import { LIST, listValue, VARCHAR } from '@duckdb/node-api';
import type { DuckSession } from '../duckdb/duckdb.js';

/**
 * Tables DuckDB keeps in memory between queries, each built once from immutable inputs (rollup
 * objects never change under their key and ETag: an export writes new keys), so the id a caller
 * gives says everything the table holds and it never goes stale. At most `maxRows` rows are held,
 * least recently used dropped first.
 */
export interface WindowTables {
  /**
   * The table for `id`, built if not held by `build(name)`, a statement creating table `name` from
   * the local files `files()` gives (its parameter $1); `rows` bounds its size. Undefined when it
   * does not fit the budget: the caller reads the files itself.
   */
  table(s: DuckSession, id: string, rows: number, build: (name: string) => string, files: () => Promise<string[]>): Promise<WindowTable | undefined>;
}

export interface WindowTable {
  readonly name: string;
  /** The sum of its `invoices` column, as exact text. */
  readonly invoices: string;
}

interface Entry {
  readonly name: string;
  readonly rows: number;
  /** Settles once the table exists (or failed to be made). */
  readonly made: Promise<WindowTable>;
  usedAt: number;
}

export function createWindowTables(maxRows: number): WindowTables {
  const entries = new Map<string, Entry>();
  let held = 0;
  let count = 0;
  let clock = 0;

  const forget = (id: string, entry: Entry) => {
    if (entries.get(id) !== entry) return;
    entries.delete(id);
    held -= entry.rows;
  };

  /** Drops least recently used tables until `rows` more fit. */
  async function makeRoom(s: DuckSession, rows: number): Promise<boolean> {
    if (rows > maxRows) return false;
    const victims = [...entries].sort((a, b) => a[1].usedAt - b[1].usedAt);
    while (held + rows > maxRows) {
      const victim = victims.shift();
      if (!victim) return false;
      forget(...victim);
      // A query already reading it keeps its own view of the catalog (DuckDB's MVCC).
      await victim[1].made.then(() => s.run(`DROP TABLE IF EXISTS ${victim[1].name}`)).catch(() => undefined);
    }
    return true;
  }

  return {
    async table(s, id, rows, build, files) {
      let entry = entries.get(id);
      if (!entry) {
        if (!(await makeRoom(s, rows))) return undefined;
        // Checked again: another query may have made it while this one made room.
        entry = entries.get(id);
        if (!entry) {
          const name = `lake_window_${++count}`;
          const made = (async () => {
            await s.run(build(name), [listValue(await files())], [LIST(VARCHAR)]);
            const [row] = await s.all<{ invoices: string }>(`SELECT coalesce(sum(invoices), 0)::VARCHAR AS invoices FROM ${name}`);
            return { name, invoices: row!.invoices };
          })();
          const created: Entry = { name, rows, made, usedAt: 0 };
          entries.set(id, created);
          held += rows;
          created.made.catch(() => forget(id, created));
          entry = created;
        }
      }
      entry.usedAt = ++clock;
      return entry.made;
    },
  };
}
