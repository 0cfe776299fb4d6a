import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { eventually } from './fixtures/eventually.js';
import { memoryLogger } from './fixtures/gateway.js';
import { suiteDatabase } from './fixtures/migratedDatabase.js';
import type { Database } from '../sources/postgres/database.js';
import { withExportSnapshot } from '../sources/postgres/lakeExportStore.js';
import { createReceiverPaymentsStore } from '../sources/postgres/receiverPaymentsStore.js';
import { seedDatabase } from '../sources/postgres/seeder.js';

const skip = await missingServices('postgres');

/**
 * A COPY TO a file that cannot be written (a full disk: /dev/full) must fail and free its
 * connection. pg-copy-streams' COPY TO stream, once destroyed, stops reading the socket, so the
 * connection never reached ReadyForQuery: the export's ROLLBACK and unlock waited for good, and
 * with them every later export and the change feed that waits on the payments refresh.
 */
describe('a COPY whose output file fails', { skip }, () => {
  // As the background work's pool: no statement timeout would end a stuck statement.
  const suite = suiteDatabase('copy_failure', 2);
  let db: Database;

  before(async () => {
    db = suite.db();
    // Megabytes of CSV: more than the socket and the stream buffer before the first write fails.
    await seedDatabase(db, { customers: 200, invoices: 100_000, months: 12, seed: 9 }, memoryLogger().logger);
  });

  const settled = async (work: Promise<unknown>) => Promise.race([work.then(() => 'written', (err: unknown) => err), sleep(20_000, 'stuck')]);

  it("fails an export's copy, and releases its snapshot and the exporters' lock", async () => {
    const outcome = await settled(withExportSnapshot(db, (snapshot) => snapshot.copyCsv('/dev/full', { all: true })));
    assert.equal((outcome as NodeJS.ErrnoException).code, 'ENOSPC', String(outcome));
    // The lock is free once the closed connection's backend has exited: the next export runs.
    await eventually(async () => (await withExportSnapshot(db, (snapshot) => snapshot.estimatedRows())) !== 'busy', 'the exporters\' lock to be free');
    await eventually(async () => (await busySessions(db)) === 0, 'no session left in its snapshot');
  });

  it('fails the payments refresh copy, and frees its connection', async () => {
    const outcome = await settled(createReceiverPaymentsStore(db).copyInvoices('/dev/full'));
    assert.equal((outcome as NodeJS.ErrnoException).code, 'ENOSPC', String(outcome));
    await eventually(async () => (await busySessions(db)) === 0, 'no session left in its transaction');
    // Both connections of the pool are free again (one held for good would time the second out).
    const clients = await Promise.all([db.pool.connect(), db.pool.connect()]);
    for (const client of clients) client.release();
  });
});

async function busySessions(db: Database): Promise<number> {
  const [row] = await db.query<{ sessions: number }>({
    name: 'test_idle_in_transaction',
    text: `SELECT count(*)::int AS sessions FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()`,
  });
  return row!.sessions;
}
