import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage } from '../../core/errors.js';
import { atMostEvery } from '../../core/throttle.js';
import { closeRedis } from '../../core/closeRedis.js';

/** What one gateway tells every other that its in-process tier must drop. */
export interface Invalidation {
  readonly keys?: readonly string[];
  readonly prefix?: string;
}

/**
 * Cache invalidations fanned out to every gateway process through Redis pub/sub, so that each
 * process's in-process tier drops a changed row within milliseconds of the feed seeing it.
 *
 * Pub/sub delivers at most once: a process whose subscription is down misses messages. So the
 * channel says whether it is `live`, and its `epoch` changes whenever the subscription was lost;
 * a tier must not keep anything it read before an epoch change, nor use itself while not live.
 */
export interface InvalidationChannel {
  /**
   * Delivers to every process: to this one at once, before the message goes out, to the others
   * through Redis. Never throws: an unsent message is retried until Redis takes it.
   */
  publish(invalidation: Invalidation): void;
  /** Called for every message, this process's own included (at its publish, and again when Redis echoes it). */
  onMessage(handler: (invalidation: Invalidation) => void): void;
  /** Called whenever the subscription is lost (every message since may be missed). */
  onLost(handler: () => void): void;
  live(): boolean;
  epoch(): number;
  close(): Promise<void>;
}

const RETRY_MS = 1000;
/** Keys per published message. */
const KEYS_PER_MESSAGE = 1000;
/** Unsent keys kept one by one; past this, every process is told to drop everything instead. */
const MAX_PENDING_KEYS = 100_000;

export function createInvalidationChannel(options: { url: string; keyPrefix: string }, logger: Logger): InvalidationChannel {
  // Not ioredis's keyPrefix: it does not apply to channel names.
  const name = `${options.keyPrefix}cache-invalidations`;
  const retryStrategy = (attempt: number) => Math.min(attempt * 200, 2000);
  const publisher = new Redis(options.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy });
  // Subscribed by hand on every 'ready', so that `live` turns true only once Redis routes to us.
  const subscriber = new Redis(options.url, { autoResubscribe: false, maxRetriesPerRequest: null, retryStrategy });
  const handlers: ((invalidation: Invalidation) => void)[] = [];
  const lostHandlers: (() => void)[] = [];
  let subscribed = false;
  let epoch = 0;
  let closed = false;
  const logNow = atMostEvery(60_000);

  const logError = (err: unknown) => {
    if (!logNow()) return;
    logger.warn({ err: errorMessage(err) }, 'cache invalidation channel unavailable; in-process cache tier off until it returns');
  };
  publisher.on('error', logError);
  subscriber.on('error', logError);

  const lost = () => {
    if (!subscribed) return;
    subscribed = false;
    epoch++;
    for (const handler of lostHandlers) handler();
  };
  subscriber.on('close', lost);
  subscriber.on('end', lost);
  subscriber.on('ready', () => {
    subscriber.subscribe(name).then(
      () => {
        if (closed || subscriber.status !== 'ready') return;
        epoch++;
        subscribed = true;
      },
      logError,
    );
  });
  subscriber.on('message', (channel: string, message: string) => {
    if (channel !== name) return;
    const invalidation = readInvalidation(message);
    for (const handler of handlers) handler(invalidation);
  });

  // Messages Redis did not take, merged, sent again once it does; past the bound, one "drop
  // everything" in their place (as the Redis cache does with its pending tombstones).
  let pendingKeys = new Set<string>();
  let pendingPrefixes = new Set<string>();
  let retryTimer: NodeJS.Timeout | undefined;
  const keep = (invalidation: Invalidation) => {
    for (const key of invalidation.keys ?? []) pendingKeys.add(key);
    if (invalidation.prefix !== undefined) pendingPrefixes.add(invalidation.prefix);
    if (pendingKeys.size > MAX_PENDING_KEYS) {
      pendingKeys.clear();
      pendingPrefixes.add('');
    }
    if (!closed) retryTimer ??= setTimeout(resend, RETRY_MS).unref();
  };
  const send = async (invalidation: Invalidation): Promise<void> => {
    // Bounded messages: a huge one could pass Redis's pub/sub output buffer limit and cut every subscriber off.
    const messages: Invalidation[] = invalidation.prefix !== undefined ? [{ prefix: invalidation.prefix }] : [];
    const keys = invalidation.keys ?? [];
    for (let i = 0; i < keys.length; i += KEYS_PER_MESSAGE) messages.push({ keys: keys.slice(i, i + KEYS_PER_MESSAGE) });
    for (const message of messages) {
      try {
        await publisher.publish(name, JSON.stringify(message));
      } catch (err) {
        logError(err);
        keep(message);
      }
    }
  };
  const takePending = (): Invalidation[] => {
    const taken = [...[...pendingPrefixes].map((prefix) => ({ prefix })), ...(pendingKeys.size > 0 ? [{ keys: [...pendingKeys] }] : [])];
    pendingKeys = new Set();
    pendingPrefixes = new Set();
    return taken;
  };
  function resend() {
    retryTimer = undefined;
    for (const invalidation of takePending()) void send(invalidation);
  }

  return {
    publish(invalidation) {
      // The feed's consumer has applied the invalidation when it publishes: this process's next
      // lookup must not be answered from its in-process tier or response cache while the echo
      // through Redis is on its way (a few milliseconds in which an UPDATE went unseen).
      for (const handler of handlers) handler(invalidation);
      void send(invalidation);
    },
    onMessage: (handler) => void handlers.push(handler),
    onLost: (handler) => void lostHandlers.push(handler),
    live: () => subscribed,
    epoch: () => epoch,
    async close() {
      closed = true;
      clearTimeout(retryTimer);
      // A last try for what Redis has not taken yet: other processes would keep those rows.
      const unsent = takePending();
      if (unsent.length > 0 && publisher.status === 'ready') await Promise.allSettled(unsent.map(send));
      await closeRedis(publisher, subscriber);
    },
  };
}

/** The channel of a single process (no Redis): every invalidation is this process's own. */
export function createLocalInvalidationChannel(): InvalidationChannel {
  const handlers: ((invalidation: Invalidation) => void)[] = [];
  return {
    publish: (invalidation) => {
      for (const handler of handlers) handler(invalidation);
    },
    onMessage: (handler) => void handlers.push(handler),
    onLost: () => undefined,
    live: () => true,
    epoch: () => 0,
    close: async () => undefined,
  };
}

/** Everything: what a message this process cannot read must mean for its in-process tier. */
const EVERYTHING: Invalidation = { prefix: '' };

/**
 * A message as published, or EVERYTHING for any other (a newer gateway's format, a hand-typed
 * PUBLISH): its handlers run inside Redis's socket callback, so a shape they cannot take would
 * be an uncaught exception, and a message ignored could leave a changed row in some process.
 */
function readInvalidation(message: string): Invalidation {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    return EVERYTHING;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return EVERYTHING;
  const { keys, prefix } = parsed as { keys?: unknown; prefix?: unknown };
  // This process never publishes a message with neither: another format, whose meaning is unknown.
  if (keys === undefined && prefix === undefined) return EVERYTHING;
  const keysValid = keys === undefined || (Array.isArray(keys) && keys.every((k) => typeof k === 'string'));
  const prefixValid = prefix === undefined || typeof prefix === 'string';
  if (!keysValid || !prefixValid) return EVERYTHING;
  return { keys: keys as string[] | undefined, prefix: prefix as string | undefined };
}
