import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage, PublicError } from '../../core/errors.js';
import { atMostEvery } from '../../core/throttle.js';
import { closeRedis } from '../../core/closeRedis.js';

/**
 * Fan-out of events to subscribers: through Redis pub/sub when REDIS_URL is set (a subscriber on
 * any gateway process receives every event), in process otherwise. Each subscription has its own
 * bounded queue: a subscriber that stops reading ends its own subscription and costs nothing more.
 *
 * Not yoga's createPubSub: its Repeater throws an uncaught overflow error past 1,024 waiting
 * events (crashing the process), and it attaches listeners lazily, losing events published
 * between a subscribe and its first read.
 */
export interface EventBus {
  /** Delivers `payload` to every current subscriber of `topic`; never throws (a lost event is logged). */
  publish(topic: string, payload: unknown): void;
  /**
   * Listens from now on; `ready` resolves once no event published after it can be missed.
   * `onOverflow` runs when the subscriber falls `maxQueued` behind (its next read then throws).
   */
  subscribe<T>(topic: string, options: SubscribeOptions): Subscription<T>;
  close(): Promise<void>;
}

export interface SubscribeOptions {
  readonly maxQueued: number;
  readonly onOverflow?: () => void;
}

export interface Subscription<T> extends AsyncIterableIterator<T> {
  readonly ready: Promise<void>;
}

/** The subscriber fell `maxQueued` events behind: its subscription ends, others are unaffected. */
class SubscriberTooSlowError extends PublicError {
  constructor(maxQueued: number) {
    super('LIMIT_EXCEEDED', `this subscription fell more than ${maxQueued} events behind and was ended; subscribe again with after: the last cursor received`);
  }
}

interface Target {
  addEventListener(type: string, listener: (event: Event) => void): void;
  removeEventListener(type: string, listener: (event: Event) => void): void;
}

export function createEventBus(options: { redisUrl?: string; prefix: string }, logger: Logger): EventBus {
  const channel = (topic: string) => `${options.prefix}events:${topic}`;
  if (!options.redisUrl) {
    const target = new EventTarget();
    return {
      publish: (topic, payload) => void target.dispatchEvent(new CustomEvent(channel(topic), { detail: payload })),
      subscribe: (topic, options) => boundedSubscription(target, channel(topic), options, Promise.resolve()),
      close: async () => undefined,
    };
  }

  // Publishing fails fast while Redis is down (a lost event is found again by subscribers through
  // the cursor's gap check); subscribing waits and re-subscribes by itself after a reconnect.
  const publisher = new Redis(options.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: (n) => Math.min(n * 200, 2000) });
  const subscriber = new Redis(options.redisUrl, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 200, 2000) });
  const logNow = atMostEvery(60_000);
  const onError = (err: Error) => {
    if (!logNow()) return;
    logger.warn({ err: errorMessage(err) }, 'Redis pub/sub unavailable; events published meanwhile reach only subscribers that resume by cursor');
  };
  publisher.on('error', onError);
  subscriber.on('error', onError);
  // The target SUBSCRIBEs and UNSUBSCRIBEs without waiting for the reply, and parses every
  // message: a command flushed unanswered (Redis gone at close) or a message that is not JSON
  // would be an unhandled rejection or an uncaught exception. Both are caught here instead.
  const subscribeClient = {
    on: (event: 'message', listener: (channel: string, message: string) => void) => subscriber.on(event, listener),
    subscribe: (topic: string) => subscriber.subscribe(topic).catch(onError),
    unsubscribe: (topic: string) => subscriber.unsubscribe(topic).catch(onError),
  };
  const target = createRedisEventTarget({
    publishClient: publisher,
    subscribeClient: subscribeClient as unknown as Redis,
    serializer: { stringify: JSON.stringify, parse: parseEvent },
  }) as unknown as Target;
  return {
    publish(topic, payload) {
      publisher.publish(channel(topic), JSON.stringify(payload)).catch(onError);
    },
    subscribe(topic, options) {
      const name = channel(topic);
      // SUBSCRIBE is idempotent; its reply means Redis now routes the channel's messages to us.
      const ready = subscriber.subscribe(name).then(() => undefined);
      ready.catch(() => undefined);
      return boundedSubscription(target, name, options, ready);
    },
    async close() {
      await closeRedis(publisher, subscriber);
    },
  };
}

/** What a message that is not JSON delivers: nothing (subscribers skip it). */
const UNREADABLE = Symbol('unreadable event');

function parseEvent(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return UNREADABLE;
  }
}

/**
 * An async iterator over one topic, attached at once, holding at most `maxQueued` events. Past
 * that it ends with SubscriberTooSlowError and detaches; it never throws into the event source.
 */
function boundedSubscription<T>(target: Target, topic: string, { maxQueued, onOverflow }: SubscribeOptions, ready: Promise<void>): Subscription<T> {
  const queue: T[] = [];
  let waiting: ((result: IteratorResult<T>) => void) | undefined;
  let failure: Error | undefined;
  let done = false;

  const detach = () => {
    if (done) return;
    done = true;
    target.removeEventListener(topic, listener);
  };
  function listener(event: Event) {
    const value = (event as CustomEvent<T>).detail;
    if ((value as unknown) === UNREADABLE) return;
    if (waiting) {
      const resolve = waiting;
      waiting = undefined;
      resolve({ value, done: false });
    } else if (queue.length >= maxQueued) {
      queue.length = 0;
      failure = new SubscriberTooSlowError(maxQueued);
      detach();
      onOverflow?.();
    } else {
      queue.push(value);
    }
  }
  target.addEventListener(topic, listener);

  const iterator: Subscription<T> = {
    ready,
    next() {
      if (queue.length > 0) return Promise.resolve({ value: queue.shift()!, done: false });
      if (failure) {
        const err = failure;
        failure = undefined;
        return Promise.reject(err);
      }
      if (done) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve) => (waiting = resolve));
    },
    async return() {
      detach();
      queue.length = 0;
      waiting?.({ value: undefined, done: true });
      waiting = undefined;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
