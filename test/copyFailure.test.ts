import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { eventually } from './fixtures/eventually.js';
import { memoryLogger } from './fixtures/gateway.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { withExportSnapshot } from '../sources/postgres/lakeExportStore.js';
import { migrate } from '../sources/postgres/migrate.js';
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
  const { logger } = memoryLogger();
  let database: TestDatabase;
  let db: Database;

  before(async () => {
    database = await createTestDatabase('copy_failure');
    // As the background work's pool: no statement timeout would end a stuck statement.
    db = createDatabase({ url: database.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
    await migrate(db, logger);
    // Megabytes of CSV: more than the socket and the stream buffer before the first write fails.
    await seedDatabase(db, { customers: 200, invoices: 100_000, months: 12, seed: 9 }, logger);
  });
  after(async () => {
    await db?.close();
    await database?.drop();
  });

  const settled = async (work: Promise<unknown>) => Promise.race([work.then(() => 'written', (err: unknown) => err), sleep(20_000, 'stuck')]);

  it("fails an export's copy, and releases its snapshot and the exporters' lock", async () => {
    const outcome = await settled(withExportSnapshot(db, (snapshot) => snapshot.copyCsv('/dev/full', { all: true })));
    assert.equal((outcome as NodeJS.ErrnoException).code, 'ENOSPC', String(outcome));
    // The lock is free once the closed connection's backend has exited: the next export runs.
    await eventually(async () => (await withExportSnapshot(db, (snapshot) => snapshot.estimatedRows())) !== 'busy', 'the exporters\' lock to be free');
    await eventually(async () => (await idleInTransaction(db)) === 0, 'no session left in its snapshot');
  });

  it('fails the payments refresh copy, and frees its connection', async () => {
    const outcome = await settled(createReceiverPaymentsStore(db).copyInvoices('/dev/full'));
    assert.equal((outcome as NodeJS.ErrnoException).code, 'ENOSPC', String(outcome));
    await eventually(async () => (await idleInTransaction(db)) === 0, 'no session left in its transaction');
    // Both connections of the pool still serve.
    await Promise.all([db.query({ name: 'test_one', text: 'SELECT 1' }), db.query({ name: 'test_one', text: 'SELECT 1' })]);
  });
});

async function idleInTransaction(db: Database): Promise<number> {
  const [row] = await db.query<{ sessions: number }>({
    name: 'test_idle_in_transaction',
    text: `SELECT count(*)::int AS sessions FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()`,
  });
  return row!.sessions;
}
