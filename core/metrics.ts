import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The gateway's Prometheus metrics, one registry per gateway instance so that tests running
 * several gateways in one process read their own counters.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly graphqlRequests = new Counter({
    name: 'gateway_graphql_requests_total',
    help: 'GraphQL operations by operation name and outcome (ok or error)',
    labelNames: ['operation', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly graphqlDuration = new Histogram({
    name: 'gateway_graphql_request_duration_seconds',
    help: 'GraphQL operation latency by operation name',
    labelNames: ['operation'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly queryComplexity = new Histogram({
    name: 'gateway_query_complexity',
    help: 'Estimated cost of each operation (see MAX_QUERY_COMPLEXITY)',
    buckets: [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000],
    registers: [this.registry],
  });

  readonly cacheHits = new Counter({
    name: 'gateway_cache_hits_total',
    help: 'Cache lookups answered by the cache, by entity',
    labelNames: ['entity'] as const,
    registers: [this.registry],
  });

  readonly cacheMisses = new Counter({
    name: 'gateway_cache_misses_total',
    help: 'Cache lookups that went to Postgres, by entity',
    labelNames: ['entity'] as const,
    registers: [this.registry],
  });

  readonly cacheLocalHits = new Counter({
    name: 'gateway_cache_local_hits_total',
    help: 'Cache lookups answered by the in-process tier, without a Redis round trip (part of gateway_cache_hits_total)',
    registers: [this.registry],
  });

  readonly cacheFillsRefused = new Counter({
    name: 'gateway_cache_fills_refused_total',
    help: 'Rows read from Postgres not written to the cache by the admission policy (CACHE_ADMISSION), by entity',
    labelNames: ['entity'] as const,
    registers: [this.registry],
  });

  readonly responseCache = new Counter({
    name: 'gateway_response_cache_total',
    help: 'Response cache lookups (hit, miss) and offers (stored, uncacheable, refused: rows changed meanwhile, not_admitted: first computation under CACHE_ADMISSION=second-read)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly compiledRuns = new Counter({
    name: 'gateway_compiled_runs_total',
    help: 'Operations (lookups and analytics) answered by a compiled run (graphql-jit) without Apollo, rather than by Apollo or the response cache',
    registers: [this.registry],
  });

  readonly readsJoined = new Counter({
    name: 'gateway_reads_joined_total',
    help: "Ids a request did not read itself because another request's read of them was in flight, by entity",
    labelNames: ['entity'] as const,
    registers: [this.registry],
  });

  readonly cacheErrors = new Counter({
    name: 'gateway_cache_errors_total',
    help: 'Cache calls that failed or timed out and were answered from Postgres instead',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });

  readonly sqlStatements = new Counter({
    name: 'gateway_sql_statements_total',
    help: 'SQL statements sent to Postgres, by statement name and outcome',
    labelNames: ['statement', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly sqlDuration = new Histogram({
    name: 'gateway_sql_duration_seconds',
    help: 'SQL statement latency by statement name',
    labelNames: ['statement'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });

  /** Set by the Postgres source; read on each scrape. */
  poolStats?: () => { total: number; idle: number; waiting: number };

  readonly poolConnections = new Gauge({
    name: 'gateway_pg_pool_connections',
    help: 'Postgres pool connections by state (total, idle, waiting requests)',
    labelNames: ['state'] as const,
    registers: [this.registry],
    collect: () => {
      const stats = this.poolStats?.();
      if (!stats) return;
      for (const [state, value] of Object.entries(stats)) this.poolConnections.set({ state }, value);
    },
  });

  readonly feedState = new Gauge({
    name: 'gateway_feed_state',
    help: 'Change feed state of this process: 1 for the current one of off, standby, streaming',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });

  readonly feedTransactions = new Counter({
    name: 'gateway_feed_transactions_total',
    help: 'Committed transactions received from the change feed',
    registers: [this.registry],
  });

  readonly feedBatchDuration = new Histogram({
    name: 'gateway_feed_batch_duration_seconds',
    help: 'Time a feed consumer took for one batch of transactions, by consumer',
    labelNames: ['consumer'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });

  /** Set by the change feed; read on each scrape (bytes need a query, seconds do not). */
  feedLagBytesNow?: () => Promise<number | null>;
  feedLagSecondsNow?: () => number;

  readonly feedLagBytes = new Gauge({
    name: 'gateway_feed_lag_bytes',
    help: 'WAL written since the feed slot\'s acknowledged position',
    registers: [this.registry],
    collect: async () => {
      const bytes = await this.feedLagBytesNow?.();
      if (bytes != null) this.feedLagBytes.set(bytes);
    },
  });

  readonly feedLagSeconds = new Gauge({
    name: 'gateway_feed_lag_seconds',
    help: 'Age of the oldest transaction received from the feed and not yet handled by every consumer (0 when caught up)',
    registers: [this.registry],
    // Its own collect: set from another gauge's, it would show the previous scrape's value.
    collect: () => {
      if (this.feedLagSecondsNow) this.feedLagSeconds.set(this.feedLagSecondsNow());
    },
  });

  readonly riskScored = new Counter({
    name: 'gateway_risk_scored_total',
    help: 'Invoices scored, by band and source (live from the feed, or backfill)',
    labelNames: ['band', 'source'] as const,
    registers: [this.registry],
  });

  readonly riskBackfillRemaining = new Gauge({
    name: 'gateway_risk_backfill_remaining',
    help: 'Invoices that existed before the feed started and are not scored yet',
    registers: [this.registry],
  });

  readonly cacheInvalidations = new Counter({
    name: 'gateway_cache_invalidations_total',
    help: 'Cache entries invalidated because the feed saw their row change, by entity',
    labelNames: ['entity'] as const,
    registers: [this.registry],
  });

  readonly subscriptions = new Gauge({
    name: 'gateway_subscriptions_active',
    help: 'Active GraphQL subscriptions on this process',
    registers: [this.registry],
  });

  readonly subscriptionEvents = new Counter({
    name: 'gateway_subscription_events_total',
    help: 'Events sent to subscribers, and subscriptions ended because their subscriber fell too far behind',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly analyticsQueries = new Counter({
    name: 'gateway_analytics_queries_total',
    help: 'Analytics queries (invoiceStats, segmentStats) by the engine that answered (LAKE or POSTGRES; REPLAY: a kept response proven still exact and sent again)',
    labelNames: ['engine'] as const,
    registers: [this.registry],
  });

  readonly analyticsDuration = new Histogram({
    name: 'gateway_analytics_duration_seconds',
    help: 'Analytics latency (invoiceStats, segmentStats) by engine',
    labelNames: ['engine'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  readonly analyticsStageDuration = new Histogram({
    name: 'gateway_analytics_stage_seconds',
    help:
      'Where invoiceStats and joined queries spend their time, by stage: snapshot (the Postgres transaction and window), barrier (waiting for the feed to record every earlier change), ' +
      'changes (what the lake lacks), live (fresh invoices read from Postgres), lake (DuckDB: the lake\u2019s groups, or a joined query\u2019s join), postgres (Postgres answering alone)',
    labelNames: ['stage'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });

  readonly analyticsBarriers = new Counter({
    name: 'gateway_analytics_barriers_total',
    help:
      'Lake queries\u2019 barriers passed (and kept few-customer answers\u2019, which only recorded or decoded pass): recorded (this gateway\u2019s feed had recorded ' +
      'past the snapshot before it began: the change list is read in it), decoded (the feed reported the WAL decoded past the snapshot; nothing written) ' +
      'or written (a logical message written and flushed, then passed)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly analyticsFreshReads = new Counter({
    name: 'gateway_analytics_fresh_reads_total',
    help:
      'Lake queries with invoices above the export\u2019s highest id, by where those came from: feed (kept in memory by this gateway\u2019s change feed) ' +
      'or postgres (read in the query\u2019s snapshot: another gateway holds the feed, or it started after the export)',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly analyticsFewAnswers = new Counter({
    name: 'gateway_analytics_few_answers_total',
    help: 'invoiceStats answers for a few customers: kept (asked of Postgres and kept by this gateway\u2019s change feed), served (a kept one, proven current), stale (kept, but a commit touched its customers), replayed (a served one whose whole response was kept too: no GraphQL work; counted in served as well)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly analyticsWholeAnswers = new Counter({
    name: 'gateway_analytics_whole_answers_total',
    help: 'invoiceStats pages and whole answers: kept (a paging client\u2019s whole answer computed once and kept), served (a later page sliced from it), stale (kept, but invoices changed since)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly analyticsLakeReplays = new Counter({
    name: 'gateway_analytics_lake_replays_total',
    help: 'invoiceStats responses made from the lake and asked again with the same request: replayed (the lake proven unchanged for it: its kept text sent with the new asOf, no GraphQL work), stale (invoices changed since, an export or a new month: answered again), unproven (the feed did not record up to the moment in time, or the proof failed: answered again)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly lakeExports = new Counter({
    name: 'gateway_lake_exports_total',
    help: 'Lake export rounds by outcome (exported, unchanged, busy, not recording, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly lakeExportedRows = new Counter({
    name: 'gateway_lake_exported_rows_total',
    help: 'Invoice rows written to the lake',
    registers: [this.registry],
  });

  readonly lakeGeneration = new Gauge({
    name: 'gateway_lake_generation',
    help: 'The lake generation this process exported last',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Sum of a counter over all its label sets; tests use it to count SQL statements. */
  /** The sum of a counter over its label values, or over those matching `labels`. */
  async total(counter: Counter<string>, labels: Readonly<Record<string, string>> = {}): Promise<number> {
    const { values } = await counter.get();
    return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
  }
}
