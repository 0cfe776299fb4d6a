import { randomUUID } from 'node:crypto';
import type { GraphQLFormattedError } from 'graphql';
import { unwrapResolverError } from '@apollo/server/errors';
import type { Logger } from 'pino';
import { PublicError } from '../core/errors.js';

/**
 * Codes that Apollo Server and graphql-js assign to their own, already client-safe errors
 * (syntax, validation, variable coercion, bad HTTP requests).
 */
const FRAMEWORK_CODES = new Set([
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_USER_INPUT',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

/**
 * Apollo's `formatError`: public errors pass through with their code, framework errors keep
 * theirs, anything else becomes INTERNAL_SERVER_ERROR with an `errorId` that is logged beside the
 * original error, so no SQL, stack or connection string reaches a client.
 */
export function createErrorFormatter(logger: Logger, exposeErrors: boolean) {
  return function formatGatewayError(formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError {
    const original = unwrapResolverError(error);
    // A scalar's parse error arrives wrapped by validation (GRAPHQL_VALIDATION_FAILED) or variable
    // coercion; the client should still see the public code the scalar chose.
    const cause = findPublicError(original);
    if (cause) {
      return { message: formatted.message, locations: formatted.locations, path: formatted.path, extensions: { code: cause.code } };
    }
    const code = formatted.extensions?.code;
    if (typeof code === 'string' && FRAMEWORK_CODES.has(code) && !isUnexpected(original)) {
      return formatted;
    }
    const errorId = randomUUID();
    logger.error({ errorId, err: original, path: formatted.path }, 'unexpected error');
    const extensions: Record<string, unknown> = { code: 'INTERNAL_SERVER_ERROR', errorId };
    if (exposeErrors && original instanceof Error) {
      extensions.originalMessage = original.message;
      extensions.stacktrace = original.stack?.split('\n');
    }
    return { message: `Unexpected error (id ${errorId})`, locations: formatted.locations, path: formatted.path, extensions };
  };
}

function findPublicError(error: unknown): PublicError | undefined {
  for (let e = error, depth = 0; e && depth < 5; depth++) {
    if (e instanceof PublicError) return e;
    e = (e as { originalError?: unknown }).originalError;
  }
  return undefined;
}

/** A framework code on an error that came from our own code (not a GraphQLError) is not trusted. */
function isUnexpected(error: unknown): boolean {
  return error instanceof Error && error.name !== 'GraphQLError' && !('extensions' in error);
}
