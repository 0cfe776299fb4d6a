import { HeaderMap, type ApolloServerPlugin, type BaseContext } from '@apollo/server';
import { RateLimited } from './rateLimits.js';
import { GraphQLError, type DocumentNode, type GraphQLSchema } from 'graphql';
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
  const estimators = [fieldExtensionsEstimator(), simpleEstimator({ defaultComplexity: 1 })];
  // Measured: estimating every request cost more CPU than executing a warm lookup. Apollo hands
  // the same DocumentNode for the same query text, and a cost depends on the variables only
  // through list lengths, numbers and booleans, so it is cached per document and variable shape.
  const cache = new WeakMap<DocumentNode, Map<string, number>>();
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, operationName, contextValue }) {
          const byShape = cache.get(document) ?? new Map<string, number>();
          cache.set(document, byShape);
          const shape = `${operationName ?? ''}|${variableShape(request.variables)}`;
          let complexity = byShape.get(shape);
          if (complexity === undefined) {
            try {
              complexity = getComplexity({ schema, query: document, operationName: operationName ?? undefined, variables: request.variables, estimators });
            } catch (err) {
              // Variables that do not coerce: execution reports them with their proper error.
              if (err instanceof GraphQLError) return;
              throw err;
            }
            if (byShape.size >= MAX_SHAPES_PER_DOCUMENT) byShape.clear();
            byShape.set(shape, complexity);
          }
          metrics.queryComplexity.observe(complexity);
          if (complexity > max) {
            throw new GraphQLError(`Operation is too expensive: estimated cost ${complexity} exceeds ${max}; ask for fewer ids or smaller pages`, {
              extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
            });
          }
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

/**
 * What of the variables can change a cost: list lengths, numbers (page sizes) and booleans
 * (@include/@skip). Strings and ids cannot, so they collapse to their type.
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

function shapeOf(value: unknown): string {
  if (Array.isArray(value)) return `[${value.length}]`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return typeof value;
}
