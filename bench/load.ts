import { createHistogram } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { machineBusySeconds } from './machineCpu.js';

export interface LoadOptions {
  readonly url: string;
  readonly connections: number;
  /** Seconds. */
  readonly duration: number;
  /** Sent with every request (an Authorization header). */
  readonly headers?: Readonly<Record<string, string>>;
  /** A fresh request body for every request. */
  readonly body: () => string;
  /** Why a 200 response body is wrong, or undefined when it is right. */
  readonly check: (body: string) => string | undefined;
}

export interface LoadResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /**
   * Microseconds of CPU the whole machine spent per request during the run: every process,
   * servers under test, Postgres, Redis and this load generator (see machineCpu.ts).
   */
  readonly cpuUsPerRequest: number;
  /** Non-200 responses, wrong bodies, connection errors and timeouts. */
  readonly errors: number;
  /** The first failure seen, for the report. */
  readonly firstError?: string;
}

/**
 * Runs autocannon against a GraphQL endpoint and checks every response. Latency is recorded here
 * in microseconds because autocannon's own histogram keeps whole milliseconds, too coarse for
 * lookups that take one or two.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  let errors = 0;
  let firstError: string | undefined;
  const fail = (reason: string) => {
    errors++;
    firstError ??= reason.slice(0, 300);
  };
  const latency = createHistogram();
  const busyBefore = machineBusySeconds();
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    pipelining: 1,
    duration: options.duration,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: new URL(options.url).pathname,
        headers: { 'content-type': 'application/json', ...options.headers },
        setupRequest: (request) => ({ ...request, body: options.body() }),
        onResponse: (status, body) => {
          if (status !== 200) return fail(`HTTP ${status}: ${body}`);
          const problem = options.check(body);
          if (problem) fail(problem);
        },
      },
    ],
  });
  instance.on('response', (_client, _status, _bytes, ms) => latency.record(Math.max(1, Math.round(ms * 1000))));
  instance.on('reqError', (error) => fail(`request failed: ${error.message}`));
  const result = await instance;
  const busy = machineBusySeconds() - busyBefore;
  return {
    requestsPerSecond: result.requests.total / result.duration,
    p50Ms: latency.percentile(50) / 1000,
    p99Ms: latency.percentile(99) / 1000,
    cpuUsPerRequest: result.requests.total > 0 ? (busy * 1e6) / result.requests.total : NaN,
    errors,
    firstError,
  };
}

/** A check for GraphQL responses: no `errors`, and `valid(data)` holds. */
export function graphqlCheck<TData>(valid: (data: TData) => string | undefined): (body: string) => string | undefined {
  return (body) => {
    let parsed: { data?: TData | null; errors?: unknown[] };
    try {
      parsed = JSON.parse(body) as typeof parsed;
    } catch {
      return `not JSON: ${body}`;
    }
    if (parsed.errors?.length) return `GraphQL errors: ${JSON.stringify(parsed.errors)}`;
    if (!parsed.data) return `no data: ${body}`;
    return valid(parsed.data);
  };
}
