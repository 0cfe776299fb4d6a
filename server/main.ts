import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { startGateway, type Gateway } from './app.js';
import { createDatabase } from '../sources/postgres/database.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../sources/postgres/embedded.js';
import { migrate } from '../sources/postgres/migrate.js';
import { seedDatabase } from '../pipelines/seed.js';

/** Demo data for the zero-setting start, as the README describes it. */
const DEMO = { customers: 1_000, invoices: 100_000, months: 36, seed: 42 };

async function prepareDatabase(config: Config, logger: Logger): Promise<{ url: string; embedded?: EmbeddedPostgresHandle }> {
  const embedded = config.database.url ? undefined : await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.database.embeddedPort }, logger);
  const url = config.database.url ?? embedded!.url;
  const db = createDatabase({ url, poolMax: 2, statementTimeoutMs: 0 }, logger);
  try {
    await migrate(db, logger);
    if (embedded) {
      const [row] = await db.query<{ empty: boolean }>({ name: 'demo_empty', text: 'SELECT NOT EXISTS (SELECT 1 FROM customers) AS empty' });
      if (row?.empty) {
        logger.info(DEMO, 'seeding demo data (first start)');
        await seedDatabase(db, DEMO, logger);
      }
    }
  } finally {
    await db.close();
  }
  return { url, embedded };
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
  const logger = createLogger(config.logLevel);
  const { url, embedded } = await prepareDatabase(config, logger);
  let gateway: Gateway | undefined;
  const shutdown = async (signal: string) => {
    logger.info({ signal }, 'draining in-flight requests and shutting down');
    const force = setTimeout(() => process.exit(1), 15_000).unref();
    await gateway?.stop();
    await embedded?.stop();
    clearTimeout(force);
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  gateway = await startGateway(config, logger, url);
}

main().catch((err: unknown) => {
  console.error(`gateway failed to start: ${(err as Error).message}`);
  process.exit(1);
});
