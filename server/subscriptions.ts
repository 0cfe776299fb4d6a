import type http from 'node:http';
import {
  getOperationAST,
  GraphQLError,
  parse,
  specifiedRules,
  validate,
  ValuesOfCorrectTypeRule,
  type DocumentNode,
  type GraphQLFormattedError,
  type GraphQLSchema,
} from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from 'pino';
import { errorMessage, PublicError } from '../core/errors.js';
import { accessScope, type Viewer } from '../resolvers/viewer.js';
import { createSharedSubscribe } from './sharedSubscribe.js';
import { refuseRoundedNumbers } from './roundedNumbers.js';
import { checkCost, estimateCost } from './complexityLimit.js';

export interface SubscriptionServerOptions<TContext> {
  readonly httpServer: http.Server;
  readonly schema: GraphQLSchema;
  /**
   * The viewer of a connection, from the `authorization` of its connection_init payload (or of
   * the upgrade request's headers). Throws a PublicError to refuse the connection.
   */
  readonly connect: (authorization: string | undefined, address: string) => Promise<Viewer>;
  /** Milliseconds until the viewer's token expires; the connection is closed then (4401). */
  readonly untilExpiry: (viewer: Viewer) => number | undefined;
  /**
   * A token's connection is authenticated again this often (AUTH_KEYS_MAX_AGE_SECONDS), and
   * closed (4401) once its token no longer passes (its key removed from the set).
   */
  readonly recheckEveryMs: number;
  /** Counts a new subscription against the client's request budget; throws to refuse it. */
  readonly admit: (viewer: Viewer) => Promise<void>;
  /** Spends an operation's estimated cost from the client's budget; throws to refuse it. */
  readonly spend: (viewer: Viewer, cost: number) => Promise<void>;
  /** MAX_QUERY_COMPLEXITY: the same limit as over HTTP. */
  readonly maxCost: number;
  /** With trusted documents: the query to run for a subscribe message's query or hash. */
  readonly trustedQuery?: (query: unknown, extensions: unknown) => string;
  /** A context per operation (a subscription lives long: its loaders must not memoize). */
  readonly context: (viewer: Viewer) => TContext;
  /** The same formatter as HTTP responses: public codes pass, anything else is masked. */
  readonly formatError: (formatted: GraphQLFormattedError, error: unknown) => GraphQLFormattedError;
  readonly maxPerConnection: number;
  /** The largest message a client may send (MAX_REQUEST_BYTES, as an HTTP body). */
  readonly maxMessageBytes: number;
  readonly logger: Logger;
}

/** graphql-ws pings every this often; a peer that does not answer within as long is dropped. */
const KEEP_ALIVE_MS = 12_000;
/** Distinct subscription documents kept parsed and validated. */
const MAX_CHECKED_DOCUMENTS = 500;

/**
 * graphql-ws (graphql-transport-ws) on the gateway's own HTTP server and /graphql path, so Apollo
 * Sandbox and Apollo Client subscribe with their usual settings. The socket is not Apollo's:
 * operations here skip Apollo's plugins, so limits and error masking are applied here too.
 */
export function attachSubscriptions<TContext extends object>(options: SubscriptionServerOptions<TContext>): { dispose(): Promise<void> } {
  // A message as large as an HTTP body at most (ws allows 100 MiB by default).
  const wss = new WebSocketServer({ server: options.httpServer, path: '/graphql', maxPayload: options.maxMessageBytes });
  wss.on('connection', (socket) => writeInBatches(socket));
  const format = (errors: readonly GraphQLError[]) => errors.map((e) => options.formatError(formatForSocket(e), e));
  const documents = new Map<string, DocumentNode>();
  const cleanup = useServer<Record<string, unknown> | undefined, { viewer?: Viewer }>(
    {
      schema: options.schema,
      context: (ctx) => options.context(ctx.extra.viewer!) as Record<string, unknown>,
      // Subscribers share an event's execution only when they may see the same things.
      subscribe: createSharedSubscribe((args) => accessScope((args.contextValue as { viewer: Viewer }).viewer)),
      onConnect: async (ctx) => {
        const params = ctx.connectionParams as { authorization?: unknown; Authorization?: unknown; headers?: Record<string, unknown> } | undefined;
        const given = params?.authorization ?? params?.Authorization ?? params?.headers?.authorization ?? params?.headers?.Authorization ?? ctx.extra.request.headers.authorization;
        const { socket } = ctx.extra;
        try {
          const address = ctx.extra.request.socket.remoteAddress ?? 'unknown';
          const authorization = typeof given === 'string' ? given : undefined;
          const viewer = await options.connect(authorization, address);
          // The connection's viewer, set before any subscribe is accepted.
          ctx.extra.viewer = viewer;
          const ms = options.untilExpiry(viewer);
          if (ms !== undefined) {
            // setTimeout's limit is about 24.8 days; a token living longer is closed then, early.
            const timer = setTimeout(() => socket.close(4401, 'token expired'), Math.min(ms, 2 ** 31 - 1));
            socket.once('close', () => clearTimeout(timer));
          }
          // A viewer with a token (expiresAt set; none with AUTH_MODE=off).
          if (viewer.expiresAt !== null) {
            const recheck = setInterval(() => {
              // An identity provider that is down closes nothing: only a token refused outright does.
              options.connect(authorization, address).catch((err: unknown) => {
                if (err instanceof PublicError && err.code === 'UNAUTHENTICATED') socket.close(4401, err.message);
              });
            }, options.recheckEveryMs);
            socket.once('close', () => clearInterval(recheck));
          }
          return true;
        } catch (err) {
          // The close code says why: 4401 for a token (RFC 6455 private range, as graphql-ws's
          // own 4401 Unauthorized), 1013 "try again later" when the identity provider is down.
          const code = err instanceof PublicError && err.code === 'UNAUTHENTICATED' ? 4401 : err instanceof PublicError && err.code === 'SERVICE_UNAVAILABLE' ? 1013 : 4500;
          socket.close(code, err instanceof PublicError ? err.message : 'unexpected error');
          if (code === 4500) options.logger.error({ err: errorMessage(err) }, 'subscription connection failed');
          return false;
        }
      },
      onSubscribe: async (ctx, _id, payload) => {
        // ctx.subscriptions already holds the new id: the count is exact, including this one.
        if (Object.keys(ctx.subscriptions).length > options.maxPerConnection) {
          return [limitError(`a connection may hold at most ${options.maxPerConnection} subscriptions; complete one first`)];
        }
        let query = payload.query;
        try {
          await options.admit(ctx.extra.viewer!);
          if (options.trustedQuery) query = options.trustedQuery(payload.query || undefined, payload.extensions);
        } catch (err) {
          if (err instanceof PublicError) return [refusal(err)];
          throw err;
        }
        // Parsed and validated here, once per distinct query (an argument of the wrong value is
        // BAD_USER_INPUT, as over HTTP; anything else invalid GRAPHQL_VALIDATION_FAILED); the
        // document returned is the one executed, so graphql-ws does not parse or validate again.
        const checked = checkedDocument(query);
        if (Array.isArray(checked)) return checked;
        // Queries and mutations go over HTTP, where Apollo's settings and plugins apply (no
        // introspection when it is off, the response cache, metrics); here they ran past them.
        if (getOperationAST(checked, payload.operationName)?.operation !== 'subscription') {
          return [new GraphQLError('The WebSocket carries subscriptions only; send queries and mutations over HTTP (POST /graphql)', { extensions: { code: 'BAD_REQUEST' } })];
        }
        const rounded = refuseRoundedNumbers(payload.variables);
        if (rounded) return [refusal(rounded)];
        // The same cost limit and budget as over HTTP: each event runs the whole selection.
        try {
          const cost = estimateCost(options.schema, checked, payload.operationName, payload.variables ?? undefined);
          if (cost !== undefined) {
            checkCost(cost, options.maxCost);
            await options.spend(ctx.extra.viewer!, cost);
          }
        } catch (err) {
          if (err instanceof GraphQLError) return [err];
          if (err instanceof PublicError) return [refusal(err)];
          throw err;
        }
        return { schema: options.schema, document: checked, operationName: payload.operationName, variableValues: payload.variables };
      },
      onNext: (_ctx, _id, _payload, _args, result) => (result.errors ? { ...result, errors: format(result.errors) as GraphQLError[] } : result),
      onError: (_ctx, _id, _payload, errors) => format(errors) as GraphQLError[],
    },
    wss,
    KEEP_ALIVE_MS,
  );
  wss.on('error', (err) => options.logger.warn({ err }, 'WebSocket server error'));

  function checkedDocument(query: string): DocumentNode | GraphQLError[] {
    const known = documents.get(query);
    if (known) return known;
    let document: DocumentNode;
    try {
      document = parse(query);
    } catch (err) {
      return [withCode(err as GraphQLError, 'GRAPHQL_PARSE_FAILED')];
    }
    const badValues = validate(options.schema, document, [ValuesOfCorrectTypeRule]);
    if (badValues.length > 0) return badValues.map((e) => withCode(e, 'BAD_USER_INPUT'));
    const invalid = validate(options.schema, document, specifiedRules.filter((rule) => rule !== ValuesOfCorrectTypeRule));
    if (invalid.length > 0) return invalid.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED'));
    // Clients send a handful of distinct subscription documents; the same object for the same
    // text also lets shared execution key on it without printing it again.
    if (documents.size >= MAX_CHECKED_DOCUMENTS) documents.delete(documents.keys().next().value!);
    documents.set(query, document);
    return document;
  }
  return {
    // Closes every socket with 1001 (Going away); the HTTP drain destroys those that do not answer.
    dispose: () => cleanup.dispose() as Promise<void>,
  };
}

/**
 * Request-level errors (no path) that graphql-js raises while coercing variables or resolving
 * the operation are the client's: BAD_USER_INPUT. Field errors keep their original error, so the
 * formatter can pass public ones and mask the rest.
 */
function formatForSocket(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  const fromGraphQL = error.originalError === undefined || error.originalError instanceof GraphQLError;
  if (formatted.extensions?.code || error.path || !fromGraphQL) return formatted;
  return { ...formatted, extensions: { ...formatted.extensions, code: 'BAD_USER_INPUT' } };
}

function withCode(error: GraphQLError, code: string): GraphQLError {
  return new GraphQLError(error.message, { nodes: error.nodes, source: error.source, positions: error.positions, extensions: { code } });
}

/** A subscribe refused with a public error: the formatter passes its code. */
function refusal(error: PublicError): GraphQLError {
  return new GraphQLError(error.message, { originalError: error });
}

function limitError(message: string): GraphQLError {
  return refusal(new PublicError('LIMIT_EXCEEDED', message));
}

/** Below this many bytes waiting on a socket, a send counts as done at once. */
const SOCKET_HIGH_WATER_BYTES = 256 * 1024;

/**
 * graphql-ws waits for each send's callback before it takes a subscription's next event, and
 * ws writes every message with its own system call. Measured with a hundred subscribers, those
 * writes were a third of the gateway's time. Here a send completes at once while the socket has
 * little waiting, and the messages of one tick leave in one write; past the high-water mark the
 * callback waits for the socket to drain, so a subscriber that stops reading still stops its
 * subscriptions (and their bounded queues fill) as before.
 */
function writeInBatches(ws: WebSocket): void {
  // ws's underlying net.Socket: the one that can be corked and that emits 'drain'.
  const socket = (ws as unknown as { _socket?: Socket })._socket;
  if (!socket) return;
  const send = ws.send.bind(ws);
  let corked = false;
  ws.send = ((data: string, callback?: (err?: Error) => void) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(() => {
        corked = false;
        socket.uncork();
      });
    }
    let failed: Error | undefined;
    send(data, (err?: Error) => {
      if (err) failed = err;
    });
    if (!callback) return;
    if (ws.bufferedAmount < SOCKET_HIGH_WATER_BYTES) {
      queueMicrotask(() => callback(failed));
      return;
    }
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      callback(failed);
    };
    socket.on('drain', done);
    socket.on('close', done);
  }) as WebSocket['send'];
}
