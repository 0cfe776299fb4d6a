import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { PublicError } from '../core/errors.js';
import type { Config } from './config.js';
import { closeRedis } from '../core/closeRedis.js';

/** A client past one of its budgets; `retryAfterSeconds` is when the window lets it in again. */
export class RateLimited extends PublicError {
  constructor(
    readonly retryAfterSeconds: number,
    what: string,
  ) {
    super('LIMIT_EXCEEDED', `${what} budget of this client is spent; retry after ${retryAfterSeconds} s`);
  }

  /** RFC 9110's Retry-After. */
  headers(): Record<string, string> {
    return { 'retry-after': String(this.retryAfterSeconds) };
  }
}

export interface RateLimits {
  /** Counts one request (or subscription) of `subject`; throws RateLimited past the budget. */
  request(subject: string): Promise<void>;
  /** Spends an operation's estimated cost; throws RateLimited past the budget. */
  spend(subject: string, cost: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Per-client budgets of requests and of estimated cost per window, with rate-limiter-flexible:
 * in Redis when REDIS_URL is set, so every gateway process draws on one budget per client (one
 * atomic INCR-with-expiry script per check); else in this process. While Redis cannot answer,
 * each process falls back to an in-memory budget of the same size rather than refusing everyone
 * or letting everyone through.
 */
export function createRateLimits(config: Pick<Config, 'rateLimits' | 'cache'>, logger: Logger): RateLimits {
  const { requests, cost, windowSeconds } = config.rateLimits;
  const redis = config.cache.redisUrl && (requests > 0 || cost > 0)
    ? new Redis(config.cache.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1 })
    : undefined;
  redis?.on('error', (err) => logger.debug({ err }, 'rate limit store error'));
  const limiter = (name: string, points: number): RateLimiterAbstract | undefined => {
    if (points === 0) return undefined;
    const options = { keyPrefix: `${config.cache.keyPrefix}rl:${name}`, points, duration: windowSeconds };
    const memory = new RateLimiterMemory(options);
    if (!redis) return memory;
    // A client already past its budget is refused from memory, not with a Redis call each time.
    return new RateLimiterRedis({ ...options, storeClient: redis, insuranceLimiter: memory, inMemoryBlockOnConsumed: points, rejectIfRedisNotReady: true });
  };
  const requestLimiter = limiter('req', requests);
  const costLimiter = limiter('cost', cost);

  const consume = async (what: string, rateLimiter: RateLimiterAbstract | undefined, subject: string, points: number) => {
    if (!rateLimiter || points <= 0) return;
    try {
      await rateLimiter.consume(subject, points);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw new RateLimited(Math.max(1, Math.ceil(err.msBeforeNext / 1000)), what);
      throw err;
    }
  };
  return {
    request: (subject) => consume('request', requestLimiter, subject, 1),
    // Capped at the whole budget: an operation the complexity limit admits can run in a fresh window.
    spend: (subject, points) => consume('cost', costLimiter, subject, Math.min(points, cost)),
    async close() {
      if (redis) await closeRedis(redis);
    },
  };
}
