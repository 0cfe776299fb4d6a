import { LRUCache } from 'lru-cache';
import { Kind, parse, type DocumentNode, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql';
import type { Metrics } from '../core/metrics.js';
import { PublicError } from '../core/errors.js';
import type { Admission } from '../sources/cache/admission.js';
import type { InvalidationChannel } from '../sources/cache/invalidationChannel.js';
import { cacheKeys } from '../sources/cache/readThrough.js';
import type { Context } from '../resolvers/context.js';
import { accessScope, type Viewer } from '../resolvers/viewer.js';
import { lookupRequest, type CompiledOperations } from './compiledOperations.js';
import type { ResponseHooks } from './http.js';
import type { OperationRecorder } from './metricsPlugin.js';

/**
 * Whole responses of repeated lookups, answered before Apollo runs (measured: Apollo's request
 * pipeline, graphql-js and type-graphql were about 40% of a warm lookup's CPU), as GraphQL Yoga's
 * response cache does with entity tags:
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
  qualifies(query: string, operationName: string | undefined): { name: string | null } | false;
  /** Stores an answer computed since `ticket`, if its operation qualifies and none of its rows changed meanwhile. */
  offer(ticket: Ticket, key: string, answer: Answer): void;
}

export interface Answer {
  readonly query: string;
  readonly operationName: string | undefined;
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
const CACHEABLE_FIELDS: Readonly<Record<string, Readonly<Record<string, string | null>>>> = {
  Query: { invoice: 'Invoice', invoices: 'Invoice', customer: 'Customer', customers: 'Customer' },
  Invoice: { id: null, issueDate: null, amountUsd: null, issuerId: null, receiverId: null, issuer: 'Customer', receiver: 'Customer' },
  Customer: { id: null, name: null },
};

/**
 * Requests and answers larger than this are not kept: a cache of small hot lookups, not of bulk
 * reads (and a padded request body cannot fill memory with keys).
 */
const MAX_REQUEST_CHARS = 4 * 1024;
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
  // Which operations qualify, by query text and operation name (a parse per distinct text).
  const operations = new LRUCache<string, { name: string | null } | false>({ max: 1000 });
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
  const qualifies = (query: string, operationName: string | undefined) => {
    const operationKey = `${operationName ?? ''}\n${query}`;
    let operation = operations.get(operationKey);
    if (operation === undefined) {
      operation = cacheableOperation(query, operationName);
      operations.set(operationKey, operation);
    }
    return operation;
  };
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
      if (key.length > MAX_REQUEST_CHARS + 200 || answer.body.length > MAX_BODY_CHARS || answer.tags.length > MAX_TAGS) return count('uncacheable');
      const operation = qualifies(answer.query, answer.operationName);
      if (!operation) return count('uncacheable');
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

/** The operation's name if it is a query made only of cacheable fields; `false` otherwise. */
export function cacheableOperation(query: string, operationName: string | undefined): { name: string | null } | false {
  let document: DocumentNode;
  try {
    document = parse(query, { noLocation: true });
  } catch {
    return false;
  }
  const fragments = new Map<string, FragmentDefinitionNode>();
  const operations = [];
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
    else if (definition.kind === Kind.OPERATION_DEFINITION) operations.push(definition);
    else return false;
  }
  const operation = operationName === undefined ? (operations.length === 1 ? operations[0] : undefined) : operations.find((o) => o.name?.value === operationName);
  if (!operation || operation.operation !== 'query') return false;

  const visiting = new Set<string>();
  const onlyCacheable = (set: SelectionSetNode, type: string): boolean =>
    set.selections.every((selection) => {
      // @include and @skip depend on variables, which are part of the key; anything else (@defer) is not known to be safe.
      if (selection.directives?.some((d) => d.name.value !== 'include' && d.name.value !== 'skip')) return false;
      if (selection.kind === Kind.FIELD) {
        const name = selection.name.value;
        if (name === '__typename') return true;
        const fields = CACHEABLE_FIELDS[type]!;
        if (!Object.hasOwn(fields, name)) return false;
        const returns = fields[name]!;
        return returns === null ? !selection.selectionSet : Boolean(selection.selectionSet) && onlyCacheable(selection.selectionSet!, returns);
      }
      if (selection.kind === Kind.INLINE_FRAGMENT) {
        const on = selection.typeCondition?.name.value ?? type;
        return on === type && onlyCacheable(selection.selectionSet, type);
      }
      const fragment = fragments.get(selection.name.value);
      if (!fragment || fragment.typeCondition.name.value !== type || visiting.has(fragment.name.value)) return false;
      visiting.add(fragment.name.value);
      const ok = onlyCacheable(fragment.selectionSet, type);
      visiting.delete(fragment.name.value);
      return ok;
    });
  return onlyCacheable(operation.selectionSet, 'Query') ? { name: operation.name?.value ?? null } : false;
}

export interface ResponseCacheDependencies {
  readonly cache: ResponseCache;
  /** The qualifying operations, compiled once Apollo has answered them. */
  readonly compiled: CompiledOperations;
  /** Charges an operation's cost to the viewer's budget; a PublicError when it is spent. */
  readonly spend: (viewer: Viewer, cost: number) => Promise<void>;
  readonly record: OperationRecorder;
  readonly metrics: Metrics;
}

/**
 * The lean path of lookups as the HTTP handler consults it: a stored answer (the response
 * cache), else a compiled run of an operation Apollo answered before, else Apollo. Either is
 * charged its cost and recorded like an answer of Apollo's; a viewer whose budget refuses it, and
 * any run with errors, is left to Apollo, which answers with the exact error it always gives.
 */
export function responseCacheHooks({ cache, compiled, spend, record, metrics }: ResponseCacheDependencies): ResponseHooks<Context, Viewer> {
  const keyOf = (viewer: Viewer, accept: string | undefined, body: string) => responseKey(accessScope(viewer), accept, body);
  const charge = async (viewer: Viewer, cost: number): Promise<boolean> => {
    try {
      await spend(viewer, cost);
      return true;
    } catch (err) {
      if (err instanceof PublicError) return false;
      throw err;
    }
  };
  return {
    maxRequestBytes: MAX_REQUEST_CHARS,
    async answer(viewer, accept, body) {
      const started = performance.now();
      const entry = cache.get(keyOf(viewer, accept, body));
      if (!entry || !(await charge(viewer, entry.cost))) return undefined;
      cache.served();
      metrics.queryComplexity.observe(entry.cost);
      record(entry.operationName, false, started);
      return entry;
    },
    async execute(viewer, accept, body, context) {
      const request = lookupRequest(body);
      const operation = request && compiled.find(accept, request);
      if (!operation) return undefined;
      const started = performance.now();
      const result = await operation.run(undefined, context, request!.variables ?? {});
      if (result.errors?.length || !(await charge(viewer, operation.cost))) return undefined;
      context.operation.cost = operation.cost;
      metrics.compiledRuns.inc();
      metrics.queryComplexity.observe(operation.cost);
      record(operation.operationName, false, started);
      // As Apollo writes an answer without errors (runHttpQuery's prettyJSONStringify).
      return { headers: operation.headers, body: `${JSON.stringify({ data: result.data })}\n` };
    },
    track(viewer, accept, body, parsed, context) {
      const ticket = cache.begin();
      return (response, { fromApollo }) => {
        const request = lookupRequest(parsed);
        const cost = context.operation.cost;
        // An answer with errors is never kept; an alias named "errors" only costs a miss.
        if (!request || cost === undefined || response.body.includes('"errors":')) return;
        const operation = cache.qualifies(request.query, request.operationName);
        if (operation && fromApollo) compiled.learn(accept, request, { operationName: operation.name, cost, headers: response.headers });
        const { invoices, customers } = context.loaders.idsRead;
        const tags = [...[...invoices].map(cacheKeys.invoice), ...[...customers].map(cacheKeys.customer)];
        cache.offer(ticket, keyOf(viewer, accept, body), { query: request.query, operationName: request.operationName, ...response, cost, tags });
      };
    },
  };
}
