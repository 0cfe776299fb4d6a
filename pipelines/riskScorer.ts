import type { Logger } from 'pino';
import type { Metrics } from '../core/metrics.js';
import type { RiskBackfillStore } from '../sources/postgres/riskBackfillStore.js';
import type { FeatureRow, LiveInvoice, RiskScoreRecord, RiskStore, ScoreToWrite } from '../sources/postgres/riskStore.js';
import type { FeedTransaction } from '../sources/postgres/replication.js';
import type { FeedConsumer } from './changeFeed.js';
import type { ReceiverPaymentsRefresh } from './receiverPaymentsRefresh.js';
import { FEATURES, type RiskModel } from './riskModel.js';

export interface RiskScorerOptions {
  readonly model: RiskModel;
  readonly store: RiskStore;
  readonly backfillStore: RiskBackfillStore;
  /** Pushes scores to subscribers; called after they are committed. */
  readonly publish: (scores: readonly RiskScoreRecord[]) => Promise<void>;
  /** Invoices per backfill batch (whole issuers, so a batch may hold more). */
  readonly backfillBatch: number;
  /** Keeps the receivers' payment behaviour current (absent: every receiver has no history). */
  readonly receiverPayments?: ReceiverPaymentsRefresh;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/**
 * The feed consumer that scores every inserted invoice, in batches: features for the batch in
 * one statement, the model in process, scores and aggregates in one transaction, then the push.
 * A replayed invoice (after a crash) is not scored twice: its insert conflicts, its stored score
 * is pushed again, and subscribers drop what they already had by cursor.
 */
export function createRiskScorer(options: RiskScorerOptions): FeedConsumer {
  const { model, store, backfillStore, logger, metrics } = options;
  const log = logger.child({ component: 'risk' });
  // Scores store their reasons in the order the model's features were recorded in.
  let registered: Promise<void> | undefined;
  const register = () => (registered ??= store.registerModel(model.version, FEATURES).catch((err: unknown) => {
    registered = undefined;
    throw err;
  }));
  let lastPrune = 0;

  const toWrite = (rows: readonly FeatureRow[]): ScoreToWrite[] =>
    rows.map((row) => {
      const assessment = model.score({
        invoiceId: row.invoiceId,
        amountUsd: row.amountUsd,
        selfInvoice: row.issuerId === row.receiverId,
        issuerHistory: { n: row.issuerN, sum: row.issuerSum, sumSquares: row.issuerSumSquares },
        globalHistory: { n: row.globalN, sum: row.globalSum, sumSquares: row.globalSumSquares },
        firstPair: row.firstPair,
        lastHourInvoices: row.lastHourInvoices,
        historyHours: row.historyHours,
        receiverPayments: {
          dueInvoices: row.receiverDueInvoices,
          lateInvoices: row.receiverLateInvoices,
          settledLate: row.receiverSettledLate,
          daysLate: row.receiverDaysLate,
        },
        allPayments: { dueInvoices: row.allDueInvoices, lateInvoices: row.allLateInvoices, settledLate: row.allSettledLate, daysLate: row.allDaysLate },
      });
      const reason = new Map(assessment.reasons.map((r) => [r.feature, r]));
      return {
        invoiceId: row.invoiceId,
        issuerId: row.issuerId,
        receiverId: row.receiverId,
        score: assessment.score,
        band: assessment.band,
        modelVersion: assessment.modelVersion,
        reasons: assessment.reasons,
        featureValues: FEATURES.map((f) => reason.get(f)!.value),
        contributions: FEATURES.map((f) => reason.get(f)!.contribution),
      };
    });

  async function scoreLive(invoices: ReadonlyMap<string, LiveInvoice>): Promise<void> {
    if (invoices.size === 0) return;
    await register();
    const features = await store.liveFeatures([...invoices.values()]);
    const inserted = await store.writeLive(toWrite(features), invoices);
    for (const score of inserted) metrics.riskScored.inc({ band: score.band, source: 'live' });
    // Scored before a crash, pushed or not: pushed (again); subscribers drop duplicates by cursor.
    const insertedIds = new Set(inserted.map((s) => s.invoiceId));
    const earlier = features.length > inserted.length ? await store.byInvoiceIds(features.map((f) => f.invoiceId).filter((id) => !insertedIds.has(id))) : [];
    const replayed = earlier.filter((s) => s.liveSeq !== null).sort((a, b) => Number(BigInt(a.liveSeq!) - BigInt(b.liveSeq!)));
    await options.publish([...replayed, ...inserted]);
  }

  return {
    name: 'risk',
    initialize: (tx) => backfillStore.initialize(tx),

    async handle(batch: readonly FeedTransaction[]) {
      // In order, so that a TRUNCATE drops what came before it and a DELETE cancels an INSERT.
      // The rows are taken from the feed, not read again: a commit can reach the feed a moment
      // before other sessions see it.
      let pending = new Map<string, LiveInvoice>();
      const deleted = new Set<string>();
      for (const tx of batch) {
        for (const change of tx.changes) {
          if (change.table !== 'invoices') continue;
          if (change.op === 'insert') {
            const invoice = liveInvoice(change.row!);
            pending.set(invoice.invoiceId, invoice);
          } else if (change.op === 'delete') {
            const id = String(change.key!.invoice_id);
            pending.delete(id);
            deleted.add(id);
          } else if (change.op === 'truncate') {
            pending = new Map();
            deleted.clear();
            await store.reset();
            log.info('invoices truncated: scores and aggregates reset');
          }
        }
      }
      await store.deleteScores([...deleted]);
      await scoreLive(pending);
      if (Date.now() - lastPrune > 60_000) {
        lastPrune = Date.now();
        await store.pruneMinutes();
      }
    },

    async whileHolding(signal) {
      // The backfill scores with the receivers' payment behaviour: bring it up to date first.
      await options.receiverPayments?.refresh();
      await backfill(signal);
      await options.receiverPayments?.keepFresh(signal);
    },
  };

  async function backfill(signal: AbortSignal): Promise<void> {
    let remaining = await backfillStore.remaining();
    metrics.riskBackfillRemaining.set(remaining);
    if (remaining === 0) return;
    await register();
    const total = remaining;
    const started = performance.now();
    let lastLog = started;
    log.info({ invoices: total }, 'risk backfill started: scoring invoices that existed before the feed (not pushed to subscribers)');
    let scored = 0;
    const scoreCounted = (rows: FeatureRow[]) => {
      const scores = toWrite(rows);
      for (const score of scores) metrics.riskScored.inc({ band: score.band, source: 'backfill' });
      return scores;
    };
    while (!signal.aborted) {
      const n = await backfillStore.batch(options.backfillBatch, scoreCounted);
      if (n === 0) break;
      scored += n;
      remaining = Math.max(0, remaining - n);
      metrics.riskBackfillRemaining.set(remaining);
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        log.info({ scored, total, percent: Math.round((100 * scored) / total) }, 'risk backfill progress');
      }
    }
    if (signal.aborted) return;
    metrics.riskBackfillRemaining.set(0);
    const seconds = (performance.now() - started) / 1000;
    log.info({ scored, seconds: Math.round(seconds * 10) / 10, perSecond: Math.round(scored / seconds) }, 'risk backfill done');
  }
}

/** An invoices row from the feed (int8 and numeric arrive as text, timestamptz as a Date). */
function liveInvoice(row: Readonly<Record<string, unknown>>): LiveInvoice {
  const issueDate = row.issue_date;
  return {
    invoiceId: String(row.invoice_id),
    issueDate: issueDate instanceof Date ? issueDate.toISOString() : String(issueDate),
    issuerId: String(row.issuer_id),
    receiverId: String(row.receiver_id),
    amountUsd: String(row.amount_usd),
  };
}
