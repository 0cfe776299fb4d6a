import { LRUCache } from 'lru-cache';
import type { Metrics } from '../core/metrics.js';
import type { Admission } from '../sources/cache/admission.js';
import type { InvalidationChannel } from '../sources/cache/invalidationChannel.js';
import { operationsOfFields, type SelectableFields } from './compiledOperations.js';

/**
 * Whole responses of repeated lookups, answered before Apollo runs (server/leanPath.ts), as
 * GraphQL Yoga's response cache does with entity tags:
 *
 * - keyed by the viewer's access scope, the Accept header and the request body's exact text;
 * - only operations made of the fields below (rows by id, their scalar columns and parties), whose
 *   answers depend on nothing but the invoices and customers rows they read;
 * - tagged with the cache keys of those rows (the ids the request's loaders read, found or not),
 *   and dropped in every process when the change feed invalidates one of them;
 * - never an answer with errors, and never one whose rows were invalidated while it was computed.
 *
 * The request is still authenticated and counted against its budgets (the operation's cost
 * included) and its metrics recorded, as on the full path.
 */
export interface ResponseCache {
  /** The answer stored for this request, if any. */
  get(key: string): CachedResponse | undefined;
  /** Counts a stored answer sent (one its client's budget refused is answered by the full path). */
  served(): void;
  /** Taken before computing an answer that may be offered. */
  begin(): Ticket;
  /** The operation's name if its answers may be kept (see CACHEABLE_FIELDS), else false; memoized. */
  qualifies(query: string, operationName: string | undefined): Qualified | false;
  /** Stores an answer computed since `ticket`, if its operation qualified and none of its rows changed meanwhile. */
  offer(ticket: Ticket, key: string, answer: Answer): void;
}

export interface Qualified {
  readonly name: string | null;
}

export interface Answer {
  /** What `qualifies` said of its operation. */
  readonly operation: Qualified | false;
  readonly body: string;
  readonly headers: readonly (readonly [string, string])[];
  /** The estimated cost charged to the client's budget. */
  readonly cost: number;
  readonly tags: readonly string[];
}

export interface CachedResponse {
  readonly body: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly operationName: string | null;
  readonly cost: number;
  readonly tags: readonly string[];
}

export interface Ticket {
  readonly sequence: number;
  readonly epoch: number;
}

/** The fields a cached operation may select, by type, with the type each returns (null: a scalar). */
const CACHEABLE_FIELDS: SelectableFields = {
  Query: { invoice: 'Invoice', invoices: 'Invoice', customer: 'Customer', customers: 'Customer' },
  Invoice: { id: null, issueDate: null, amountUsd: null, issuerId: null, receiverId: null, issuer: 'Customer', receiver: 'Customer' },
  Customer: { id: null, name: null },
};

/**
 * Requests and answers larger than this are not kept: a cache of small hot lookups, not of bulk
 * reads (and a padded request body cannot fill memory with keys).
 */
export const MAX_REQUEST_CHARS = 4 * 1024;
/** The request, its scope and its Accept header. */
export const MAX_KEY_CHARS = MAX_REQUEST_CHARS + 200;
const MAX_BODY_CHARS = 32 * 1024;
/** An answer that read more rows than this is a bulk read too. */
const MAX_TAGS = 200;
/** Bytes (about: string lengths) all kept answers and their keys may take. */
const MAX_TOTAL_CHARS = 32 * 2 ** 20;
/** Invalidated keys remembered to refuse answers computed across them. */
const TRACKED_INVALIDATIONS = 100_000;

export function createResponseCache(options: {
  maxEntries: number;
  /** A backstop like the row cache's TTL: invalidation, not age, keeps answers fresh. */
  ttlSeconds: number;
  invalidations: InvalidationChannel;
  /** Whether a change feed is invalidating now (this process's, or another's through Redis). */
  invalidating: () => boolean;
  /** Which answers are worth keeping (as for rows: with second-read, an answer computed twice). */
  admission: Admission;
  metrics: Metrics;
}): ResponseCache {
  const { invalidations, metrics } = options;
  const usable = () => invalidations.live() && options.invalidating();
  const byTag = new Map<string, Set<string>>();
  const entries = new LRUCache<string, CachedResponse>({
    max: options.maxEntries,
    maxSize: MAX_TOTAL_CHARS,
    sizeCalculation: (entry, key) => key.length + entry.body.length + 32 * entry.tags.length,
    ttl: options.ttlSeconds * 1000,
    dispose: (entry, key) => {
      for (const tag of entry.tags) {
        const keys = byTag.get(tag);
        keys?.delete(key);
        if (keys?.size === 0) byTag.delete(tag);
      }
    },
  });
  let sequence = 0;
  let clearedAt = 0;
  const invalidatedAt = new LRUCache<string, number>({ max: TRACKED_INVALIDATIONS });

  const clear = () => {
    clearedAt = ++sequence;
    entries.clear();
  };
  invalidations.onMessage(({ keys, prefix }) => {
    if (prefix !== undefined) clear();
    for (const tag of keys ?? []) {
      invalidatedAt.set(tag, ++sequence);
      for (const key of byTag.get(tag) ?? []) entries.delete(key);
    }
  });
  invalidations.onLost(clear);

  const count = (outcome: string) => metrics.responseCache.inc({ outcome });
  const qualifies = operationsOfFields(CACHEABLE_FIELDS);
  return {
    qualifies,
    get(key) {
      if (!usable()) return undefined;
      const entry = entries.get(key);
      if (!entry) count('miss');
      return entry;
    },

    served: () => count('hit'),

    begin: () => ({ sequence, epoch: invalidations.epoch() }),

    offer(ticket, key, answer) {
      const { operation } = answer;
      if (!operation || key.length > MAX_KEY_CHARS || answer.body.length > MAX_BODY_CHARS || answer.tags.length > MAX_TAGS) return count('uncacheable');
      // Anything that may have changed the rows since the answer's reads began refuses it.
      const changed =
        !usable() ||
        invalidations.epoch() !== ticket.epoch ||
        clearedAt > ticket.sequence ||
        sequence - ticket.sequence > TRACKED_INVALIDATIONS ||
        answer.tags.some((tag) => (invalidatedAt.get(tag) ?? 0) > ticket.sequence);
      if (changed) return count('refused');
      if (!options.admission.admit(key)) return count('not_admitted');
      entries.set(key, { body: answer.body, headers: answer.headers, operationName: operation.name, cost: answer.cost, tags: answer.tags });
      for (const tag of answer.tags) {
        let keys = byTag.get(tag);
        if (!keys) byTag.set(tag, (keys = new Set()));
        keys.add(key);
      }
      count('stored');
    },
  };
}

/** The key of a request: who may see what, what representation, which exact request. */
export function responseKey(scope: string, accept: string | undefined, body: string): string {
  return `${scope}\n${accept ?? ''}\n${body}`;
}
