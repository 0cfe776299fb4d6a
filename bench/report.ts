import type { BenchData } from './benchDatabase.js';
import type { LoadResult } from './load.js';
import { CACHE_LOCAL_MAX_ENTRIES, CACHE_TTL_SECONDS, POOL_MAX, WARM_BATCH, warmSetAgeLimit, type LookupOptions } from './lookupSettings.js';
import { gitRevision, machine, mb } from './reportFormat.js';
import { median } from './stats.js';

/** One scenario on one server, measured once per round: a line of the table. */
export interface ScenarioRow {
  readonly scenario: string;
  readonly server: string;
  /** Reads only cached invoices, so anything short of every lookup a hit is a fault of the run. */
  readonly warm: boolean;
  /** The discarded warm-up before the first round (its failures still count). */
  readonly warmup?: LoadResult;
  /** One per round. */
  readonly runs: readonly LoadResult[];
  /** Highest RSS of the server process during its measured runs. */
  readonly rssBytes: number;
  /** Share of cache lookups answered by the cache (either tier) over every run (gateway only). */
  readonly hitRate?: number;
}

/** What the run found out before measuring, for the header. */
export interface RunFacts {
  readonly peers: readonly string[];
  readonly gateways: number;
  readonly feedHolder: string;
  /** Share of the machine's CPUs busy with every server started and idle. */
  readonly idleBusyShare: number;
  readonly warmSetSize: number;
  readonly customerInvoices: number;
}

const ms = (value: number) => value.toFixed(2);
const rps = (row: ScenarioRow) => median(row.runs.map((r) => r.requestsPerSecond));
const p99 = (row: ScenarioRow) => median(row.runs.map((r) => r.p99Ms));
const cpu = (row: ScenarioRow) => median(row.runs.map((r) => r.cpuUsPerRequest));
const errors = (row: ScenarioRow) => [row.warmup, ...row.runs].reduce((n, r) => n + (r?.errors ?? 0), 0);
const mark = (ok: boolean) => (ok ? 'met' : 'NOT met');

/** What was measured, on what, with which settings: printed before the figures. */
export function printHeader(options: LookupOptions, data: BenchData, facts: RunFacts): void {
  const database = new URL(options.databaseUrl);
  console.log('# lookup benchmark: invoice-gateway vs PostGraphile v4 and v5\n');
  console.log(`machine: ${machine()}`);
  console.log(`gateway: ${gitRevision()}`);
  console.log(`peers: ${facts.peers.join('; ')}`);
  console.log(
    `data: ${data.invoices} invoices, ${data.customers} customers in ${database.host}${database.pathname}` +
      (data.seedSeconds ? ` (seeded in ${data.seedSeconds.toFixed(0)} s)` : ' (already seeded)'),
  );
  console.log(
    `load: autocannon, ${options.connections} connections, pipelining 1, every response checked; ${POOL_MAX} Postgres connections per server; ` +
      `${options.rounds} round${options.rounds === 1 ? '' : 's'}, each running every scenario on every server in turn (scenarios and servers in a different order each round), ` +
      `${options.duration} s per run, after one ${options.warmup} s warm-up per scenario and server; medians over the rounds`,
  );
  console.log(
    `servers: started once and kept for the whole run (${facts.gateways} gateways, ${facts.peers.length} PostGraphiles); ` +
      `gateways without lake exports, change feed on (${facts.feedHolder} holds the slot, the others are its standbys); ` +
      `with all of them idle the machine was ${(facts.idleBusyShare * 100).toFixed(1)}% busy`,
  );
  console.log(
    `gateway cache: an in-process tier of CACHE_LOCAL_MAX_ENTRIES=${CACHE_LOCAL_MAX_ENTRIES} entries, smaller than the table (${data.invoices} invoices), ` +
      `over Redis with CACHE_TTL_SECONDS=${CACHE_TTL_SECONDS} (its default is 300 s; the last round ends at most ${warmSetAgeLimit(options)} s after the warm set is loaded)`,
  );
  console.log('CPU µs/req: busy time of the whole machine (/proc/stat: servers, Postgres, Redis, the load generator) per request\n');
}

/**
 * The table, the goals and any failure. Sets a non-zero exit code when requests failed or a warm
 * scenario missed the cache, since such figures mislead.
 */
export function printReport(rows: readonly ScenarioRow[], goals: Goals, options: LookupOptions, data: BenchData, facts: RunFacts): void {
  console.log('| scenario | server | req/s (median) | p50 ms | p99 ms (median) | CPU µs/req (median) | max RSS MB | cache hits | errors | req/s per round |');
  console.log('|---|---|--:|--:|--:|--:|--:|--:|--:|---|');
  for (const row of rows) {
    const hits = row.hitRate === undefined ? '–' : `${(row.hitRate * 100).toFixed(1)}%`;
    const p50 = median(row.runs.map((r) => r.p50Ms));
    const perRound = row.runs.map((r) => Math.round(r.requestsPerSecond)).join(', ');
    console.log(
      `| ${row.scenario} | ${row.server} | ${Math.round(rps(row))} | ${ms(p50)} | ${ms(p99(row))} | ${Math.round(cpu(row))} | ${mb(row.rssBytes)} | ${hits} | ${errors(row)} | ${perRound} |`,
    );
  }
  console.log(
    `\n{ __typename }: no data read, the ceiling of each server's HTTP and GraphQL pipeline. ` +
      `warm: ${facts.warmSetSize} random invoices and their parties loaded into the gateway's cache first (invoices(ids), ${WARM_BATCH} per request), ids drawn from that set on every server (PostGraphile has no cache; its lookup is invoiceByInvoiceId, the same fields). ` +
      `uniform: ids drawn over all ${data.invoices} invoices on every server, so the gateway mostly misses. ` +
      `customer: one customer's ${facts.customerInvoices} invoices, cached, on three gateways that differ only in authentication.`,
  );

  printGoals(goals);

  const failed = rows.filter((r) => errors(r) > 0);
  for (const r of failed) {
    const first = [r.warmup, ...r.runs].find((x) => x?.firstError)?.firstError;
    console.log(`\nERRORS in "${r.scenario}" on ${r.server} (${errors(r)}), first: ${first}`);
  }
  const missed = rows.filter((r) => r.warm && r.hitRate !== 1);
  for (const r of missed) console.log(`\nCACHE MISSES in warm "${r.scenario}" on ${r.server}: the warm set was not all cached (expired or evicted?)`);
  if (failed.length || missed.length) console.log('\nthese figures measure a faulty run: do not use them');
  else if (options.duration < 10 || options.rounds < 3) console.log('\nshort run: a smoke test, not a measurement');
  if (failed.length || missed.length) process.exitCode = 1;
}

/** The rows the goals compare, each scenario's gateway with both PostGraphiles of the same run. */
export interface Goals {
  readonly warm: { readonly gateway: ScenarioRow; readonly peers: readonly ScenarioRow[] };
  readonly uniform: { readonly gateway: ScenarioRow; readonly peers: readonly ScenarioRow[] };
  readonly authOff: ScenarioRow;
  readonly token: ScenarioRow;
}

function printGoals(goals: Goals): void {
  console.log('\nGoals, each against the better (higher req/s) of PostGraphile v4 and v5 in the same scenario of this run:');
  for (const [name, { gateway, peers }, least] of [['warm', goals.warm, 2.5], ['uniform', goals.uniform, 1.2]] as const) {
    const peer = peers.reduce((best, p) => (rps(p) > rps(best) ? p : best));
    const ratio = rps(gateway) / rps(peer);
    console.log(`- ${name}: ${ratio.toFixed(2)}x ${peer.server}'s req/s (goal >= ${least}x: ${mark(ratio >= least)})`);
    if (name === 'warm') console.log(`- ${name}: p99 ${ms(p99(gateway))} ms vs ${ms(p99(peer))} ms (goal lower: ${mark(p99(gateway) < p99(peer))})`);
    console.log(`- ${name}: ${Math.round(cpu(gateway))} vs ${Math.round(cpu(peer))} machine CPU µs per request (goal lower: ${mark(cpu(gateway) < cpu(peer))})`);
  }
  const change = rps(goals.token) / rps(goals.authOff) - 1;
  console.log(`- customer token vs AUTH_MODE=off: ${change >= 0 ? '+' : ''}${(change * 100).toFixed(1)}% req/s (goal within 10%: ${mark(Math.abs(change) <= 0.1)})`);
}
