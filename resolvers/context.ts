import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';
import type { FeedStatus } from '../pipelines/changeFeed.js';
import type { EventBus } from '../sources/pubsub/eventBus.js';
import type { InvoiceStore } from '../sources/postgres/invoiceStore.js';
import type { RiskStore } from '../sources/postgres/riskStore.js';
import type { Joined } from '../sources/lake/joined.js';
import type { AnswerBasis, StatsEngine } from '../sources/lake/statsEngine.js';
import type { Loaders } from './loaders.js';
import type { Viewer } from './viewer.js';

/** An invoiceStats answer that can be proven exact again (StatsAnswer.kept), at `asOf`. */
export interface KeptStats {
  readonly basis: AnswerBasis;
  readonly asOf: string;
}

/** What every resolver receives; built fresh for each request (and each subscription). */
export interface Context {
  /** Who asks: every rule in access.ts is about the viewer. */
  readonly viewer: Viewer;
  readonly loaders: Loaders;
  readonly invoices: InvoiceStore;
  readonly risk: RiskStore;
  readonly analytics: StatsEngine;
  readonly joined: Joined;
  readonly events: EventBus;
  readonly feed: { status(): FeedStatus };
  readonly limits: { readonly subscriptionQueue: number };
  readonly metrics: Metrics;
  readonly logger: Logger;
  /**
   * What the pipeline learnt of this operation: the cost charged to the client's budget (set once
   * charged, so it is charged once), which the response cache charges again for a stored answer. An object of its own because Apollo
   * runs each operation with a shallow copy of the context. `stats`: for each invoiceStats field
   * run, what its answer rests on and its asOf (null: nothing it can be proven by), by which the
   * lean path replays the whole response (server/keptAnalytics.ts).
   */
  readonly operation: { cost?: number; stats?: (KeptStats | null)[] };
}
