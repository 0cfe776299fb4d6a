import {
  GraphQLError, Kind, parse, type DocumentNode, type FragmentDefinitionNode, type GraphQLFormattedError, type GraphQLSchema, type OperationDefinitionNode, type SelectionSetNode,
} from 'graphql';
import { compileQuery, isCompiledQuery, type CompiledQuery } from 'graphql-jit';
import { LRUCache } from 'lru-cache';
import { variableShape } from './complexityLimit.js';

/**
 * Operations compiled with graphql-jit, run without Apollo's request pipeline: an operation Apollo
 * answered without errors is compiled once, against the same schema (so the same resolvers and
 * access rules), and later requests of the same text, operation, variable shape and Accept header
 * run it directly. Apollo validated the document and estimated its cost (fixed for a variable
 * shape) on that first answer, and its response headers are replayed.
 *
 * Two kinds: lookups (the response cache's operations), whose runs with any error are answered by
 * Apollo instead, so errors keep Apollo's format exactly; and analytics (invoiceStats,
 * segmentStats), whose execution errors are formatted here as Apollo formats them, since asking
 * Apollo would run the whole aggregate again (twice the time limit for a timeout).
 */
export interface CompiledOperations {
  find(accept: string | undefined, request: LookupRequest): CompiledOperation | undefined;
  /** Remembers an operation Apollo answered with `headers` and no errors, at `cost`. */
  learn(accept: string | undefined, request: LookupRequest, operation: Omit<CompiledOperation, 'run'>): void;
  /** The operation's name if it is a query of analytics fields only; `false` otherwise; memoized. */
  analytics(query: string, operationName: string | undefined): { readonly name: string | null } | false;
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
  /** Execution errors are answered from the compiled run (analytics), not by running Apollo again. */
  readonly answersErrors: boolean;
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

/** The operation a request runs (as graphql-js picks it), or undefined when there is none or the text does not parse. */
export function requestedOperation(query: string, operationName: string | undefined): { document: DocumentNode; operation: OperationDefinitionNode } | undefined {
  let document: DocumentNode;
  try {
    document = parse(query, { noLocation: true });
  } catch {
    return undefined;
  }
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const operation = operationName === undefined ? (operations.length === 1 ? operations[0] : undefined) : operations.find((o) => o.name?.value === operationName);
  return operation ? { document, operation } : undefined;
}

/** The fields an operation may select, by type, with the type each returns (null: a scalar). */
export type SelectableFields = Readonly<Record<string, Readonly<Record<string, string | null>>>>;

/**
 * The operation's name if it is a query that selects only `fields` (and `__typename`), through
 * fragments too; `false` otherwise. Such an answer depends on nothing but what those fields read.
 */
export function operationOfFields(query: string, operationName: string | undefined, fields: SelectableFields): { name: string | null } | false {
  const requested = requestedOperation(query, operationName);
  if (!requested || requested.operation.operation !== 'query') return false;
  const { document, operation } = requested;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
    else if (definition.kind !== Kind.OPERATION_DEFINITION) return false;
  }

  const visiting = new Set<string>();
  const only = (set: SelectionSetNode, type: string): boolean =>
    set.selections.every((selection) => {
      // @include and @skip depend on variables, which are part of the key; anything else (@defer) is not known to be safe.
      if (selection.directives?.some((d) => d.name.value !== 'include' && d.name.value !== 'skip')) return false;
      if (selection.kind === Kind.FIELD) {
        const name = selection.name.value;
        if (name === '__typename') return true;
        const ofType = fields[type]!;
        if (!Object.hasOwn(ofType, name)) return false;
        const returns = ofType[name]!;
        return returns === null ? !selection.selectionSet : Boolean(selection.selectionSet) && only(selection.selectionSet!, returns);
      }
      if (selection.kind === Kind.INLINE_FRAGMENT) {
        const on = selection.typeCondition?.name.value ?? type;
        return on === type && only(selection.selectionSet, type);
      }
      const fragment = fragments.get(selection.name.value);
      if (!fragment || fragment.typeCondition.name.value !== type || visiting.has(fragment.name.value)) return false;
      visiting.add(fragment.name.value);
      const ok = only(fragment.selectionSet, type);
      visiting.delete(fragment.name.value);
      return ok;
    });
  return only(operation.selectionSet, 'Query') ? { name: operation.name?.value ?? null } : false;
}

/** operationOfFields, memoized by query text and operation name (a parse per distinct text). */
export function operationsOfFields(fields: SelectableFields): (query: string, operationName: string | undefined) => { name: string | null } | false {
  const known = new LRUCache<string, { name: string | null } | false>({ max: 1000 });
  return (query, operationName) => {
    const key = `${operationName ?? ''}\n${query}`;
    let operation = known.get(key);
    if (operation === undefined) {
      operation = operationOfFields(query, operationName, fields);
      known.set(key, operation);
    }
    return operation;
  };
}

const MAX_OPERATIONS = 500;
/** Root fields of analytics operations: large flat answers, where graphql-js's per-field work dominated (see README). */
const ANALYTICS_FIELDS = new Set(['invoiceStats', 'segmentStats', '__typename']);

export function createCompiledOperations(schema: GraphQLSchema): CompiledOperations {
  const operations = new LRUCache<string, CompiledOperation>({ max: MAX_OPERATIONS });
  const analyticsOperations = new LRUCache<string, { name: string | null } | false>({ max: MAX_OPERATIONS });
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
    analytics(query, operationName) {
      const key = `${operationName ?? ''}\n${query}`;
      let known = analyticsOperations.get(key);
      if (known === undefined) {
        const found = requestedOperation(query, operationName);
        const rootFields = found?.operation.operation === 'query' && found.operation.selectionSet.selections.every((s) => s.kind === Kind.FIELD && ANALYTICS_FIELDS.has(s.name.value));
        known = rootFields ? { name: found.operation.name?.value ?? null } : false;
        analyticsOperations.set(key, known);
      }
      return known;
    },
  };
}

/**
 * Execution errors of a compiled run as Apollo Server formats them (its normalizeAndFormatErrors:
 * the code defaulted to INTERNAL_SERVER_ERROR, then the server's formatError); undefined when one
 * carries an HTTP status or headers, which only Apollo's response sets.
 */
export function formatLikeApollo(
  errors: readonly GraphQLError[],
  formatError: (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError,
): GraphQLFormattedError[] | undefined {
  if (errors.some((e) => e.extensions?.http !== undefined)) return undefined;
  return errors.map((error) => {
    const extensions = { ...error.extensions, code: error.extensions?.code ?? 'INTERNAL_SERVER_ERROR' };
    try {
      return formatError({ ...error.toJSON(), extensions }, error);
    } catch {
      return { message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR' } };
    }
  });
}
