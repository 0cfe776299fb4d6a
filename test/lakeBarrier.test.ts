import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { suiteDatabase } from './fixtures/migratedDatabase.js';
import { memoryLogger } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { finalizeExport } from '../sources/postgres/lakeExportStore.js';
import { changesSelect, versionColumns, createLakeStore, WAL_POSITION, createRecordedPosition, decodedEnd, PASSIVE_WAIT_MS, UNFLUSHED_WAIT_BYTES, UNFLUSHED_WAIT_MS, type LakeStore, type RecordedPosition, type WalPosition } from '../sources/postgres/lakeStore.js';
import { formatLsn, parseLsn } from '../sources/postgres/replication.js';
import { createStatsStore } from '../sources/postgres/statsStore.js';
import { deadlineIn } from '../core/deadline.js';

const skip = await missingServices('postgres');

/**
 * The barrier analytics pass before they trust the lake: answered by this process's own feed
 * when it holds the slot (no read of lake_state), by lake_state when another gateway's feed
 * records, and refused when nothing records.
 */
describe('the lake barrier', { skip }, () => {
  const suite = suiteDatabase('lake_barrier');
  let db: Database;

  before(async () => {
    db = suite.db();
  });

  const currentLsn = async () => (await db.query<{ lsn: string }>({ name: 'test_lsn', text: 'SELECT pg_current_wal_lsn()::text AS lsn' }))[0]!.lsn;
  const recordedInLakeState = async () => (await db.query<{ position: string }>({ name: 'test_position', text: 'SELECT position::text FROM lake_state' }))[0]!.position;

  /** Waits for `barrier` while `record` moves a feed past the WAL's current end every 20 ms. */
  async function passedWhile<T>(barrier: Promise<T>, record: (lsn: string) => Promise<void> | void): Promise<T> {
    let settled = false;
    const outcome = barrier.finally(() => (settled = true));
    while (!settled) {
      await record(await currentLsn());
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return outcome;
  }

  it('is passed when this process\u2019s feed has recorded past it, without lake_state', async () => {
    const position = createRecordedPosition();
    const queries = createLakeStore(db, position);
    const before = await recordedInLakeState();
    assert.equal(await passedWhile(queries.recordedUpToNow(10_000), (lsn) => position.reached(lsn)), true);
    assert.equal(await recordedInLakeState(), before, 'lake_state was not moved: the local position answered');
  });

  it('is passed through lake_state when another gateway\u2019s feed records', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    const otherGateway: LakeStore = createLakeStore(db, createRecordedPosition());
    assert.equal(await passedWhile(queries.recordedUpToNow(10_000), (lsn) => otherGateway.advance(lsn)), true);
  });

  it('says whether a snapshot sees every recorded change, and moves its version with each batch recorded', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    const snapshotNow = async () => (await db.query<{ snapshot: string }>({ name: 'test_snapshot', text: 'SELECT pg_current_snapshot()::text AS snapshot' }))[0]!.snapshot;
    const first = await queries.version(await snapshotNow());
    assert.equal(first.seenBySnapshot, true);

    // A transaction in progress when `before` is taken commits, and its change is recorded.
    const late = await db.pool.connect();
    try {
      await late.query('BEGIN');
      const { rows: [{ xid }] } = await late.query<{ xid: string }>(`SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`);
      const before = await snapshotNow();
      await late.query('COMMIT');
      await queries.record([{ invoiceId: '424242', changed: false, xid: Number(xid) }], await currentLsn());

      const seenEarlier = await queries.version(before);
      assert.equal(seenEarlier.seenBySnapshot, false, 'the snapshot taken before the commit does not see it');
      assert.notEqual(seenEarlier.version, first.version, 'a recorded batch moves the version');
      const seenNow = await queries.version(await snapshotNow());
      assert.deepEqual(seenNow, { version: seenEarlier.version, seenBySnapshot: true });
      assert.equal((await queries.changesForQuery(before)).seenBySnapshot, false);
      assert.equal((await queries.changesForQuery(null)).seenBySnapshot, false, 'not asked: false');

      // A batch without invoice changes moves the position, not the version.
      await queries.advance(await currentLsn());
      assert.equal((await queries.version(await snapshotNow())).version, seenNow.version);
    } finally {
      late.release();
    }
  });

  it('says a snapshot does not see a change of a transaction that began after it', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    const snapshotNow = async () => (await db.query<{ snapshot: string }>({ name: 'test_snapshot', text: 'SELECT pg_current_snapshot()::text AS snapshot' }))[0]!.snapshot;
    const before = await snapshotNow();
    // Its xid is at or past the snapshot's xmax, in no xip list.
    const { rows: [{ xid }] } = await db.pool.query<{ xid: string }>(`SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`);
    await queries.record([{ invoiceId: '434343', changed: false, xid: Number(xid) }], await currentLsn());
    assert.equal((await queries.version(before)).seenBySnapshot, false);
    assert.equal((await queries.version(await snapshotNow())).seenBySnapshot, true);
  });

  it('asks whether a snapshot sees every change through the xid index, with 10,000 changes recorded and never analyzed', async () => {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      // 10,000 changes in this transaction, never analyzed: the planner knows nothing of them
      // (lake_changes between two exports). Only planned, not run.
      await client.query(`INSERT INTO lake_changes (invoice_id, changed, xid) SELECT 8000000 + g, false, pg_current_xact_id() FROM generate_series(1, 10000) g`);
      const { rows: [plan] } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(
        `EXPLAIN (FORMAT JSON) SELECT ${versionColumns('pg_current_snapshot()')} FROM (SELECT * FROM lake_state LIMIT 1) s`,
      );
      const scans = planNodes(plan!['QUERY PLAN'][0].Plan).filter((node) => node['Relation Name'] === 'lake_changes');
      assert.ok(scans.length >= 2, 'both probes read lake_changes');
      assert.deepEqual(scans.filter((node) => !/^Index (Only )?Scan$/.test(node['Node Type'])).map((node) => node['Node Type']), []);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('records an xid the feed decoded before Postgres counts it completed in the current epoch, not the one before', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    // The feed can record a commit while snapshots still see its xid as at or above their xmax.
    const { rows: [{ xmax }] } = await db.pool.query<{ xmax: string }>(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`);
    const ahead = BigInt(xmax) + 2n;
    await queries.record([{ invoiceId: '515151', changed: true, xid: Number(ahead & 0xffffffffn) }], await currentLsn());
    const { rows: [stored] } = await db.pool.query<{ xid: string }>(`SELECT xid::text FROM lake_changes WHERE invoice_id = 515151`);
    assert.equal(stored!.xid, String(ahead));
  });

  it('lists only the changes at or below the export’s highest id, and says whether any is above it', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    const { rows: [{ xid }] } = await db.pool.query<{ xid: string }>(`SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`);
    await db.pool.query(`UPDATE lake_state SET exported_max_id = 700000, exported_max_generation = generation`);
    try {
      const mine = (ids: string[]) => ids.filter((id) => id.startsWith('7000') || id.startsWith('6999'));
      assert.equal((await queries.changesForQuery(null)).above, null, 'nothing recorded above it yet: no range to read');
      await queries.record(
        [
          { invoiceId: '699999', changed: true, xid: Number(xid) },
          { invoiceId: '700001', changed: false, xid: Number(xid) },
          // Deleted, then inserted again under its id after an export's snapshot: a kept month file may hold it still.
          { invoiceId: '700002', changed: true, xid: Number(xid) },
        ],
        await currentLsn(),
      );
      const changes = await queries.changesForQuery(null);
      assert.equal(changes.above, '700000', 'the range starts past the highest id');
      assert.deepEqual(mine(changes.ids), ['699999'], 'invoices above the highest id are read as a range, not listed');
      assert.deepEqual(mine(changes.changed).sort(), ['699999', '700002'], 'a stale version is left out of the lake whatever its id');

      // A highest id recorded for another generation (a gateway from before it was tagged switched since): unknown.
      await db.pool.query(`UPDATE lake_state SET exported_max_generation = generation + 1`);
      const otherGeneration = await queries.changesForQuery(null);
      assert.equal(otherGeneration.above, null);
      assert.deepEqual(mine(otherGeneration.ids).sort(), ['699999', '700001', '700002']);

      // A lake exported before the highest id was kept: every change is listed.
      await db.pool.query(`UPDATE lake_state SET exported_max_id = NULL, exported_max_generation = NULL`);
      const unknown = await queries.changesForQuery(null);
      assert.equal(unknown.above, null);
      assert.deepEqual(mine(unknown.ids).sort(), ['699999', '700001', '700002']);
    } finally {
      await db.pool.query(`UPDATE lake_state SET exported_max_id = NULL, exported_max_generation = NULL`);
      await db.pool.query(`DELETE FROM lake_changes WHERE invoice_id IN (699999, 700001, 700002)`);
    }
  });

  it('an export’s finalize counts changes it did not see as possibly in the lake only at or below its highest id', async () => {
    const queries = createLakeStore(db, createRecordedPosition());
    const { rows: [before] } = await db.pool.query<{ generation: number; resets: string; recording: boolean; snapshot: string }>(
      `SELECT generation::int AS generation, resets::text AS resets, recording, pg_current_snapshot()::text AS snapshot FROM lake_state`,
    );
    // A transaction after that snapshot: not visible to it.
    const { rows: [{ xid }] } = await db.pool.query<{ xid: string }>(`SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`);
    await queries.record([{ invoiceId: '799999', changed: false, xid: Number(xid) }, { invoiceId: '800001', changed: false, xid: Number(xid) }], await currentLsn());
    await db.pool.query(`UPDATE lake_state SET recording = true`);
    try {
      const done = { snapshot: before!.snapshot, fromGeneration: before!.generation, resets: before!.resets, generation: before!.generation + 1, manifestKey: 'manifests/test.json', exportedAt: new Date().toISOString(), maxInvoiceId: '800000' };
      assert.equal(await finalizeExport(db, done), true);
      const { rows } = await db.pool.query<{ id: string; changed: boolean }>(`SELECT invoice_id::text AS id, changed FROM lake_changes WHERE invoice_id IN (799999, 800001) ORDER BY 1`);
      assert.deepEqual(rows, [
        { id: '799999', changed: true },
        { id: '800001', changed: false },
      ], 'below the highest id the row may have been inserted before the snapshot and updated after it; above it, no version was exported');
      const changes = await queries.changesForQuery(null);
      assert.equal(changes.above, '800000');
      assert.ok(changes.ids.includes('799999') && !changes.ids.includes('800001'));
      assert.ok(!changes.changed.includes('800001'), 'a fresh insert is not left out of the lake (it is not in it)');
    } finally {
      await db.pool.query(
        `UPDATE lake_state SET generation = $1, manifest_key = NULL, exported_at = NULL, exported_max_id = NULL, exported_max_generation = NULL, recording = $2`,
        [before!.generation, before!.recording],
      );
      await db.pool.query(`DELETE FROM lake_changes WHERE invoice_id IN (799999, 800001)`);
    }
  });

  /** `db`, with the names of the statements run through it, each also told to `onQuery`. */
  const watched = (onQuery: (name: string) => void = () => undefined) => {
    const names: string[] = [];
    const database = new Proxy(db, {
      get: (target, key) =>
        key === 'query'
          ? (statement: { name: string }, values?: unknown[]) => {
              names.push(statement.name);
              onQuery(statement.name);
              return target.query(statement as never, values);
            }
          : Reflect.get(target, key),
    });
    return { database, names };
  };
  const walNow = async () =>
    (await db.query<{ wal: WalPosition }>({
      name: 'test_wal',
      text: `SELECT ${WAL_POSITION} AS wal`,
    }))[0]!.wal;

  it('is the feed’s report of the WAL decoded past the snapshot when its feed streams here: nothing is written', async () => {
    const { database, names } = watched();
    const position = createRecordedPosition();
    const queries = createLakeStore(database, position);
    queries.feedStreaming(true);
    // WAL flushed up to its insert position (other sessions' writes may leave it unflushed at any moment).
    const now = await walNow();
    const wal = { ...now, insert: now.flush };
    // A feed reports the walsender's position as it decodes past the WAL's end.
    assert.equal(await passedWhile(queries.recordedUpTo(wal, 10_000), async () => queries.caughtUp(parseLsn((await walNow()).insert))), 'decoded');
    assert.deepEqual(names.filter((name) => name === 'lake_barrier'), [], 'no barrier written');
    // Already past it: no wait.
    assert.equal(await queries.recordedUpTo(wal, 0), 'decoded');
  });

  it('is written when no feed streams here, or the feed does not report in time, sooner when the WAL was not flushed', async () => {
    /**
     * Whether a barrier is passed for a snapshot at `wal` while a feed records, how many were
     * written, after how long the first was, and the longest wait for the feed asked before it.
     */
    const written = async (wal: WalPosition, following: boolean) => {
      let writtenAfter: number | undefined;
      let waitedFor = 0;
      const started = performance.now();
      const { database, names } = watched((name) => {
        if (name === 'lake_barrier') writtenAfter ??= performance.now() - started;
      });
      const position = createRecordedPosition();
      position.following = following;
      const waitFor = position.moved.bind(position);
      position.moved = (ms) => {
        if (writtenAfter === undefined) waitedFor = Math.max(waitedFor, ms);
        return waitFor(ms);
      };
      const passed = await passedWhile(createLakeStore(database, position).recordedUpTo(wal, 10_000), (lsn) => position.reached(lsn));
      return { passed, barriers: names.filter((name) => name === 'lake_barrier').length, writtenAfter: writtenAfter ?? Infinity, waitedFor };
    };
    const made = (outcome: Awaited<ReturnType<typeof written>>) => ({ passed: outcome.passed, barriers: outcome.barriers });
    const wal = await walNow();
    const another = await written(await walNow(), false);
    assert.deepEqual(made(another), { passed: 'written', barriers: 1 }, 'another gateway\u2019s feed records');
    assert.equal(another.waitedFor, 0, 'no wait for a feed that is not here');
    // Following, but the position does not get there (a feed far behind, a position never reported).
    // Mid-page, so that no page header is taken off it (see decodedEnd).
    const far = formatLsn((parseLsn(wal.insert) / 8192n + 10n ** 8n) * 8192n + 4096n);
    const behind = await written({ ...wal, insert: far, flush: far }, true);
    assert.deepEqual(made(behind), { passed: 'written', barriers: 1 });
    assert.ok(behind.writtenAfter >= PASSIVE_WAIT_MS && behind.waitedFor > UNFLUSHED_WAIT_MS, `written after ${behind.writtenAfter} ms, having waited ${behind.waitedFor}`);
    // Not flushed that far by a little (a commit in flight): written after a short wait only.
    const almost = formatLsn(parseLsn(far) - 200n);
    const inFlight = await written({ ...wal, insert: far, flush: almost }, true);
    assert.deepEqual(made(inFlight), { passed: 'written', barriers: 1 });
    assert.ok(inFlight.writtenAfter >= UNFLUSHED_WAIT_MS && inFlight.waitedFor <= UNFLUSHED_WAIT_MS, `written after ${inFlight.writtenAfter} ms, having waited ${inFlight.waitedFor}`);
    // By more than UNFLUSHED_WAIT_BYTES (a bulk load, a commit with synchronous_commit off): the
    // WAL writer may take its delay; a barrier's commit flushes it, so it is written without waiting.
    const events: string[] = [];
    const position = createRecordedPosition();
    position.following = true;
    const waitFor = position.moved.bind(position);
    position.moved = (ms) => (events.push('wait'), waitFor(ms));
    const { database } = watched((name) => name === 'lake_barrier' && events.push('barrier'));
    const bulk = { ...wal, insert: far, flush: formatLsn(parseLsn(far) - 2n * UNFLUSHED_WAIT_BYTES) };
    assert.equal(await passedWhile(createLakeStore(database, position).recordedUpTo(bulk, 10_000), (lsn) => position.reached(lsn)), 'written');
    assert.equal(events[0], 'barrier', 'no wait for the feed before the barrier was written');
  });

  it('written after the feed was slow to report, is passed as soon as the feed reports the snapshot\u2019s position', async () => {
    const position = createRecordedPosition();
    position.following = true;
    const now = await walNow();
    const wal = { ...now, insert: now.flush };
    const target = decodedEnd(wal);
    // The feed reports the snapshot's position only after the passive wait, and never the barrier's.
    const reported = setTimeout(() => position.reached(target), PASSIVE_WAIT_MS + 100);
    try {
      assert.equal(await createLakeStore(db, position).recordedUpTo(wal, 3_000), 'written');
    } finally {
      clearTimeout(reported);
    }
  });

  it('waits for the end of the record before a page\u2019s header, where the walsender stops', () => {
    const segment = 16n * 1024n * 1024n;
    const at = (insert: bigint, blockSize = 8192) => decodedEnd({ insert: formatLsn(insert), flush: formatLsn(insert), blockSize, segmentSize: Number(segment) });
    const page = segment * 3n + 8192n * 5n;
    assert.equal(at(page + 24n), page, 'the insert position past a page\u2019s header');
    assert.equal(at(segment * 3n + 40n), segment * 3n, 'past a segment\u2019s long header');
    assert.equal(at(page + 40n), page + 40n, 'on an ordinary page a record continued from the one before may end 40 bytes in');
    assert.equal(at(page + 32n), page + 32n);
    assert.equal(at(segment + 16384n + 24n, 16384), segment + 16384n, 'another block size');
    assert.equal(at(segment + 8192n + 24n, 16384), segment + 8192n + 24n, 'mid-page for that block size');
  });

  it('reads the change list with a snapshot\u2019s window only when this process had recorded about as far as the WAL', async () => {
    const stats = createStatsStore(db, memoryLogger().logger);
    const windowAfter = (recordedBefore: bigint) =>
      stats.withSnapshot(1, async (snapshot) => snapshot.window, deadlineIn(10_000), { keeping: true, recordedBefore });
    assert.equal((await windowAfter(0n)).changes, null, 'recorded far behind: read after the barrier instead');
    // Recorded up to where the WAL stands (nothing written in between: retried if other sessions wrote).
    const read = await eventually(async () => {
      const window = await windowAfter(parseLsn((await walNow()).insert));
      return window.changes ?? undefined;
    }, 'a window whose change list was read', 10_000);
    const direct = await createLakeStore(db, createRecordedPosition()).changesForQuery(null);
    assert.deepEqual({ ...read, seenBySnapshot: undefined }, { ...direct, seenBySnapshot: undefined }, 'the same list as read after a barrier');
  });

  it('plans the change list under jit_above_cost with 10,000 changes recorded (the analytics pool reads it with JIT on)', async () => {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO lake_changes (invoice_id, changed, xid) SELECT 9000000 + g, g % 3 = 0, pg_current_xact_id() FROM generate_series(1, 10000) g`);
      const { rows: [plan] } = await client.query<{ 'QUERY PLAN': [{ Plan: { 'Total Cost': number } }] }>(`EXPLAIN (FORMAT JSON) ${changesSelect('pg_current_snapshot()')}`);
      const { rows: [jit] } = await client.query<{ above: string }>(`SELECT current_setting('jit_above_cost') AS above`);
      const cost = plan!['QUERY PLAN'][0].Plan['Total Cost'];
      assert.ok(cost < Number(jit!.above), `estimated cost ${cost}, jit_above_cost ${jit!.above}`);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('is refused when no feed records past it in time', async () => {
    const position: RecordedPosition = createRecordedPosition();
    const queries = createLakeStore(db, position);
    // A feed that has recorded, but not as far as the barrier.
    position.reached('0/1');
    assert.equal(await queries.recordedUpToNow(200), false);
  });
});

/**
 * lake_state is one row that is updated on every feed batch and may never be analyzed: the
 * planner took it for hundreds of rows, the change list's cost crossed jit_above_cost with
 * 10,000 changes recorded, and every lake query spent 10 ms compiling a 1 ms statement (seen by
 * hand at 1M). The lake-state pool runs without JIT.
 */
describe('the lake-state pool', { skip }, () => {
  const { logger } = memoryLogger();
  let database: TestDatabase;

  before(async () => {
    database = await createTestDatabase('lake_state_pool');
  });
  after(async () => {
    await database?.drop();
  });

  it('never JIT-compiles, and keeps generic plans where asked', async () => {
    const settings = async (options: { jit?: boolean; genericPlans?: boolean }) => {
      const pool = createDatabase({ url: database.url, poolMax: 1, statementTimeoutMs: 0, ...options }, logger);
      try {
        const [row] = await pool.query<{ jit: string; plans: string }>({ name: 'test_settings', text: `SELECT current_setting('jit') AS jit, current_setting('plan_cache_mode') AS plans` });
        return row!;
      } finally {
        await pool.close();
      }
    };
    assert.equal((await settings({ jit: false })).jit, 'off');
    assert.deepEqual(await settings({ jit: false, genericPlans: true }), { jit: 'off', plans: 'force_generic_plan' });
    assert.equal((await settings({ genericPlans: true })).plans, 'force_generic_plan');
  });
});

interface PlanNode {
  readonly 'Node Type': string;
  readonly 'Relation Name'?: string;
  readonly Plans?: readonly PlanNode[];
}

/** Every node of an EXPLAIN (FORMAT JSON) plan. */
const planNodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(planNodes)];
