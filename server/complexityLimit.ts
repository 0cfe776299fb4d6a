import { HeaderMap, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { RateLimited } from './rateLimits.js';
import { GraphQLError, Kind, getOperationAST, getVariableValues, type DocumentNode, type FragmentDefinitionNode, type GraphQLSchema, type OperationDefinitionNode } from 'graphql';
import { createRequire } from 'node:module';
import type { Metrics } from '../core/metrics.js';

// Its ESM build imports graphql's .mjs files: a second copy of graphql beside the CommonJS one
// the schema is built with, and every call fails with "from another module or realm".
const { fieldExtensionsEstimator, getComplexity, simpleEstimator } = createRequire(import.meta.url)(
  'graphql-query-complexity',
) as typeof import('graphql-query-complexity');

/**
 * Refuses, before execution, an operation whose estimated cost (schema/complexity.ts) exceeds
 * `max`: bounded lists alone still multiply when nested. The cost is then spent from the client's
 * budget (`spend`), which may refuse it with LIMIT_EXCEEDED (HTTP 429 and Retry-After).
 */
export function complexityLimitPlugin<TContext extends BaseContext>(
  schema: GraphQLSchema,
  max: number,
  metrics: Metrics,
  spend: (context: TContext, cost: number) => Promise<void>,
): ApolloServerPlugin<TContext> {
  // Measured: estimating every request cost more CPU than executing a warm lookup. Apollo hands
  // the same DocumentNode for the same query text, and a cost depends on the variables only
  // through what costShape keeps of them, so it is cached per document and that shape.
  const cache = new WeakMap<DocumentNode, Map<string, number>>();
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, operation, operationName, contextValue }) {
          const byShape = cache.get(document) ?? new Map<string, number>();
          cache.set(document, byShape);
          const shape = operation && costShape(operation, request.variables);
          let complexity = shape === undefined ? undefined : byShape.get(shape);
          if (complexity === undefined) {
            const estimate = estimateCost(schema, document, operationName, request.variables);
            // Variables that do not coerce: execution reports them with their proper error.
            if (estimate === undefined) return;
            complexity = estimate;
            if (byShape.size >= MAX_SHAPES_PER_DOCUMENT) byShape.clear();
            if (shape !== undefined) byShape.set(shape, complexity);
          }
          metrics.queryComplexity.observe(complexity);
          checkCost(complexity, max);
          try {
            await spend(contextValue, complexity);
          } catch (err) {
            if (!(err instanceof RateLimited)) throw err;
            const headers = new HeaderMap(Object.entries(err.headers()));
            throw new GraphQLError(err.message, { originalError: err, extensions: { code: err.code, http: { status: 429, headers } } });
          }
        },
      };
    },
  };
}

const MAX_SHAPES_PER_DOCUMENT = 256;
const MAX_SHAPE_CHARS = 1024;

/**
 * What a cached cost of `document` is kept under: the operation and the shape of the variables
 * it declares (others change nothing, and must not make new shapes). Undefined past
 * MAX_SHAPE_CHARS: such a cost is estimated each time, not kept, or a client could fill the
 * per-document cache with shapes of megabyte variables.
 */
export function costShape(operation: OperationDefinitionNode, variables: Record<string, unknown> | undefined): string | undefined {
  const declared = variables && Object.fromEntries((operation.variableDefinitions ?? []).filter((d) => d.variable.name.value in variables).map((d) => [d.variable.name.value, variables[d.variable.name.value]]));
  const shape = `${operation.name?.value ?? ''}|${variableShape(declared)}`;
  return shape.length <= MAX_SHAPE_CHARS ? shape : undefined;
}

const estimators = [fieldExtensionsEstimator(), simpleEstimator({ defaultComplexity: 1 })];

/**
 * An operation's estimated cost (schema/complexity.ts), the same over HTTP and WebSocket;
 * undefined when its variables do not coerce (execution reports those). An operation whose cost
 * cannot be estimated (the estimator stops counting at 10,000 selections, which a few fragments
 * spread twice each reach) is refused: it would be neither checked nor charged.
 */
export function estimateCost(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | undefined): number | undefined {
  try {
    // The document's fragments: analyticsCost looks through them for what a page's rows select.
    const fragments = new Map(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
    return getComplexity({ schema, query: document, operationName: operationName ?? undefined, variables, estimators, context: { fragments } });
  } catch (err) {
    if (!(err instanceof GraphQLError)) throw err;
    if (!variablesCoerce(schema, document, operationName, variables)) return undefined;
    throw new GraphQLError(`Operation is too expensive: its cost cannot be estimated (${err.message})`, {
      extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
    });
  }
}

/** Refuses a cost past `max` (BAD_USER_INPUT, HTTP 400). */
export function checkCost(cost: number, max: number): void {
  if (cost > max) {
    throw new GraphQLError(`Operation is too expensive: estimated cost ${cost} exceeds ${max}; ask for fewer ids or smaller pages`, {
      extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
    });
  }
}

function variablesCoerce(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: Record<string, unknown> | undefined): boolean {
  const operation = getOperationAST(document, operationName);
  if (!operation) return false;
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], variables ?? {});
  return coerced.errors === undefined;
}

/**
 * What of the variables can change a cost: list lengths, numbers (page sizes), booleans
 * (@include/@skip) and enum values. Other strings and ids cannot, so they collapse to their type.
 */
export function variableShape(variables: Record<string, unknown> | undefined): string {
  if (!variables) return '';
  let shape = '';
  for (const key of Object.keys(variables).sort()) {
    const value = variables[key];
    shape += `${key}=${shapeOf(value)};`;
  }
  return shape;
}

/**
 * A value as GraphQL spells an enum's (granularity TOTAL or MONTH can change a cost 120 times);
 * ids and names are not, and stay out of the shape.
 */
const ENUM_LIKE = /^[A-Z][A-Z0-9_]{0,63}$/;

function shapeOf(value: unknown): string {
  if (Array.isArray(value)) {
    if (value.length <= 32 && value.every((v) => typeof v === 'string' && ENUM_LIKE.test(v))) return JSON.stringify(value);
    // A list of input objects (or lists) by each one's shape; of ids or numbers, by its length.
    return value.some((v) => typeof v === 'object' && v !== null) ? `[${value.map(shapeOf).join(',')}]` : `[${value.length}]`;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  // An input object's fields by the same rules: its ids collapse, its list lengths count.
  if (typeof value === 'object' && value !== null) {
    const fields = value as Record<string, unknown>;
    return `{${Object.keys(fields).sort().map((key) => `${key}:${shapeOf(fields[key])}`).join(',')}}`;
  }
  if (typeof value === 'string' && ENUM_LIKE.test(value)) return JSON.stringify(value);
  return typeof value;
}
