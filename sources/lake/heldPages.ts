import { LRUCache } from 'lru-cache';

/**
 * A first page of a held table: its first `limit` groups. (A page read up to a bound from
 * PageBounds is the same page: at least `limit` groups lie before the bound.)
 */
export interface HeldPageKey {
  /** The held table's id: its rollup files' keys and ETags, which name its content. */
  readonly table: string;
  readonly limit: number;
}

export interface HeldPage {
  /** The page's held groups as DuckDB read them, before any live group is merged in (see mergePage). */
  readonly records: string;
  /** The table's invoices (exact text), as WindowTable has them. */
  readonly invoices: string;
}

/**
 * First pages in customer order as read from held tables, kept. A held table never changes under
 * its id (rollup objects never change under their key and ETag), so neither does its first page:
 * asked again (a dashboard's first page, on every refresh) it takes no DuckDB statement, only the
 * live groups of its own query merged in. Reading a 100-group first page from DuckDB took 4.4-4.6
 * ms at 10,000,000 invoices (the `lake` stage in README, "The lake and invoiceStats"), almost all
 * of it a statement's fixed cost. Only first pages: a client paging through a window of a million groups would
 * otherwise push every dashboard's page out. Bounded by the characters kept, least recently used
 * dropped first.
 */
export interface HeldPages {
  get(key: HeldPageKey): HeldPage | undefined;
  set(key: HeldPageKey, page: HeldPage): void;
}

export function createHeldPages(maxChars: number): HeldPages {
  const pages = new LRUCache<string, HeldPage>({ maxSize: maxChars, sizeCalculation: (page, key) => page.records.length + key.length + 64 });
  const keyOf = ({ table, limit }: HeldPageKey) => `${limit} ${table}`;
  return {
    get: (key) => pages.get(keyOf(key)),
    set(key, page) {
      pages.set(keyOf(key), page);
    },
  };
}
