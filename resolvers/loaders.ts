import DataLoader from 'dataloader';
import { groupBy } from '../core/groupBy.js';
import type { CustomerRecord } from '../sources/postgres/customerStore.js';
import type { InvoiceRecord, InvoiceStore, PageRequest } from '../sources/postgres/invoiceStore.js';
import { inKeyOrder } from '../sources/postgres/database.js';
import type { RiskScoreRecord, RiskStore } from '../sources/postgres/riskStore.js';
import type { Joined, PaymentRecord, ProfileRecord, RatingRecord } from '../sources/lake/joined.js';
import type { StatsEngine } from '../sources/lake/statsEngine.js';
import type { StatsGranularity, StatsRole } from '../sources/postgres/statsStore.js';
import { statsRowOf, type StatsRowRecord } from './statsRows.js';

/** The most keys one batch function receives; larger loads are split into several batches. */
const MAX_BATCH_SIZE = 1000;

/**
 * DataLoaders for one request. Built per request in the context, never shared: a shared loader
 * would serve one user's rows to another and grow without bound. Beneath them, invoices and
 * customers by id go through process-wide readers that merge the requests in flight and read
 * the cache shared across requests.
 */
export interface Loaders {
  readonly invoice: DataLoader<string, InvoiceRecord | null>;
  readonly customer: DataLoader<string, CustomerRecord | null>;
  readonly invoicePage: DataLoader<PageRequest, InvoiceRecord[], string>;
  readonly risk: DataLoader<string, RiskScoreRecord | null>;
  readonly customerStats: DataLoader<CustomerStatsKey, StatsRowRecord[], string>;
  readonly profile: DataLoader<string, ProfileRecord | null>;
  /** Every rating snapshot of a customer, newest first. */
  readonly ratings: DataLoader<string, RatingRecord[]>;
  readonly payments: DataLoader<string, PaymentRecord[]>;
  /** The invoice and customer ids this request asked for by id, found or not (the response cache's tags); empty for a subscription. */
  readonly idsRead: { readonly invoices: Set<string>; readonly customers: Set<string> };
}

const statsKey = (k: CustomerStatsKey) => `${k.role}|${k.months}|${k.granularity}|${k.customerId}`;

/** One customer's stats, as Customer.stats asks for them. */
export interface CustomerStatsKey {
  readonly customerId: string;
  readonly months: number;
  readonly role: StatsRole;
  readonly granularity: StatsGranularity;
}

export interface LoaderSources {
  readonly invoices: InvoiceStore;
  /** Process-wide readers by id through the cache (sources/cache/readThrough.ts), shared by every request. */
  readonly invoiceReads: (ids: readonly string[]) => Promise<(InvoiceRecord | null)[]>;
  readonly customerReads: (ids: readonly string[]) => Promise<(CustomerRecord | null)[]>;
  readonly risk: RiskStore;
  readonly analytics: StatsEngine;
  readonly joined: Joined;
}

/**
 * `memoize: false` for a subscription's context, which lives as long as the subscription: its
 * loaders still batch within one event but must not keep every row they ever loaded.
 */
export function createLoaders(sources: LoaderSources, { memoize = true } = {}): Loaders {
  const cache = memoize;
  const idsRead = { invoices: new Set<string>(), customers: new Set<string>() };
  const invoice = new DataLoader<string, InvoiceRecord | null>(
    (ids) => {
      if (memoize) for (const id of ids) idsRead.invoices.add(id);
      return sources.invoiceReads(ids);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  const customer = new DataLoader<string, CustomerRecord | null>(
    (ids) => {
      if (memoize) for (const id of ids) idsRead.customers.add(id);
      return sources.customerReads(ids);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  const invoicePage = new DataLoader<PageRequest, InvoiceRecord[], string>(
    async (requests) => {
      const pages = await sources.invoices.pages(requests);
      // Rows just read need not be read again if the same request asks for them by id.
      for (const row of pages.flat()) invoice.prime(row.id, row);
      return pages;
    },
    {
      maxBatchSize: MAX_BATCH_SIZE,
      cache,
      cacheKeyFn: (r) => `${r.role}:${r.customerId}:${r.counterpartyId ?? ''}:${r.limit}:${r.after?.issueDate ?? ''}:${r.after?.invoiceId ?? ''}`,
    },
  );
  const risk = new DataLoader<string, RiskScoreRecord | null>(
    async (ids) => inKeyOrder(ids, (await sources.risk.byInvoiceIds(ids)).map((s) => ({ ...s, id: s.invoiceId }))),
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  // Customers asked for with the same window, role and granularity share one analytics query.
  const customerStats = new DataLoader<CustomerStatsKey, StatsRowRecord[], string>(
    async (keys) => {
      const byShape = groupBy(keys, (k) => `${k.role}|${k.months}|${k.granularity}`);
      const rows = new Map<string, StatsRowRecord[]>();
      for (const group of byShape.values()) {
        const { role, months, granularity } = group[0]!;
        const customerIds = [...new Set(group.map((k) => Number(k.customerId)))];
        const answer = await sources.analytics.invoiceStats({
          role,
          months,
          customerIds,
          granularity,
          orderBy: 'CUSTOMER_ASC',
          limit: customerIds.length * (granularity === 'MONTH' ? months : 1) + 1,
          after: null,
        });
        for (const [key, groups] of groupBy(answer.groups, (g) => statsKey({ role, months, granularity, customerId: String(g.customerId) }))) {
          rows.set(key, groups.map(statsRowOf));
        }
      }
      return keys.map((k) => rows.get(statsKey(k)) ?? []);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache, cacheKeyFn: statsKey },
  );
  // The users' datasets: one DuckDB query per batch, over tables parsed once per file set.
  const profile = new DataLoader<string, ProfileRecord | null>(
    async (ids) => {
      const found = await sources.joined.profiles(ids.map(Number));
      return ids.map((id) => found.get(id) ?? null);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  const ratings = new DataLoader<string, RatingRecord[]>(
    async (ids) => {
      const found = await sources.joined.ratings(ids.map(Number));
      return ids.map((id) => found.get(id) ?? []);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  const payments = new DataLoader<string, PaymentRecord[]>(
    async (ids) => {
      const found = await sources.joined.payments(ids);
      return ids.map((id) => found.get(id) ?? []);
    },
    { maxBatchSize: MAX_BATCH_SIZE, cache },
  );
  return { invoice, customer, invoicePage, risk, customerStats, profile, ratings, payments, idsRead };
}
