/**
 * The gateway's Prometheus endpoint, read once. `total(series)` adds up the samples of one
 * series: a metric's name (every label set, as `gateway_cache_hits_total`) or a name with its
 * whole label set (as `gateway_analytics_stage_seconds_sum{stage="barrier"}`).
 */
export async function scrapeMetrics(graphqlUrl: string): Promise<(series: string) => number> {
  const lines = (await (await fetch(new URL('/metrics', graphqlUrl), { signal: AbortSignal.timeout(10_000) })).text()).split('\n');
  return (series) =>
    lines
      .filter((line) => line.startsWith(series) && (line[series.length] === ' ' || line[series.length] === '{'))
      .reduce((total, line) => total + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}
