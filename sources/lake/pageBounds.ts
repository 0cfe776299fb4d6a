import type { DuckSession } from '../duckdb/duckdb.js';

/** A key of a window's groups in customer order; month '' in TOTAL groups. */
export interface GroupKey {
  readonly customer: number;
  readonly month: string;
}

/**
 * Marks along a held window's groups in customer order: every `stride`-th key, kept per table id.
 * The id names the table's content by its immutable inputs (see WindowTables), so the marks
 * never go stale, not even once the table is dropped.
 *
 * From them a page in customer order knows a key by which at least `limit` held groups follow
 * its cursor. While the lake holds nothing stale, merging fresh invoices only adds groups, so
 * those held groups stay on the page or before it, and no live group past that key can reach
 * the page: Postgres need not group fresh invoices of later customers at all.
 */
export interface PageBounds {
  /** A key with at least `limit` of the table's groups after `after` and up to it; undefined when not marked or past the end. */
  bound(id: string, after: GroupKey | null, limit: number): GroupKey | undefined;
  /** The groups of the table, when marked. */
  groups(id: string): number | undefined;
  /**
   * Records the marks of held table `table` (content `id`), once per id (concurrent calls share
   * one pass). A failed pass leaves it unmarked: the marks only save work.
   */
  mark(s: DuckSession, id: string, table: { readonly name: string; readonly rows: number }): Promise<void>;
}

export const compareKeys = (a: GroupKey, b: GroupKey): number => a.customer - b.customer || (a.month < b.month ? -1 : a.month > b.month ? 1 : 0);

interface Marked {
  readonly stride: number;
  readonly groups: number;
  readonly marks: readonly GroupKey[];
}

/**
 * `stride`: groups between marks (by default from the table's size: 16 to 256 apart, about
 * 4,096 marks for tables of 65,536 to 1,048,576 groups); `tables`: how many tables' marks are
 * kept (the least recently used dropped).
 */
export function createPageBounds(options: { stride?: number; tables?: number } = {}): PageBounds {
  const marked = new Map<string, Marked>();
  const marking = new Map<string, Promise<void>>();
  const tables = options.tables ?? 32;
  /** The table's marks, now the most recently used. */
  const use = (id: string): Marked | undefined => {
    const table = marked.get(id);
    if (table) {
      marked.delete(id);
      marked.set(id, table);
    }
    return table;
  };
  return {
    bound(id, after, limit) {
      const table = use(id);
      if (!table || limit < 1) return undefined;
      const { stride, marks } = table;
      if (!after) return marks[Math.ceil(limit / stride) - 1];
      // Mark i (0-based) is the group of rank (i + 1) * stride. With `before` marks at or before
      // the cursor, fewer than (before + 1) * stride groups are at or before it.
      let before = 0;
      let high = marks.length;
      while (before < high) {
        const middle = (before + high) >>> 1;
        if (compareKeys(marks[middle]!, after) <= 0) before = middle + 1;
        else high = middle;
      }
      // The first mark whose rank is at least that plus limit - 1.
      return marks[before + Math.ceil((limit - 1) / stride)];
    },

    groups: (id) => use(id)?.groups,

    async mark(s, id, table) {
      if (marked.has(id)) return;
      let pending = marking.get(id);
      if (!pending) {
        const stride = options.stride ?? Math.min(256, Math.max(16, Math.ceil(table.rows / 4096)));
        pending = s
          .all<{ customer: number; month: string }>(
            `SELECT customer_id::INTEGER AS customer, month FROM (
               SELECT customer_id, month, row_number() OVER (ORDER BY customer_id, month) AS n FROM ${table.name})
             WHERE n % ${stride} = 0 ORDER BY n`,
          )
          .then((marks) => {
            marked.set(id, { stride, groups: table.rows, marks });
            if (marked.size > tables) marked.delete(marked.keys().next().value!);
          })
          .catch(() => undefined)
          .finally(() => marking.delete(id));
        marking.set(id, pending);
      }
      await pending;
    },
  };
}
