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
 * Returns the page as `held` is written. DuckDB took longer to plan this merge as one statement
 * than to run it (see README, "Which engine"). A page is up to 10,001 groups, and the live list
 * may be every live group: live keys past the last of `limit` held keys are skipped.
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
  let lastHeld: GroupKey | undefined;
  let heldOnPage = 0;
  for (const record of records(held)) {
    const [customer, month, invoices, total, min, max] = record.split(' ') as Fields;
    const key = { customer: Number(customer), month };
    if (!pastCursor(key)) continue;
    add(key.customer, month, invoices, total, min, max);
    if (lastHeld === undefined || compareKeys(key, lastHeld) > 0) lastHeld = key;
    heldOnPage++;
  }
  // `limit` held keys past the cursor: no key after the last of them can reach the page.
  const beyond = heldOnPage >= options.limit ? lastHeld : undefined;
  for (const record of records(live)) {
    const [month, customer, invoices, total, min, max] = record.split(' ') as Fields;
    const key = { customer: Number(customer), month: options.byMonth ? month : '' };
    if (pastCursor(key) && (beyond === undefined || compareKeys(key, beyond) <= 0)) add(key.customer, key.month, invoices, total, min, max);
  }
  return [...groups.values()]
    .sort(compareKeys)
    .slice(0, options.limit)
    .map((g) => `${g.customer} ${g.month} ${g.invoices} ${formatCents(g.total)} ${formatCents(g.min)} ${formatCents(g.max)}`)
    .join(',');
}

type Fields = [string, string, string, string, string, string];

const records = (text: string): string[] => (text === '' ? [] : text.split(','));
