import { LRUCache } from 'lru-cache';
import type { KeptStats } from '../resolvers/context.js';
import { ANSWERS_KEPT, type HeldAnswer } from '../sources/lake/fewAnswers.js';
import { operationsOfFields, type LookupRequest, type SelectableFields } from './compiledOperations.js';
import { MAX_KEY_CHARS, type CachedResponse } from './responseCache.js';

/**
 * Whole responses of invoiceStats requests served from a kept few-customer answer
 * (sources/lake/fewAnswers.ts), replayed by the lean path before any GraphQL work: the same
 * request (access scope, Accept header, body text) asked again costs the kept answer's proof at a
 * new moment (one short statement: StatsEngine.keptAgain) and the stored text with the new asOf,
 * instead of graphql-jit, the resolver and the JSON. That work was about half of the gateway's own
 * time for such an answer (by hand, with timestamps per stage in the process).
 *
 * Exact because such a response is made of the request and the kept answer alone:
 * - only operations of invoiceStats's own columns (REPLAYABLE_FIELDS: no `customer`, whose rows
 *   change apart from the invoices), whose one invoiceStats field run was served from a kept answer;
 * - replayed only while that same answer is held (FewAnswers drops it when a commit touches its
 *   customers), proven at a new moment, whose asOf replaces the old one, the only part of the text
 *   that depends on the moment. No other JSON string of such an answer can equal an asOf: ids,
 *   months and amounts are digits, cursors base64url, codes and type names letters, and warnings
 *   (fixed texts) are never part of a kept answer.
 */
export interface KeptAnalytics {
  get(key: string): KeptResponse | undefined;
  /** The kept answer is gone or stale: its response too. */
  forget(key: string): void;
  /** Keeps a complete 200 answer without errors if its operation qualifies and it was served from one kept answer. */
  offer(key: string, request: LookupRequest, answer: OfferedAnswer): void;
}

export interface OfferedAnswer extends Pick<CachedResponse, 'body' | 'headers' | 'cost'> {
  /** What each invoiceStats field of the operation was served from (Context.operation.stats). */
  readonly stats: readonly (KeptStats | null)[] | undefined;
}

/** As the response cache keeps an answer, with the kept answer it was made from, and its body in parts. */
export interface KeptResponse extends Pick<CachedResponse, 'headers' | 'operationName' | 'cost'> {
  readonly held: HeldAnswer;
  /** The body's text around each occurrence of the asOf it was made at (as a JSON string). */
  readonly parts: readonly string[];
}

/** The response at another moment. */
export function replayedBody(response: KeptResponse, asOf: string): string {
  return response.parts.join(JSON.stringify(asOf));
}

/** invoiceStats and its columns: a page of a few customers' months is all such an answer shows. */
const REPLAYABLE_FIELDS: SelectableFields = {
  Query: { invoiceStats: 'InvoiceStats' },
  InvoiceStats: { rows: 'StatsRow', pageInfo: 'PageInfo', freshness: 'Freshness', warnings: 'Warning' },
  StatsRow: { customerId: null, month: null, invoiceCount: null, totalUsd: null, avgUsd: null, minUsd: null, maxUsd: null },
  PageInfo: { hasNextPage: null, hasPreviousPage: null, startCursor: null, endCursor: null },
  Freshness: { lakeRows: null, liveRows: null, asOf: null, lakeAsOf: null, engine: null },
  Warning: { code: null, message: null },
};

/** Characters of all kept responses and their keys. */
const MAX_TOTAL_CHARS = 32 * 2 ** 20;
/** A larger answer (a customer's 120 months of 100 rows each) is not worth a copy. */
const MAX_BODY_CHARS = 64 * 1024;

export function createKeptAnalytics(): KeptAnalytics {
  const responses = new LRUCache<string, KeptResponse>({
    // At most one per kept answer worth keeping.
    max: ANSWERS_KEPT,
    maxSize: MAX_TOTAL_CHARS,
    sizeCalculation: (response, key) => key.length + response.parts.reduce((n, part) => n + part.length, 0),
  });
  const replayable = operationsOfFields(REPLAYABLE_FIELDS);
  return {
    get: (key) => responses.get(key),
    forget: (key) => void responses.delete(key),
    offer(key, request, { body, headers, cost, stats }) {
      const served = stats?.length === 1 ? stats[0] : null;
      if (!served || key.length > MAX_KEY_CHARS || body.length > MAX_BODY_CHARS) return;
      const operation = replayable(request.query, request.operationName);
      if (!operation) return;
      const parts = body.split(JSON.stringify(served.asOf));
      // No asOf selected: the text is the same at any moment, still only while the answer is held.
      responses.set(key, { held: served.held, headers, operationName: operation.name, cost, parts });
    },
  };
}
