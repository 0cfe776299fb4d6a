import { fileURLToPath } from 'node:url';
import { parseBenchOptions } from './options.js';

/** The repository root: this file runs as dist/bench/lookupSettings.js. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Postgres connections per server, the same for both (the gateway's default). */
export const POOL_MAX = 20;
/** Invoices per invoices(ids) request while loading the warm set. */
export const WARM_BATCH = 1000;
export const LIST_SIZE = 100;
/** How long a gateway may take to answer /readyz after it is spawned. */
export const START_TIMEOUT_S = 60;
/**
 * Passed to every gateway, because its default (300 s) is shorter than the time from loading the
 * warm set to the end of the last warm scenario on long runs: an expired key would turn "warm"
 * lookups into Postgres reads. parseLookupOptions refuses runs that would outlast even this.
 */
export const CACHE_TTL_SECONDS = 3600;
/** Rounds of the authenticated scenarios, each measuring three gateways in turn. */
export const AUTH_ROUNDS = 5;
/** Measurements made after the warm set is loaded (warm, the list, the authenticated rounds). */
const WARM_SCENARIOS = 2 + 3 * AUTH_ROUNDS;

export interface LookupOptions {
  readonly invoices: number;
  readonly customers: number;
  readonly connections: number;
  readonly duration: number;
  /** Seconds of load before each measured run, discarded: a fresh Node process needs 2-3 s to reach steady speed (JIT). */
  readonly warmup: number;
  readonly warmIds: number;
  readonly databaseUrl: string;
  readonly redisUrl: string;
}

const usage =
  'usage: npm run bench -- lookups [--invoices 1000000] [--customers 10000] [--connections 32] [--duration 15] [--warmup 5] ' +
  '[--warm-ids 20000] [--database-url postgres://postgres@127.0.0.1:5432/ig_bench_lookups] [--redis-url redis://127.0.0.1:6379]';

export function parseLookupOptions(argv: string[]): LookupOptions {
  const { text, whole } = parseBenchOptions(
    argv,
    {
      invoices: '1000000', customers: '10000', connections: '32', duration: '15', warmup: '5', 'warm-ids': '20000',
      'database-url': 'postgres://postgres@127.0.0.1:5432/ig_bench_lookups', 'redis-url': 'redis://127.0.0.1:6379',
    },
    usage,
  );
  const options = {
    invoices: whole('invoices', LIST_SIZE),
    customers: whole('customers', 2),
    connections: whole('connections', 1),
    duration: whole('duration', 1),
    warmup: whole('warmup', 0),
    warmIds: whole('warm-ids', LIST_SIZE),
    databaseUrl: text('database-url'),
    redisUrl: text('redis-url'),
  };
  if (warmSetAgeLimit(options) > CACHE_TTL_SECONDS) {
    throw new Error(`--warmup plus --duration must be at most ${Math.floor(CACHE_TTL_SECONDS / WARM_SCENARIOS) - START_TIMEOUT_S} s, or the warm set could expire mid-run\n${usage}`);
  }
  return options;
}

/** The longest the warm set can have been in Redis when the last warm scenario ends. */
export function warmSetAgeLimit(options: Pick<LookupOptions, 'warmup' | 'duration'>): number {
  return WARM_SCENARIOS * (START_TIMEOUT_S + options.warmup + options.duration);
}
