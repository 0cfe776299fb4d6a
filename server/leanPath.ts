import type { Metrics } from '../core/metrics.js';
import { cacheKeys } from '../sources/cache/readThrough.js';
import type { Context } from '../resolvers/context.js';
import type { StatsEngine } from '../sources/lake/statsEngine.js';
import { accessScope, type Viewer } from '../resolvers/viewer.js';
import type { GraphQLFormattedError } from 'graphql';
import { formatLikeApollo, lookupRequest, type CompiledOperations } from './compiledOperations.js';
import type { LeanPath, StoredResponse } from './http.js';
import type { OperationRecorder } from './metricsPlugin.js';
import { replayedBody, type KeptAnalytics } from './keptAnalytics.js';
import { RateLimited } from './rateLimits.js';
import { MAX_REQUEST_CHARS, responseKey, type ResponseCache } from './responseCache.js';

export interface LeanPathDependencies {
  readonly cache: ResponseCache;
  /** The qualifying operations, compiled once Apollo has answered them. */
  readonly compiled: CompiledOperations;
  /** Charges an operation's cost to the viewer's budget; throws RateLimited when it is spent. */
  readonly spend: (viewer: Viewer, cost: number) => Promise<void>;
  readonly record: OperationRecorder;
  readonly metrics: Metrics;
  /** Apollo's formatError: analytics runs format their execution errors with it, as Apollo would. */
  readonly formatError: (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError;
  /** Responses whose answers can be proven exact again, and the engine that proves them. */
  readonly kept: KeptAnalytics;
  readonly analytics: Pick<StatsEngine, 'keptAgain'>;
}

/**
 * The lean path as the HTTP handler takes it: a stored answer (the response cache, lookups only),
 * else a kept analytics response replayed once proven still exact, else a compiled run of an
 * operation Apollo answered before, else Apollo. The cost is charged once, before anything runs
 * (a replay's proof included), and a spent budget is refused (RateLimited: 429 with Retry-After)
 * as Apollo refuses it; answers are recorded like Apollo's. A lookup's compiled run with errors
 * is left to Apollo, which gives the exact error it always gives and does not charge again; an
 * analytics run's execution errors are formatted as Apollo formats them (compiledOperations.ts).
 */
export function createLeanPath({ cache, compiled, spend, record, metrics, formatError, kept, analytics }: LeanPathDependencies): LeanPath<Context, Viewer> {
  const keyOf = (viewer: Viewer, accept: string | undefined, body: string) => responseKey(accessScope(viewer), accept, body);
  /** Charges an operation's cost; a refusal is recorded as a failed operation, as Apollo records it, and thrown. */
  const charge = async (viewer: Viewer, cost: number, operationName: string | null, startedMs: number): Promise<void> => {
    try {
      await spend(viewer, cost);
    } catch (err) {
      if (err instanceof RateLimited) record(operationName, true, startedMs);
      throw err;
    }
  };
  const answered = (cost: number, operationName: string | null, startedMs: number, failed = false) => {
    metrics.queryComplexity.observe(cost);
    record(operationName, failed, startedMs);
  };
  /**
   * A kept analytics response at a new moment, if its kept answer is still exact. Charged first,
   * as a compiled run is charged before it runs. A stale one, or a proof that failed (the query
   * then meets the failure itself, within its own time limit), leaves the request to the compiled
   * run or to Apollo, which do not charge it again.
   */
  const replayed = async (viewer: Viewer, key: string, context: Context, started: number): Promise<StoredResponse | undefined> => {
    const response = kept.get(key);
    if (!response) return undefined;
    await charge(viewer, response.cost, response.operationName, started);
    context.operation.cost = response.cost;
    const asOf = await analytics.keptAgain(response.basis).catch(() => undefined);
    if (asOf === undefined) {
      kept.forget(key);
      return undefined;
    }
    answered(response.cost, response.operationName, started);
    return { headers: response.headers, body: replayedBody(response, asOf) };
  };
  return {
    maxRequestBytes: MAX_REQUEST_CHARS,

    async stored(viewer, accept, body) {
      const started = performance.now();
      const entry = cache.get(keyOf(viewer, accept, body));
      if (!entry) return undefined;
      await charge(viewer, entry.cost, entry.operationName, started);
      cache.served();
      answered(entry.cost, entry.operationName, started);
      return entry;
    },

    begin(viewer, accept, body, parsed, context) {
      const ticket = cache.begin();
      const request = lookupRequest(parsed);
      const key = keyOf(viewer, accept, body);
      return {
        async run() {
          const started = performance.now();
          const replay = request && (await replayed(viewer, key, context, started));
          if (replay) return replay;
          const operation = request && compiled.find(accept, request);
          if (!operation) return undefined;
          if (context.operation.cost === undefined) {
            await charge(viewer, operation.cost, operation.operationName, started);
            context.operation.cost = operation.cost;
          }
          const result = await operation.run(undefined, context, request!.variables ?? {});
          if (result.errors?.length) {
            // Without data the variables did not coerce: nothing ran, and Apollo's answer is a 400.
            const errors = operation.answersErrors && result.data !== undefined ? formatLikeApollo(result.errors, formatError) : undefined;
            if (!errors) return undefined;
            metrics.compiledRuns.inc();
            answered(operation.cost, operation.operationName, started, true);
            // As Apollo writes it (runHttpQuery's orderExecutionResultFields and prettyJSONStringify).
            return { headers: operation.headers, body: `${JSON.stringify({ errors, data: result.data })}\n` };
          }
          metrics.compiledRuns.inc();
          answered(operation.cost, operation.operationName, started);
          // As Apollo writes an answer without errors (runHttpQuery's prettyJSONStringify).
          return { headers: operation.headers, body: `${JSON.stringify({ data: result.data })}\n` };
        },
        done(response, { fromApollo }) {
          const cost = context.operation.cost;
          const { body } = response;
          // Bytes are a replay, kept already. An answer with errors is never kept; an alias named "errors" only costs a miss.
          if (!request || cost === undefined || typeof body !== 'string' || body.includes('"errors":')) return;
          const operation = cache.qualifies(request.query, request.operationName);
          if (fromApollo) {
            if (operation) compiled.learn(accept, request, { operationName: operation.name, cost, headers: response.headers, answersErrors: false });
            const analytics = !operation && compiled.analytics(request.query, request.operationName);
            if (analytics) compiled.learn(accept, request, { operationName: analytics.name, cost, headers: response.headers, answersErrors: true });
          }
          const { invoices, customers } = context.loaders.idsRead;
          const tags = [...[...invoices].map(cacheKeys.invoice), ...[...customers].map(cacheKeys.customer)];
          cache.offer(ticket, key, { operation, headers: response.headers, body, cost, tags });
          kept.offer(key, request, { headers: response.headers, body, cost, stats: context.operation.stats });
        },
      };
    },
  };
}
