import type { IncomingMessage, ServerResponse } from 'node:http';
import { HeaderMap, type ApolloServer, type BaseContext } from '@apollo/server';
import { PublicError } from '../core/errors.js';
import { RateLimited } from './rateLimits.js';
import { refuseRoundedNumbers } from './roundedNumbers.js';

/** A plain GET endpoint beside /graphql (health, readiness, metrics). */
export type Route = (res: ServerResponse, req: IncomingMessage) => Promise<void> | void;

export interface HttpHandlerOptions<TContext extends BaseContext, TViewer> {
  readonly apollo: ApolloServer<TContext>;
  /**
   * Who asks, admitted under its budgets. A PublicError thrown here is the response (401, 403,
   * 429 or 503), before any GraphQL work.
   */
  readonly admit: (req: IncomingMessage) => Promise<TViewer>;
  /** The context of an operation of this viewer. */
  readonly context: (viewer: TViewer) => TContext;
  /** Stored answers and compiled runs of lookups, tried before Apollo. */
  readonly leanPath?: LeanPath<TContext, TViewer>;
  /** With trusted documents: the query to run for a request's query text or persisted hash. */
  readonly trustedQuery?: (query: unknown, extensions: unknown) => string;
  readonly routes: Readonly<Record<string, Route>>;
  /** Request bodies above this size are refused with 413 before they are parsed. */
  readonly maxBodyBytes: number;
  readonly onError: (err: unknown) => void;
}

export interface StoredResponse {
  readonly headers: readonly (readonly [string, string])[];
  /** Text, or bytes encoded already (a replayed analytics response: server/keptAnalytics.ts). */
  readonly body: string | Buffer;
}

/** Answers to lookups given without Apollo's pipeline (server/leanPath.ts). */
export interface LeanPath<TContext, TViewer> {
  /** Larger request bodies always go to Apollo. */
  readonly maxRequestBytes: number;
  /** A stored answer to this exact request for this viewer, already charged and recorded; or undefined. */
  stored(viewer: TViewer, accept: string | undefined, body: string): Promise<StoredResponse | undefined>;
  /** The computation of an answer: `run` may give it without Apollo; `done` receives the complete 200 answer either way. */
  begin(viewer: TViewer, accept: string | undefined, body: string, request: unknown, context: TContext): LeanComputation;
}

export interface LeanComputation {
  run(): Promise<StoredResponse | undefined>;
  done(response: StoredResponse, how: { fromApollo: boolean }): void;
}

/**
 * Serves Apollo Server straight from node:http through its integration API
 * (`executeHTTPGraphQLRequest`). Measured on the warm `invoice(id)` lookup, express 5 with
 * body-parser and its router cut requests/s by 2.5x; Apollo itself already does all the
 * GraphQL-over-HTTP work (methods, CSRF prevention, GET queries, content negotiation).
 */
export function createHttpHandler<TContext extends BaseContext, TViewer>(options: HttpHandlerOptions<TContext, TViewer>) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const work = path === '/graphql' ? serveGraphQL(req, res, url, queryAt, options) : serveRoute(req, res, path, options.routes);
    work.catch((err: unknown) => {
      options.onError(err);
      if (!res.headersSent) sendGraphQLError(res, 500, 'Unexpected error', 'INTERNAL_SERVER_ERROR');
      else res.destroy();
    });
  };
}

async function serveRoute(req: IncomingMessage, res: ServerResponse, path: string, routes: Readonly<Record<string, Route>>) {
  const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
  if (path === '/') {
    res.writeHead(302, { location: '/graphql' }).end();
  } else if (!route) {
    sendJson(res, 404, { error: 'not found' });
  } else if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
  } else {
    await route(res, req);
  }
}

async function serveGraphQL<TContext extends BaseContext, TViewer>(
  req: IncomingMessage,
  res: ServerResponse,
  url: string,
  queryAt: number,
  { apollo, admit, context, leanPath, maxBodyBytes, trustedQuery }: HttpHandlerOptions<TContext, TViewer>,
) {
  const raw = await readBody(req, maxBodyBytes);
  if (raw === 'too large') {
    sendGraphQLError(res, 413, `Request body exceeds ${maxBodyBytes} bytes`, 'BAD_REQUEST');
    return;
  }
  let viewer: TViewer;
  try {
    viewer = await admit(req);
  } catch (err) {
    if (!refuse(req, res, err)) throw err;
    return;
  }
  const json = raw.length > 0 && /^application\/(graphql-response\+)?json/i.test(req.headers['content-type'] ?? '');
  // Only JSON POSTs: Apollo refuses other requests for reasons (CSRF, methods) kept out of the key.
  const lean = leanPath && json && req.method === 'POST' && raw.length <= leanPath.maxRequestBytes ? leanPath : undefined;
  const text = json ? raw.toString('utf8') : undefined;
  let stored: StoredResponse | undefined;
  try {
    stored = lean && (await lean.stored(viewer, req.headers.accept, text!));
  } catch (err) {
    if (!refuse(req, res, err)) throw err;
    return;
  }
  if (stored) {
    send(res, stored);
    return;
  }
  let body: unknown;
  if (json) {
    try {
      body = JSON.parse(text!);
    } catch {
      sendGraphQLError(res, 400, 'Request body is not valid JSON', 'BAD_REQUEST');
      return;
    }
  }
  let search = queryAt === -1 ? '' : url.slice(queryAt);
  const variables = body && typeof body === 'object' ? (body as { variables?: unknown }).variables : parseOrUndefined(new URLSearchParams(search).get('variables'));
  const rounded = refuseRoundedNumbers(variables);
  if (rounded) {
    sendGraphQLError(res, 400, rounded.message, rounded.code);
    return;
  }
  if (trustedQuery) {
    try {
      if (body && typeof body === 'object' && !Array.isArray(body)) {
        const request = body as { query?: unknown; extensions?: unknown };
        body = { ...request, query: trustedQuery(request.query, request.extensions) };
      } else {
        const params = new URLSearchParams(search);
        params.set('query', trustedQuery(params.get('query') ?? undefined, parseOrUndefined(params.get('extensions'))));
        search = `?${params.toString()}`;
      }
    } catch (err) {
      if (!refuse(req, res, err)) throw err;
      return;
    }
  }
  const contextValue = context(viewer);
  const computation = lean?.begin(viewer, req.headers.accept, text!, body, contextValue);
  let computed: StoredResponse | undefined;
  try {
    computed = await computation?.run();
  } catch (err) {
    if (!refuse(req, res, err)) throw err;
    return;
  }
  if (computed) {
    send(res, computed);
    computation!.done(computed, { fromApollo: false });
    return;
  }
  const headers = new HeaderMap();
  for (const [key, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
  }
  const response = await apollo.executeHTTPGraphQLRequest({
    httpGraphQLRequest: { method: (req.method ?? 'GET').toUpperCase(), headers, search, body },
    context: async () => contextValue,
  });
  for (const [key, value] of response.headers) res.setHeader(key, value);
  res.statusCode = response.status ?? 200;
  if (response.body.kind === 'complete') {
    endWith(res, response.body.string);
    if (res.statusCode === 200) computation?.done({ headers: [...response.headers], body: response.body.string }, { fromApollo: true });
    return;
  }
  for await (const chunk of response.body.asyncIterator) res.write(chunk);
  res.end();
}

/** A 200 answer given without Apollo. */
function send(res: ServerResponse, { headers, body }: StoredResponse): void {
  for (const [name, value] of headers) res.setHeader(name, value);
  res.statusCode = 200;
  endWith(res, body);
}

/**
 * Ends the response with `body` as UTF-8 bytes, encoded once. Given the string, node:http
 * measures its bytes for the length and encodes it again on the socket: a 1.3 MB page (10,000
 * rows) took 5.8 ms that way against 1.2 ms as bytes, client to client (by hand, on this machine).
 */
function endWith(res: ServerResponse, body: string | Buffer): void {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.setHeader('content-length', bytes.length);
  res.end(bytes);
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | 'too large'> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > maxBytes) {
      req.resume();
      resolve('too large');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.removeAllListeners('data');
        req.resume();
        resolve('too large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(value));
}

/** An error answered before Apollo runs, in the same shape as Apollo's own error responses. */
function sendGraphQLError(res: ServerResponse, status: number, message: string, code: string, headers: Record<string, string> = {}): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  // Byte for byte as Apollo writes its own error answers (with the final newline).
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(`${JSON.stringify({ errors: [{ message, extensions: { code } }] })}\n`);
}

/** The HTTP status of a request refused before GraphQL runs, by its public code. */
const REFUSAL_STATUS: Partial<Record<PublicError['code'], number>> = {
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  LIMIT_EXCEEDED: 429,
  SERVICE_UNAVAILABLE: 503,
};

/** Answers a refusal (true), or leaves an unexpected error to the caller (false). */
function refuse(req: IncomingMessage, res: ServerResponse, err: unknown): boolean {
  const status = err instanceof PublicError ? REFUSAL_STATUS[err.code] : undefined;
  if (!status) return false;
  const { message, code } = err as PublicError;
  // RFC 6750 §3.1: the challenge names the error only when a token was sent.
  const challenge = req.headers.authorization ? 'Bearer error="invalid_token"' : 'Bearer';
  const headers = code === 'UNAUTHENTICATED' ? { 'www-authenticate': challenge } : err instanceof RateLimited ? err.headers() : {};
  sendGraphQLError(res, status, message, code, headers);
  return true;
}

function parseOrUndefined(text: string | null): unknown {
  if (text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
