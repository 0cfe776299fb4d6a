import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { suiteDatabase } from './fixtures/migratedDatabase.js';
import { eventually } from './fixtures/eventually.js';
import { createLakeChangeRecorder } from '../pipelines/lakeChanges.js';
import { createFreshInvoices } from '../sources/lake/freshInvoices.js';
import type { Database } from '../sources/postgres/database.js';
import { finalizeExport } from '../sources/postgres/lakeExportStore.js';
import { createLakeStore, createRecordedPosition } from '../sources/postgres/lakeStore.js';
import { formatLsn, parseLsn, type FeedChange, type FeedTransaction } from '../sources/postgres/replication.js';

const skip = await missingServices('postgres');

/**
 * What the lake records of its changes when the feed's recorder, an export finishing and a
 * restarting stream meet. Each of these left an entry that said an invoice could not be in the
 * lake while the lake held a version of it: that invoice was then counted twice, or counted
 * after its delete.
 */
describe('lake changes recorded under races', { skip }, () => {
  const suite = suiteDatabase('lake_races');
  let db: Database;

  before(async () => {
    db = suite.db();
    await db.pool.query(`UPDATE lake_state SET generation = 1, manifest_key = 'manifests/000000000001.json', recording = true`);
  });

  interface State {
    generation: number;
    resets: string;
    snapshot: string;
  }
  /** What an export's snapshot reads of lake_state, with the snapshot. */
  const exportSnapshot = async (): Promise<State> =>
    (await db.pool.query<State>(`SELECT generation::int AS generation, resets::text AS resets, pg_current_snapshot()::text AS snapshot FROM lake_state`)).rows[0]!;
  /** A transaction id that commits at once (32 bits, as the feed reports it). */
  const committedXid = async () => Number((await db.pool.query<{ xid: string }>(`SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`)).rows[0]!.xid);
  const entry = async (id: string) =>
    (await db.pool.query<{ changed: boolean; xid: string }>(`SELECT changed, (xid::text::bigint & 4294967295)::text AS xid FROM lake_changes WHERE invoice_id = $1`, [id])).rows[0];
  const finalize = (from: State, maxInvoiceId: string) =>
    finalizeExport(db, {
      snapshot: from.snapshot,
      fromGeneration: from.generation,
      resets: from.resets,
      generation: from.generation + 1,
      manifestKey: `manifests/${String(from.generation + 1).padStart(12, '0')}.json`,
      exportedAt: new Date().toISOString(),
      maxInvoiceId,
    });

  it('an export that finishes while the recorder writes sees what it wrote', async () => {
    const store = createLakeStore(db, createRecordedPosition());
    // Invoice 500 inserted (recorded as one the lake cannot hold), then exported by a snapshot that saw it.
    await store.record([{ invoiceId: '500', changed: false, xid: await committedXid() }], '0/1');
    const snapshot = await exportSnapshot();
    // The recorder's own statement for an update of 500 committed after that snapshot, held up
    // midway: another transaction holds 500's entry, so the statement has locked lake_state (its
    // main UPDATE runs before its WITH's upsert) and waits there.
    const waiting = async (n: number, what: string) =>
      eventually(
        async () =>
          (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0]!.n >= n,
        what,
      );
    const holder = await db.pool.connect();
    let recorded: Promise<void> | undefined;
    let finalized: Promise<boolean> | undefined;
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM lake_changes WHERE invoice_id = 500 FOR UPDATE`);
      recorded = store.record([{ invoiceId: '500', changed: false, xid: await committedXid() }], '0/2');
      await waiting(1, 'the recorder to wait for the entry');
      // The export finishes meanwhile: it waits for lake_state; then the recorder goes on and commits.
      finalized = finalize(snapshot, '1000');
      await waiting(2, 'the export to wait for lake_state');
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    await recorded;
    assert.equal(await finalized, true);
    assert.equal(
      (await entry('500'))?.changed,
      true,
      'the lake now holds the version the export saw, and the entry must say the lake may hold it stale',
    );
  });

  it('an export begun before the lake was reset does not switch it, at generation 0 too', async () => {
    const store = createLakeStore(db, createRecordedPosition());
    await db.transaction((tx) => store.initialize(tx));
    await db.pool.query(`UPDATE lake_state SET recording = true`);
    const begun = await exportSnapshot();
    assert.equal(begun.generation, 0);
    // A new slot: the changes committed since the export's snapshot are never recorded.
    await db.transaction((tx) => store.initialize(tx));
    assert.equal(await finalize(begun, '1000'), false, 'the reset voids the export');
    assert.equal(await finalize(await exportSnapshot(), '1000'), true, 'an export begun after it switches');
  });

  it('a replayed stream does not record its transactions again', async () => {
    const store = createLakeStore(db, createRecordedPosition());
    const recorder = createLakeChangeRecorder(store, createFreshInvoices(1000));
    const now = await db.pool.query<{ lsn: string }>(`SELECT greatest(pg_current_wal_lsn(), (SELECT position FROM lake_state))::text AS lsn`);
    const base = parseLsn(now.rows[0]!.lsn);
    const transaction = (offset: bigint, xid: number, changes: FeedChange[]): FeedTransaction => ({ lsn: base + offset, xid, commitTime: new Date(), changes, messages: [] });
    const row = (id: string) => ({ invoice_id: id, issuer_id: 1, receiver_id: 2, amount_usd: '10.00', issue_date: new Date() });
    // Invoice 600, in the lake, deleted and then inserted again under its id.
    const deleted = transaction(1n, await committedXid(), [{ table: 'invoices', op: 'delete', row: null, key: { invoice_id: '600' } }]);
    const reinserted = transaction(2n, await committedXid(), [{ table: 'invoices', op: 'insert', row: row('600'), key: null }]);
    await recorder.resume!();
    await recorder.handle([deleted]);
    await recorder.handle([reinserted]);
    assert.deepEqual(await entry('600'), { changed: true, xid: String(reinserted.xid) });

    // The stream starts again from an older acknowledgement: both come again, then a new one.
    const updated = transaction(3n, await committedXid(), [{ table: 'invoices', op: 'update', row: row('601'), key: null }]);
    await recorder.resume!();
    await recorder.handle([deleted]);
    assert.deepEqual(await entry('600'), { changed: true, xid: String(reinserted.xid) }, 'the replayed delete does not set the entry back to its transaction');
    await recorder.handle([reinserted, updated]);
    assert.deepEqual(await entry('600'), { changed: true, xid: String(reinserted.xid) });
    assert.deepEqual(await entry('601'), { changed: true, xid: String(updated.xid) }, 'a transaction past the recorded position is recorded');
    assert.equal(await store.recordedPosition(), formatLsn(updated.lsn));
  });

  it('keeps fresh invoices only for an export begun after its stream, and not past a stream that ended', async () => {
    const store = createLakeStore(db, createRecordedPosition());
    const fresh = createFreshInvoices(1);
    const recorder = createLakeChangeRecorder(store, fresh);
    const now = await db.pool.query<{ lsn: string }>(`SELECT greatest(pg_current_wal_lsn(), (SELECT position FROM lake_state))::text AS lsn`);
    const base = parseLsn(now.rows[0]!.lsn);
    const row = (id: string) => ({ invoice_id: id, issuer_id: 1, receiver_id: 2, amount_usd: '10.00', issue_date: new Date() });
    const inserts = async (offset: bigint, ...ids: string[]): Promise<FeedTransaction> => ({
      lsn: base + offset,
      xid: await committedXid(),
      commitTime: new Date(),
      changes: ids.map((id) => ({ table: 'invoices', op: 'insert', row: row(id), key: null })),
      messages: [],
    });
    // An export's snapshot in a cluster where no transaction older than now still runs (other
    // test files' open transactions hold the real xmin back, for as long as they run).
    const quietSnapshot = async () => {
      const { rows: [now] } = await db.pool.query<{ xid: string }>(`SELECT pg_current_xact_id()::text AS xid`);
      return `${now!.xid}:${now!.xid}:`;
    };
    const before = await quietSnapshot();
    await recorder.resume!();
    const after = await quietSnapshot();
    assert.equal(fresh.covers({ generation: 1, snapshot: before }), false, 'an export begun before the stream');
    assert.equal(fresh.covers({ generation: 1, snapshot: after }), true, 'an export begun after it');
    // Past the bound (one change): dropped, and anchored again once the batch is recorded...
    await recorder.handle([await inserts(1n, '700', '701')]);
    assert.equal(fresh.covers({ generation: 1, snapshot: after }), false, 'what was dropped is not answered for');
    assert.equal(fresh.covers({ generation: 1, snapshot: await quietSnapshot() }), true, 'an export begun after the drop');
    // ...unless the stream ended meanwhile: no stream, nothing kept, nothing answered.
    const overflowing = recorder.handle([await inserts(2n, '702', '703')]);
    recorder.streamEnded!();
    await overflowing;
    assert.equal(fresh.covers({ generation: 1, snapshot: await quietSnapshot() }), false, 'anchored after its stream ended');
  });
});
