import { fileURLToPath } from 'node:url';
import { parseBenchOptions } from './options.js';

/** The repository root: this file runs as dist/bench/lookupSettings.js. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Postgres connections per server, the same for every one (the gateway's default). */
export const POOL_MAX = 20;
/** Invoices per invoices(ids) request while loading the warm set. */
export const WARM_BATCH = 1000;
export const LIST_SIZE = 100;
/** How long a server may take to answer after it is spawned (a gateway its /readyz). */
export const START_TIMEOUT_S = 60;
/**
 * Passed to every gateway, because its default (300 s) is shorter than the time from loading the
 * warm set to the end of the last round on long runs: an expired key would turn "warm" lookups
 * into Postgres reads. parseLookupOptions refuses runs that would outlast even this.
 */
export const CACHE_TTL_SECONDS = 3600;
/**
 * The gateways' in-process cache tier, in entries (its default, passed explicitly): smaller than
 * the table, so uniform lookups over every invoice mostly miss, and larger than the warm set.
 */
export const CACHE_LOCAL_MAX_ENTRIES = 50_000;
/**
 * Measured runs per round: { __typename }, warm and uniform invoice(id) on the gateway and both
 * PostGraphiles, three authenticated gateways, the list. lookups.ts checks its scenarios add up.
 */
export const RUNS_PER_ROUND = 3 * 3 + 2 + 3 + 1;
/** Seconds a run may take beyond its duration: /metrics scrapes, autocannon's last requests (10 s time-out). */
const RUN_OVERHEAD_S = 10;

export interface LookupOptions {
  readonly invoices: number;
  readonly customers: number;
  readonly connections: number;
  readonly duration: number;
  /** Seconds of load before each scenario's first measured run, discarded: a fresh Node process needs 2-3 s to reach steady speed (JIT). */
  readonly warmup: number;
  readonly warmIds: number;
  /** Rounds of every scenario in turn; the report gives medians over them. */
  readonly rounds: number;
  readonly databaseUrl: string;
  readonly redisUrl: string;
}

const usage =
  'usage: npm run bench -- lookups [--invoices 1000000] [--customers 10000] [--connections 32] [--duration 15] [--warmup 5] ' +
  '[--warm-ids 20000] [--rounds 3] [--database-url postgres://postgres@127.0.0.1:5432/ig_bench_lookups] [--redis-url redis://127.0.0.1:6379]';

export function parseLookupOptions(argv: string[]): LookupOptions {
  const { text, whole } = parseBenchOptions(
    argv,
    {
      invoices: '1000000', customers: '10000', connections: '32', duration: '15', warmup: '5', 'warm-ids': '20000', rounds: '3',
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
    rounds: whole('rounds', 1),
    databaseUrl: text('database-url'),
    redisUrl: text('redis-url'),
  };
  if (warmSetAgeLimit(options) > CACHE_TTL_SECONDS) {
    throw new Error(
      `--rounds, --duration and --warmup make a run of up to ${warmSetAgeLimit(options)} s after the warm set is loaded, ` +
        `longer than the cache keeps it (${CACHE_TTL_SECONDS} s): it could expire mid-run\n${usage}`,
    );
  }
  return options;
}

/**
 * The longest the warm set can have been in Redis when the last round ends: every run's warm-up
 * once, then the rounds. Every server is started, and the feed settled, before it is loaded.
 */
export function warmSetAgeLimit(options: Pick<LookupOptions, 'warmup' | 'duration' | 'rounds'>): number {
  return RUNS_PER_ROUND * (options.warmup + RUN_OVERHEAD_S + options.rounds * (options.duration + RUN_OVERHEAD_S));
}
