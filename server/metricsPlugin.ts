import type { ApolloServerPlugin } from '@apollo/server';
import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';

/** Records one operation: its count, latency and, with LOG_LEVEL=debug, a log line. */
export type OperationRecorder = (operationName: string | null | undefined, failed: boolean, startedMs: number) => void;

export function operationRecorder(metrics: Metrics, logger: Logger): OperationRecorder {
  const labels = new OperationLabels();
  const logRequests = logger.isLevelEnabled('debug');
  return (operationName, failed, startedMs) => {
    const operation = labels.label(operationName);
    metrics.graphqlRequests.inc({ operation, outcome: failed ? 'error' : 'ok' });
    const seconds = (performance.now() - startedMs) / 1000;
    metrics.graphqlDuration.observe({ operation }, seconds);
    if (logRequests) logger.debug({ operation: operationName ?? null, ms: seconds * 1000, outcome: failed ? 'error' : 'ok' }, 'graphql operation');
  };
}

/** Counts and times every operation Apollo runs (the response cache records its own answers alike). */
export function metricsPlugin(record: OperationRecorder): ApolloServerPlugin {
  return {
    async requestDidStart() {
      const started = performance.now();
      let failed = false;
      return {
        async didEncounterErrors() {
          failed = true;
        },
        async willSendResponse({ operationName }) {
          record(operationName, failed, started);
        },
      };
    },
  };
}

/**
 * Operation names come from clients; past this many distinct names they are counted as `other`
 * so a client cannot blow up the metric's cardinality.
 */
const MAX_OPERATION_LABELS = 200;

class OperationLabels {
  private readonly seen = new Set<string>();

  label(operationName: string | null | undefined): string {
    const name = (operationName ?? 'anonymous').slice(0, 64);
    if (this.seen.has(name)) return name;
    if (this.seen.size >= MAX_OPERATION_LABELS) return 'other';
    this.seen.add(name);
    return name;
  }
}
