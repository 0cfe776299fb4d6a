import { execFileSync } from 'node:child_process';
import { availableParallelism, cpus, totalmem } from 'node:os';
import type { BenchData } from './benchDatabase.js';
import type { LoadResult } from './load.js';
import { CACHE_TTL_SECONDS, POOL_MAX, ROOT, WARM_BATCH, warmSetAgeLimit, type LookupOptions } from './lookupSettings.js';

/** One measured scenario: a line of the table. */
export interface ScenarioRow {
  readonly scenario: string;
  readonly serverName: string;
  readonly result: LoadResult;
  readonly rssBytes: number;
  /** Share of cache lookups answered by Redis during the measured run (gateway only). */
  readonly hitRate?: number;
  /** Reads only the warm set, so anything short of every lookup a hit is a fault of the run. */
  readonly warm: boolean;
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
const ms = (value: number) => value.toFixed(2);

/** What was measured, on what, with which settings: printed before the figures. */
export function printHeader(options: LookupOptions, data: BenchData): void {
  const database = new URL(options.databaseUrl);
  console.log('# lookup benchmark: invoice-gateway vs PostGraphile v4\n');
  console.log(`machine: ${availableParallelism()} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`);
  console.log(`gateway: ${gitRevision()}`);
  console.log(
    `data: ${data.invoices} invoices, ${data.customers} customers in ${database.host}${database.pathname}` +
      (data.seedSeconds ? ` (seeded in ${data.seedSeconds.toFixed(0)} s)` : ' (already seeded)'),
  );
  console.log(
    `load: autocannon, ${options.connections} connections, pipelining 1, ${options.duration} s per scenario after ${options.warmup} s warm-up, ` +
      `a random id in every request; ${POOL_MAX} Postgres connections per server; ` +
      'every response checked; a fresh gateway process per scenario',
  );
  console.log(
    `gateway cache: CACHE_TTL_SECONDS=${CACHE_TTL_SECONDS} (its default is 300 s; the last warm scenario ends at most ` +
      `${warmSetAgeLimit(options)} s after the warm set is loaded)\n`,
  );
}

/** The commit measured, so that a figure can be traced to the code that produced it. */
function gitRevision(): string {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `commit ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain') ? ' plus uncommitted changes' : ''}`;
  } catch {
    return 'commit unknown (not a git checkout)';
  }
}

/**
 * The table, the goals (warm invoice(id) against PostGraphile) and any failure. Sets a non-zero
 * exit code when requests failed or the warm set was not all cached, since such figures mislead.
 */
export function printReport(rows: ScenarioRow[], goal: { warm: ScenarioRow; peer: ScenarioRow }, options: LookupOptions, data: BenchData, warmSetSize: number): void {
  console.log('| scenario | server | req/s | p50 ms | p99 ms | max RSS MB | cache hits | errors |');
  console.log('|---|---|--:|--:|--:|--:|--:|--:|');
  for (const { scenario, serverName, result, rssBytes, hitRate } of rows) {
    const hits = hitRate === undefined ? '–' : `${(hitRate * 100).toFixed(1)}%`;
    console.log(`| ${scenario} | ${serverName} | ${Math.round(result.requestsPerSecond)} | ${ms(result.p50Ms)} | ${ms(result.p99Ms)} | ${mb(rssBytes)} | ${hits} | ${result.errors} |`);
  }
  console.log(
    `\ncold: ids drawn at random over all ${data.invoices} invoices, starting from an empty cache that fills as it goes. ` +
      `warm: ${warmSetSize} random invoices and their parties loaded into Redis first (invoices(ids), ${WARM_BATCH} per request), ids drawn from that set. ` +
      `PostGraphile: ids drawn over all ${data.invoices} invoices (it has no cache).`,
  );

  printGoals(goal.warm, goal.peer);

  const failed = rows.filter((r) => r.result.errors > 0);
  for (const r of failed) console.log(`\nERRORS in "${r.scenario}" (${r.result.errors}), first: ${r.result.firstError}`);
  const missed = rows.filter((r) => r.warm && r.hitRate !== 1);
  for (const r of missed) console.log(`\nCACHE MISSES in warm "${r.scenario}": the warm set was not all in Redis (expired or evicted?)`);
  if (failed.length || missed.length) console.log('\nthese figures measure a faulty run: do not use them');
  else if (options.duration < 10) console.log('\nshort run: a smoke test, not a measurement');
  if (failed.length || missed.length) process.exitCode = 1;
}

function printGoals(warm: ScenarioRow, peer: ScenarioRow): void {
  const ratio = warm.result.requestsPerSecond / peer.result.requestsPerSecond;
  const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log(`\nwarm invoice(id) / PostGraphile req/s: ${ratio.toFixed(2)}x (goal >= 1.5x: ${mark(ratio >= 1.5)})`);
  console.log(`p99 ${ms(warm.result.p99Ms)} ms vs ${ms(peer.result.p99Ms)} ms (goal lower: ${mark(warm.result.p99Ms < peer.result.p99Ms)})`);
  console.log(`max RSS ${mb(warm.rssBytes)} MB vs ${mb(peer.rssBytes)} MB (goal no higher: ${mark(warm.rssBytes <= peer.rssBytes)})`);
}
