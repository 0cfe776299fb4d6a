import type { FewAnswers } from '../sources/lake/fewAnswers.js';
import type { FreshInvoices } from '../sources/lake/freshInvoices.js';
import type { LakeChange, LakeStore } from '../sources/postgres/lakeStore.js';
import { formatLsn, parseLsn, type FeedTransaction, type Lsn } from '../sources/postgres/replication.js';
import type { FeedConsumer } from './changeFeed.js';

/**
 * The feed consumer that tells the lake what it does not hold yet: every invoice inserted,
 * updated or deleted since the export that saw it, with its transaction, and how far the feed
 * has been recorded (analytics wait for that position before they trust the lake). The fresh
 * invoices themselves are kept in `fresh`, and `few` drops the kept answers they touch, before
 * the position moves past them.
 */
export function createLakeChangeRecorder(store: LakeStore, fresh: FreshInvoices, few?: FewAnswers): FeedConsumer {
  // Transactions up to here were recorded before this stream began: a replay. Recorded again,
  // an older change would set its entry's transaction back (an export finishing between the
  // replayed delete and the replayed re-insert of an id would then drop the entry while the
  // lake still holds the deleted version), and a replayed TRUNCATE would reset the lake again.
  let recordedBefore: Lsn = 0n;
  /** This process's current stream: a re-anchoring of `fresh` by an older one's last batch is ignored. */
  let stream: object | undefined;
  const anchorFresh = async (kept: readonly { begin(from: string): void }[] = [fresh]) => {
    const current = stream;
    const xid = await store.nextXid();
    if (current && current === stream) for (const memory of kept) memory.begin(xid);
  };
  return {
    name: 'lake',
    initialize: (tx) => store.initialize(tx),
    async resume() {
      recordedBefore = parseLsn(await store.recordedPosition());
      // Taken once the stream has started: every transaction begun after it will be delivered.
      stream = {};
      await anchorFresh(few ? [fresh, few] : [fresh]);
      store.feedStreaming(true);
    },
    // Nothing to write: queries of this process wait for the position, other processes' barriers
    // for lake_state (moved by transactions, the idle tick's among them).
    caughtUp: (position) => store.caughtUp(position),
    streamEnded() {
      stream = undefined;
      fresh.end();
      few?.end();
      store.feedStreaming(false);
    },
    async handle(batch: readonly FeedTransaction[]) {
      // Replays too: the kept changes are complete only from the stream's start on.
      few?.add(batch);
      if (!fresh.add(batch)) await anchorFresh();
      const changes = new Map<string, LakeChange>();
      let truncatedAt: FeedTransaction | undefined;
      for (const tx of batch) {
        if (tx.lsn <= recordedBefore) continue;
        for (const change of tx.changes) {
          if (change.table !== 'invoices') continue;
          if (change.op === 'truncate') {
            truncatedAt = tx;
            changes.clear();
            continue;
          }
          // The first change of an invoice in this batch decides whether the lake may hold it:
          // an inserted id cannot be there; an updated or deleted one may.
          const newId = change.row ? String(change.row.invoice_id) : undefined;
          const oldId = change.key ? String(change.key.invoice_id) : undefined;
          const touched: [string, boolean][] = [];
          if (change.op === 'insert') touched.push([newId!, false]);
          else if (change.op === 'delete') touched.push([oldId!, true]);
          else if (oldId !== undefined && oldId !== newId) touched.push([oldId, true], [newId!, false]);
          else touched.push([newId!, true]);
          for (const [id, mayBeInLake] of touched) {
            changes.set(id, { invoiceId: id, changed: changes.get(id)?.changed ?? mayBeInLake, xid: tx.xid });
          }
        }
      }
      const position = formatLsn(batch.at(-1)!.lsn);
      if (truncatedAt) await store.forget(formatLsn(truncatedAt.lsn));
      if (changes.size > 0) await store.record([...changes.values()], position);
      else await store.advance(position);
    },
  };
}
