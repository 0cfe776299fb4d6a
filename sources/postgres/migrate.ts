import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from './database.js';

/** Versioned SQL files `NNN_name.sql`, applied in order, each once. */
export const MIGRATIONS_DIR = new URL('../../../migrations/', import.meta.url);

const NO_TRANSACTION = /^--\s*migrate:no-transaction\b/m;
const LOCK_KEY = 'invoice-gateway:migrate';

/** Columns the gateway reads; an existing user table must have them. */
const REQUIRED_COLUMNS: Record<string, string[]> = {
  customers: ['customer_id', 'customer_name'],
  invoices: ['invoice_id', 'issue_date', 'issuer_id', 'receiver_id', 'amount_usd'],
};

export interface MigrationFile {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export async function readMigrations(dir: URL = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names = (await readdir(dir)).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort();
  const files = await Promise.all(
    names.map(async (name) => {
      // Line endings normalised: a checkout with CRLF is the same migration.
      const sql = (await readFile(new URL(name, dir), 'utf8')).replace(/\r\n/g, '\n');
      return { version: Number.parseInt(name, 10), name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    }),
  );
  for (let i = 1; i < files.length; i++) {
    if (files[i]!.version === files[i - 1]!.version) throw new Error(`migrations ${files[i - 1]!.name} and ${files[i]!.name} share version ${files[i]!.version}`);
  }
  return files;
}

/**
 * Applies the pending migrations. Safe when several gateways start at once: they take turns on
 * an advisory lock. The lock is polled with pg_try_advisory_lock rather than waited for, because
 * a session blocked in pg_advisory_lock holds a snapshot that CREATE INDEX CONCURRENTLY in the
 * lock holder would wait on: a deadlock.
 */
export async function migrate(db: Database, logger: Logger, dir: URL = MIGRATIONS_DIR): Promise<number> {
  const files = await readMigrations(dir);
  return db.withClient(async (client) => {
    await acquireLock(client, logger);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS gateway_schema_migrations (
        version int PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      const { rows } = await client.query<{ version: number; name: string; checksum: string }>(
        'SELECT version, name, checksum FROM gateway_schema_migrations',
      );
      const applied = new Map(rows.map((r) => [r.version, r]));
      // A user's table of the wrong shape is named before any migration touches it.
      await checkTableShapes(client, { existingOnly: true });
      let count = 0;
      for (const file of files) {
        const done = applied.get(file.version);
        if (done) {
          if (done.checksum !== file.checksum) {
            throw new Error(`migration ${file.name} was changed after it was applied; add a new migration instead`);
          }
          // No-transaction files are idempotent (IF NOT EXISTS, leftovers dropped) and cheap when
          // there is nothing to do, so they run at every start: an index dropped by hand or by an
          // interrupted bulk load comes back.
          if (NO_TRANSACTION.test(file.sql)) await runStatements(client, file);
          continue;
        }
        await apply(client, file);
        logger.info({ migration: file.name }, 'migration applied');
        count++;
      }
      await checkTableShapes(client, { existingOnly: false });
      return count;
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [LOCK_KEY]);
    }
  });
}

/** Another gateway migrating a large table may hold the lock for minutes; longer is a hang. */
const LOCK_WAIT_LIMIT_MS = 15 * 60_000;

async function acquireLock(client: pg.PoolClient, logger: Logger): Promise<void> {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    const { rows } = await client.query<{ locked: boolean; holder: number | null }>(
      `SELECT pg_try_advisory_lock(hashtext($1)) AS locked,
         (SELECT pid FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND objid = hashtext($1)::oid
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          LIMIT 1) AS holder`,
      [LOCK_KEY],
    );
    if (rows[0]?.locked) return;
    if (attempt === 0) logger.info({ holderPid: rows[0]?.holder }, 'waiting for another gateway to finish migrating');
    if (Date.now() - started > LOCK_WAIT_LIMIT_MS) {
      throw new Error(`the migration lock has been held by backend ${rows[0]?.holder ?? '?'} for over ${LOCK_WAIT_LIMIT_MS / 60_000} minutes`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function apply(client: pg.PoolClient, file: MigrationFile): Promise<void> {
  const record = () =>
    client.query('INSERT INTO gateway_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
      file.version,
      file.name,
      file.checksum,
    ]);
  if (NO_TRANSACTION.test(file.sql)) {
    await runStatements(client, file);
    await record();
    return;
  }
  await client.query('BEGIN');
  try {
    await client.query(file.sql);
    await record();
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw new Error(`migration ${file.name} failed: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Several statements in one simple query run as one implicit transaction, which CONCURRENTLY
 * refuses; so a no-transaction file runs statement by statement.
 */
async function runStatements(client: pg.PoolClient, file: MigrationFile): Promise<void> {
  try {
    for (const statement of splitStatements(file.sql)) await client.query(statement);
  } catch (err) {
    throw new Error(`migration ${file.name} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** Splits on semicolons that end a line, outside dollar-quoted bodies. */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let current = '';
  let inDollarQuote = false;
  for (const line of sql.split('\n')) {
    if (/^\s*--/.test(line) && !inDollarQuote) continue;
    current += line + '\n';
    if ((line.match(/\$\$/g)?.length ?? 0) % 2 === 1) inDollarQuote = !inDollarQuote;
    if (!inDollarQuote && /;\s*$/.test(line)) {
      statements.push(current.trim());
      current = '';
    }
  }
  if (current.trim()) statements.push(current.trim());
  return statements;
}

async function checkTableShapes(client: pg.PoolClient, { existingOnly }: { existingOnly: boolean }): Promise<void> {
  const { rows } = await client.query<{ table_name: string; column_name: string }>(
    `SELECT table_name, column_name FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = ANY($1)`,
    [Object.keys(REQUIRED_COLUMNS)],
  );
  for (const [table, columns] of Object.entries(REQUIRED_COLUMNS)) {
    const present = new Set(rows.filter((r) => r.table_name === table).map((r) => r.column_name));
    if (existingOnly && present.size === 0) continue;
    const missing = columns.filter((c) => !present.has(c));
    if (missing.length > 0) throw new Error(`the existing ${table} table lacks column(s) ${missing.join(', ')}`);
  }
}
