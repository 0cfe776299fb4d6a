import type { ApolloServerPlugin } from '@apollo/server';
import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';

/** Counts and times every operation; with LOG_LEVEL=debug also logs one line per operation. */
export function metricsPlugin(metrics: Metrics, logger: Logger): ApolloServerPlugin {
  const labels = new OperationLabels();
  const logRequests = logger.isLevelEnabled('debug');
  return {
    async requestDidStart() {
      const started = performance.now();
      let failed = false;
      return {
        async didEncounterErrors() {
          failed = true;
        },
        async willSendResponse({ operationName }) {
          const operation = labels.label(operationName);
          metrics.graphqlRequests.inc({ operation, outcome: failed ? 'error' : 'ok' });
          const seconds = (performance.now() - started) / 1000;
          metrics.graphqlDuration.observe({ operation }, seconds);
          if (logRequests) logger.debug({ operation: operationName ?? null, ms: seconds * 1000, outcome: failed ? 'error' : 'ok' }, 'graphql operation');
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
