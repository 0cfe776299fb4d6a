import DataLoader from 'dataloader';
import type { Cache } from '../sources/cache/cache.js';
import type { CustomerRecord, CustomerStore } from '../sources/postgres/customerStore.js';
import type { InvoiceRecord, InvoiceStore, PageRequest } from '../sources/postgres/invoiceStore.js';
import type { Metrics } from './metrics.js';

/** The most keys one batch function receives; larger loads are split into several batches. */
const MAX_BATCH_SIZE = 1000;

/**
 * DataLoaders for one request. Built per request in the context, never shared: a shared loader
 * would serve one user's rows to another and grow without bound. Redis (or the LRU) sits behind
 * the batch functions as the cache shared across requests.
 */
export interface Loaders {
  readonly invoice: DataLoader<string, InvoiceRecord | null>;
  readonly customer: DataLoader<string, CustomerRecord | null>;
  readonly invoicePage: DataLoader<PageRequest, InvoiceRecord[], string>;
}

export interface LoaderSources {
  readonly invoices: InvoiceStore;
  readonly customers: CustomerStore;
  readonly cache: Cache;
  readonly metrics: Metrics;
}

/**
 * The version changes whenever a cached record's shape does, so that during a rolling deploy
 * old and new gateways never read each other's entries.
 */
const RECORD_VERSION = 'v1';

export const cacheKeys = {
  invoice: (id: string) => `inv:${RECORD_VERSION}:${id}`,
  customer: (id: string) => `cust:${RECORD_VERSION}:${id}`,
};

export function createLoaders(sources: LoaderSources): Loaders {
  const invoice = new DataLoader<string, InvoiceRecord | null>(
    readThrough(sources, 'invoice', cacheKeys.invoice, (ids) => sources.invoices.byIds(ids)),
    { maxBatchSize: MAX_BATCH_SIZE },
  );
  const customer = new DataLoader<string, CustomerRecord | null>(
    readThrough(sources, 'customer', cacheKeys.customer, (ids) => sources.customers.byIds(ids)),
    { maxBatchSize: MAX_BATCH_SIZE },
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
      cacheKeyFn: (r) => `${r.role}:${r.customerId}:${r.limit}:${r.after?.issueDate ?? ''}:${r.after?.invoiceId ?? ''}`,
    },
  );
  return { invoice, customer, invoicePage };
}

/**
 * A batch function that reads the cache first (one MGET), Postgres for the misses only, then
 * fills the cache (SETs with a TTL, pipelined by the Redis client). Absent rows are not cached: an id unknown now may be
 * inserted a moment later.
 */
function readThrough<T>(
  { cache, metrics }: LoaderSources,
  entity: string,
  keyOf: (id: string) => string,
  fetch: (ids: readonly string[]) => Promise<(T | null)[]>,
): (ids: readonly string[]) => Promise<(T | null)[]> {
  return async (ids) => {
    const result = (await cache.getMany(ids.map(keyOf))).map((v) => decode<T>(v));
    const missing = ids.filter((_, i) => result[i] === null);
    metrics.cacheHits.inc({ entity }, ids.length - missing.length);
    if (missing.length === 0) return result;
    metrics.cacheMisses.inc({ entity }, missing.length);

    const fetched = await fetch(missing);
    const byId = new Map(missing.map((id, i) => [id, fetched[i] ?? null]));
    const fill: [string, string][] = [];
    for (const [id, row] of byId) if (row !== null) fill.push([keyOf(id), JSON.stringify(row)]);
    // Not awaited: the response need not wait for the fill. Redis runs commands in order on one
    // connection, so a later MGET still sees it; a failed fill is only a later miss.
    void cache.setMany(fill);
    return ids.map((id, i) => result[i] ?? byId.get(id) ?? null);
  };
}

/** A cached entry that does not parse (written by hand, truncated) is a miss, not a failure. */
function decode<T>(value: string | null): T | null {
  if (value === null) return null;
  try {
    return JSON.parse(value) as T;
  } catch {
    return null;
  }
}
