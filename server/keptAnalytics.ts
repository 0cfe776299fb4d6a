import { LRUCache } from 'lru-cache';
import { getHeapStatistics } from 'node:v8';
import type { KeptStats } from '../resolvers/context.js';
import { ANSWERS_KEPT } from '../sources/lake/fewAnswers.js';
import type { AnswerBasis } from '../sources/lake/statsEngine.js';
import { operationsOfFields, type LookupRequest, type SelectableFields } from './compiledOperations.js';
import { MAX_KEY_CHARS, type CachedResponse } from './responseCache.js';

/**
 * Whole responses of invoiceStats requests whose answer can be proven exact again (an
 * AnswerBasis: a kept few-customer answer, or the lake at a version), replayed by the lean path
 * before any GraphQL work: the same request (access scope, Accept header, body text) asked again
 * costs the proof at a new moment (StatsEngine.keptAgain: one short statement; for the lake, when
 * this gateway's feed had not recorded up to it, the barrier and a second one) and the stored text
 * with the new asOf, instead of the query, graphql-jit, the resolver and the JSON. For a few
 * customers that work was about half of the gateway's own time (by hand, with timestamps per
 * stage in the process); for a 10,000-row page of the lake, most of it (see README).
 *
 * Exact because such a response is made of the request and its answer's basis alone:
 * - only operations of invoiceStats's own columns (REPLAYABLE_FIELDS: no `customer`, whose rows
 *   change apart from the invoices), whose one invoiceStats field run had a basis;
 * - replayed only once that basis is proven at a new moment (the few-customer answer still held,
 *   or the lake unchanged for the window), whose asOf replaces the old one, the only part of the
 *   text that depends on the moment. No other JSON string of such an answer can equal an asOf:
 *   ids, months and amounts are digits, cursors base64url, codes and type names letters, warnings
 *   (fixed texts) are never part of an answer with a basis, and a lake answer whose lakeAsOf
 *   equals its asOf has none.
 */
export interface KeptAnalytics {
  get(key: string): KeptResponse | undefined;
  /** The kept answer is gone or stale: its response too. */
  forget(key: string): void;
  /** Keeps a complete 200 answer without errors if its operation qualifies and its one invoiceStats answer has a basis. */
  offer(key: string, request: LookupRequest, answer: OfferedAnswer): void;
}

export interface OfferedAnswer extends Pick<CachedResponse, 'body' | 'headers' | 'cost'> {
  /** What each invoiceStats field of the operation was served from (Context.operation.stats). */
  readonly stats: readonly (KeptStats | null)[] | undefined;
}

/** As the response cache keeps an answer, with what its answer rests on, and its body in parts. */
export interface KeptResponse extends Pick<CachedResponse, 'headers' | 'operationName' | 'cost'> {
  readonly basis: AnswerBasis;
  /**
   * The body's UTF-8 bytes around each occurrence of the asOf it was made at (as a JSON string):
   * a replay copies bytes instead of joining and encoding text (a 10,000-row page: about 0.8 ms
   * against 2 ms, by hand), and they are kept outside the JavaScript heap.
   */
  readonly parts: readonly Buffer[];
}

/** The response's bytes at another moment. */
export function replayedBody(response: KeptResponse, asOf: string): Buffer {
  const at = Buffer.from(JSON.stringify(asOf), 'utf8');
  return Buffer.concat(response.parts.flatMap((part, i) => (i === 0 ? [part] : [at, part])));
}

/** invoiceStats and its columns: a page of groups is all such an answer shows. */
const REPLAYABLE_FIELDS: SelectableFields = {
  Query: { invoiceStats: 'InvoiceStats' },
  InvoiceStats: { rows: 'StatsRow', pageInfo: 'PageInfo', freshness: 'Freshness', warnings: 'Warning' },
  StatsRow: { customerId: null, month: null, invoiceCount: null, totalUsd: null, avgUsd: null, minUsd: null, maxUsd: null },
  PageInfo: { hasNextPage: null, hasPreviousPage: null, startCursor: null, endCursor: null },
  Freshness: { lakeRows: null, liveRows: null, asOf: null, lakeAsOf: null, engine: null },
  Warning: { code: null, message: null },
};

/**
 * Bytes kept, by what the answers rest on, in stores of their own: a few customers' responses
 * are small and many (a customer's 120 months of 100 rows each is not worth a copy); the lake's
 * pages are large (a 10,000-row page of every column is about 1.3 MB) and would push them out.
 * The lake's share is a sixteenth of the heap's limit (16 MB under `npm start`'s 256 MB), at
 * least 8 MB: a client paging through 100,000 groups again and again is the case worth the room.
 */
export type KeptBudgets = Record<AnswerBasis['kind'], { readonly total: number; readonly body: number }>;

const BUDGETS: KeptBudgets = {
  few: { total: 32 * 2 ** 20, body: 64 * 1024 },
  lake: { total: Math.max(8 * 2 ** 20, Math.floor(getHeapStatistics().heap_size_limit / 16)), body: 4 * 2 ** 20 },
};

/** Bytes of their own: a small Buffer.from is a slice of Node's shared 8 KB pool, which a kept part would hold whole. */
function ownBytes(text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text, 'utf8'));
  bytes.write(text, 'utf8');
  return bytes;
}

/** `budgets`: BUDGETS unless a test needs smaller ones. */
export function createKeptAnalytics(budgets: KeptBudgets = BUDGETS): KeptAnalytics {
  const storeOf = (kind: AnswerBasis['kind']) =>
    new LRUCache<string, KeptResponse>({
      // At most one per kept few-customer answer; as many lake pages.
      max: ANSWERS_KEPT,
      maxSize: budgets[kind].total,
      sizeCalculation: (response, key) => key.length + response.parts.reduce((n, part) => n + part.length, 0),
    });
  const stores = { few: storeOf('few'), lake: storeOf('lake') };
  const replayable = operationsOfFields(REPLAYABLE_FIELDS);
  return {
    get: (key) => stores.few.get(key) ?? stores.lake.get(key),
    forget(key) {
      stores.few.delete(key);
      stores.lake.delete(key);
    },
    offer(key, request, { body, headers, cost, stats }) {
      const served = stats?.length === 1 ? stats[0] : null;
      if (!served || key.length > MAX_KEY_CHARS || body.length > budgets[served.basis.kind].body) return;
      const operation = replayable(request.query, request.operationName);
      if (!operation) return;
      const parts = body.split(JSON.stringify(served.asOf)).map(ownBytes);
      // No asOf selected: the text is the same at any moment, still only while its basis holds.
      stores[served.basis.kind].set(key, { basis: served.basis, headers, operationName: operation.name, cost, parts });
    },
  };
}
