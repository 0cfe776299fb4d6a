import { parse, type GraphQLSchema } from 'graphql';
import { compileQuery, isCompiledQuery, type CompiledQuery } from 'graphql-jit';
import { LRUCache } from 'lru-cache';
import { variableShape } from './complexityLimit.js';

/**
 * Lookups compiled with graphql-jit, run without Apollo's request pipeline: an operation Apollo
 * answered without errors is compiled once, against the same schema (so the same resolvers and
 * access rules), and later requests of the same text, operation, variable shape and Accept header
 * run it directly. Apollo validated the document and estimated its cost (fixed for a variable
 * shape) on that first answer, and its response headers are replayed; anything that goes wrong
 * in a compiled run is answered by Apollo instead, so errors keep Apollo's format exactly.
 */
export interface CompiledOperations {
  find(accept: string | undefined, request: LookupRequest): CompiledOperation | undefined;
  /** Remembers an operation Apollo answered with `headers` and no errors, at `cost`. */
  learn(accept: string | undefined, request: LookupRequest, operation: Omit<CompiledOperation, 'run'>): void;
}

export interface LookupRequest {
  readonly query: string;
  readonly operationName?: string;
  readonly variables?: Record<string, unknown>;
}

export interface CompiledOperation {
  readonly run: CompiledQuery['query'];
  readonly operationName: string | null;
  readonly cost: number;
  readonly headers: readonly (readonly [string, string])[];
}

/** A request body as the compiled path takes it, or undefined for anything else (Apollo's to judge). */
export function lookupRequest(body: unknown): LookupRequest | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { query, operationName, variables } = body as Record<string, unknown>;
  if (typeof query !== 'string') return undefined;
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') return undefined;
  if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) return undefined;
  return { query, operationName: operationName ?? undefined, variables: (variables ?? undefined) as Record<string, unknown> | undefined };
}

const MAX_OPERATIONS = 500;

export function createCompiledOperations(schema: GraphQLSchema): CompiledOperations {
  const operations = new LRUCache<string, CompiledOperation>({ max: MAX_OPERATIONS });
  const keyOf = (accept: string | undefined, request: LookupRequest) =>
    `${accept ?? ''}\n${request.operationName ?? ''}\n${variableShape(request.variables)}\n${request.query}`;
  return {
    find: (accept, request) => operations.get(keyOf(accept, request)),
    learn(accept, request, operation) {
      const key = keyOf(accept, request);
      if (operations.has(key)) return;
      const compiled = compileQuery(schema, parse(request.query), request.operationName);
      if (!isCompiledQuery(compiled)) return;
      operations.set(key, { ...operation, run: (root, context, variables) => compiled.query(root, context, variables) });
    },
  };
}
