import type { ApolloServerPlugin } from '@apollo/server';
import { GraphQLError, type GraphQLSchema } from 'graphql';
import { createRequire } from 'node:module';
import type { Metrics } from './metrics.js';

// Its ESM build imports graphql's .mjs files: a second copy of graphql beside the CommonJS one
// the schema is built with, and every call fails with "from another module or realm".
const { fieldExtensionsEstimator, getComplexity, simpleEstimator } = createRequire(import.meta.url)(
  'graphql-query-complexity',
) as typeof import('graphql-query-complexity');

/**
 * Refuses, before execution, an operation whose estimated cost (schema/complexity.ts) exceeds
 * `max`: bounded lists alone still multiply when nested.
 */
export function complexityLimitPlugin(schema: GraphQLSchema, max: number, metrics: Metrics): ApolloServerPlugin {
  const estimators = [fieldExtensionsEstimator(), simpleEstimator({ defaultComplexity: 1 })];
  return {
    async requestDidStart() {
      return {
        async didResolveOperation({ request, document, operationName }) {
          let complexity: number;
          try {
            complexity = getComplexity({ schema, query: document, operationName: operationName ?? undefined, variables: request.variables, estimators });
          } catch (err) {
            // Variables that do not coerce: execution reports them with their proper error.
            if (err instanceof GraphQLError) return;
            throw err;
          }
          metrics.queryComplexity.observe(complexity);
          if (complexity > max) {
            throw new GraphQLError(`Operation is too expensive: estimated cost ${complexity} exceeds ${max}; ask for fewer ids or smaller pages`, {
              extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } },
            });
          }
        },
      };
    },
  };
}
