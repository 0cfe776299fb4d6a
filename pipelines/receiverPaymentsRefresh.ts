import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { ReceiverPayments } from '../sources/lake/receiverPayments.js';
import type { ReceiverPaymentsStore } from '../sources/postgres/receiverPaymentsStore.js';

export interface ReceiverPaymentsRefreshOptions {
  readonly lake: ReceiverPayments;
  readonly store: ReceiverPaymentsStore;
  /** Where the CSV between DuckDB and Postgres is written. */
  readonly stagingDir: string;
  /** How often to look for new payments or profiles files (and a new month). */
  readonly intervalMs: number;
  readonly logger: Logger;
}

export type RefreshOutcome = 'refreshed' | 'current' | 'failed';

/**
 * Keeps risk_receiver_payment_months in step with the lake's payments and profiles: refreshed
 * when a file set or the month changes, by the feed holder alone (the risk scorer runs it), so
 * replicas never race to replace it. The invoices come from one Postgres snapshot through COPY
 * (a sequential read, streamed to a file), not from the lake: the analytics path falls back to
 * reading invoices into memory while the lake is not exported or current, which at 10M invoices
 * is more than the heap holds, and the first refresh runs before the first export.
 */
export interface ReceiverPaymentsRefresh {
  /** One look: refreshes if anything it reads changed. Never throws: failures are logged once. */
  refresh(): Promise<RefreshOutcome>;
  /** Looks every interval until `signal` aborts. */
  keepFresh(signal: AbortSignal): Promise<void>;
}

export function createReceiverPaymentsRefresh(options: ReceiverPaymentsRefreshOptions): ReceiverPaymentsRefresh {
  const log = options.logger.child({ component: 'receiver-payments' });
  let lastError = '';
  let running: Promise<RefreshOutcome> | undefined;

  const refreshNow = async (): Promise<RefreshOutcome> => {
    try {
      const [wanted, stored] = await Promise.all([options.lake.fingerprint(), options.store.fingerprint()]);
      if (wanted === stored) return 'current';
      await mkdir(options.stagingDir, { recursive: true });
      const stem = path.join(options.stagingDir, `receiver-payments-${process.pid}-${Date.now()}`);
      const [invoices, counts] = [`${stem}-invoices.csv`, `${stem}-counts.csv`];
      try {
        const started = performance.now();
        // No payment at all: nothing to count, and no reason to read every invoice.
        if (await options.lake.hasPayments()) await options.store.copyInvoices(invoices);
        else await writeFile(invoices, '');
        const made = await options.lake.writeCsv(invoices, counts);
        await options.store.replace(counts, made.fingerprint);
        log.info(
          { receiverMonths: made.rows, dueInvoices: made.dueInvoices, before: made.cutoffMonth, ms: Math.round(performance.now() - started) },
          "receivers' payment behaviour refreshed for the risk model",
        );
      } finally {
        await Promise.all([rm(invoices, { force: true }), rm(counts, { force: true })]);
      }
      lastError = '';
      return 'refreshed';
    } catch (err) {
      // An object store that is down must not flood the log every interval.
      const message = errorMessage(err);
      if (message !== lastError) log.warn({ err }, "receivers' payment behaviour not refreshed; scores use the last refresh");
      lastError = message;
      return 'failed';
    }
  };

  const refresh = () => (running ??= refreshNow().finally(() => (running = undefined)));

  return {
    refresh,
    async keepFresh(signal) {
      while (!signal.aborted) {
        await sleep(options.intervalMs, undefined, { signal }).catch(() => undefined);
        if (!signal.aborted) await refresh();
      }
    },
  };
}
