import { formatCents, toCents } from '../../core/money.js';
import { compareKeys, type GroupKey } from './pageBounds.js';

/** A group being added up: money in cents, exact. */
interface Sums {
  readonly customer: number;
  readonly month: string;
  invoices: bigint;
  total: bigint;
  min: bigint;
  max: bigint;
}

export interface PageMergeOptions {
  /** Live groups are regrouped by customer alone (TOTAL) when false. */
  readonly byMonth: boolean;
  /** The cursor's key (month '' by TOTAL); null: the first page. */
  readonly after: GroupKey | null;
  readonly limit: number;
}

/**
 * A page in customer order, merged here instead of in DuckDB: the first `limit` keys past the
 * cursor among the held groups and the live ones, each key's held and live parts added up.
 *
 * `held`: at least the held table's first `limit` groups past the cursor, as records
 * `customer month invoices total min max` (month '' by TOTAL), commas between. A held group on
 * the page has fewer than `limit` keys between the cursor and it, so it is among them.
 * `live`: LiveGroups.records (`month customer invoices total min max`, by month), all the live
 * groups or only the page's (LiveGroups.partial): a live key on the page is among those too.
 *
 * Returns the page as `held` is written. The merge is a few hundred groups: DuckDB's planning
 * of the same merge as one statement took several times its cost (see README).
 */
export function mergePage(held: string, live: string, options: PageMergeOptions): string {
  const groups = new Map<string, Sums>();
  const add = (customer: number, month: string, invoices: string, total: string, min: string, max: string) => {
    const key = `${customer} ${month}`;
    const found = groups.get(key);
    const [minCents, maxCents] = [toCents(min), toCents(max)];
    if (!found) {
      groups.set(key, { customer, month, invoices: BigInt(invoices), total: toCents(total), min: minCents, max: maxCents });
      return;
    }
    found.invoices += BigInt(invoices);
    found.total += toCents(total);
    if (minCents < found.min) found.min = minCents;
    if (maxCents > found.max) found.max = maxCents;
  };
  const pastCursor = (key: GroupKey) => options.after === null || compareKeys(key, options.after) > 0;
  for (const record of records(held)) {
    const [customer, month, invoices, total, min, max] = record.split(' ') as Fields;
    const key = { customer: Number(customer), month };
    if (pastCursor(key)) add(key.customer, month, invoices, total, min, max);
  }
  for (const record of records(live)) {
    const [month, customer, invoices, total, min, max] = record.split(' ') as Fields;
    const key = { customer: Number(customer), month: options.byMonth ? month : '' };
    if (pastCursor(key)) add(key.customer, key.month, invoices, total, min, max);
  }
  return [...groups.values()]
    .sort(compareKeys)
    .slice(0, options.limit)
    .map((g) => `${g.customer} ${g.month} ${g.invoices} ${formatCents(g.total)} ${formatCents(g.min)} ${formatCents(g.max)}`)
    .join(',');
}

type Fields = [string, string, string, string, string, string];

const records = (text: string): string[] => (text === '' ? [] : text.split(','));
