import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { errorMessage } from '../../core/errors.js';
import { ConfigError, loadConfig, readEnvironment } from '../config.js';
import { createLogger } from '../logger.js';
import { createDatabase, waitUntilReachable } from '../../sources/postgres/database.js';
import { migrate } from '../../sources/postgres/migrate.js';
import { seedDatabase, tablesEmpty } from '../../sources/postgres/seeder.js';
import { writeSampleDatasets } from '../../pipelines/sampleDatasets.js';
import { createObjectStore } from '../lake.js';

const WAIT_FOR_POSTGRES_MS = 120_000;

const usage = 'usage: npm run seed -- --customers N --invoices M [--months K] [--seed S] [--reset | --if-empty] [--no-datasets]';

function whole(name: string, raw: string | undefined, fallback?: number): number {
  if (raw === undefined && fallback !== undefined) return fallback;
  const value = Number(raw?.replaceAll('_', ''));
  if (raw === undefined || !Number.isSafeInteger(value)) throw new ConfigError(`--${name} must be a whole number\n${usage}`);
  return value;
}

async function main() {
  const { values } = parseArgs({
    options: {
      customers: { type: 'string' },
      invoices: { type: 'string' },
      months: { type: 'string' },
      seed: { type: 'string' },
      reset: { type: 'boolean', default: false },
      'if-empty': { type: 'boolean', default: false },
      'no-datasets': { type: 'boolean', default: false },
    },
  });
  if (values.reset && values['if-empty']) throw new ConfigError(`--reset and --if-empty exclude each other\n${usage}`);
  const config = loadConfig(readEnvironment().env);
  if (!config.database.url) throw new ConfigError('DATABASE_URL must be set for npm run seed');
  const logger = createLogger({ level: config.logLevel === 'info' ? 'warn' : config.logLevel, name: 'seed' });
  const options = {
    customers: whole('customers', values.customers),
    invoices: whole('invoices', values.invoices),
    months: whole('months', values.months, 36),
    seed: whole('seed', values.seed, 42),
    reset: values.reset ?? false,
  };
  const db = createDatabase({ url: config.database.url, poolMax: 4, statementTimeoutMs: 0 }, logger);
  const bar = new cliProgress.SingleBar(
    { format: 'invoices |{bar}| {percentage}% {value}/{total} rows, {rate} rows/s, eta {eta_formatted}', stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  try {
    // docker compose starts the seed while Postgres may still be initialising (its first start
    // restarts the server once): wait for it rather than fail at once.
    const deadline = Date.now() + WAIT_FOR_POSTGRES_MS;
    if (!(await waitUntilReachable(db, logger, () => Date.now() > deadline))) {
      throw new Error(`Postgres was not reachable within ${WAIT_FOR_POSTGRES_MS / 1000} s`);
    }
    await migrate(db, logger);
    if (values['if-empty'] && !(await tablesEmpty(db))) {
      console.log('customers or invoices already hold rows; nothing seeded (--if-empty)');
      return;
    }
    const result = await seedDatabase(db, options, logger, (done, total) => {
      if (done === 0) bar.start(total, 0, { rate: 0 });
      else bar.update(done, { rate: Math.round(done / ((performance.now() - started) / 1000)) });
    });
    bar.stop();
    console.log(
      `seeded ${result.customers} customers and ${result.invoices} invoices in ${result.seconds.toFixed(1)} s ` +
        `(${Math.round(result.invoices / result.seconds)} invoices/s)`,
    );
    if (!values['no-datasets']) {
      const store = createObjectStore(config);
      try {
        const { objects } = await writeSampleDatasets({ db, store, prefixes: config.lake.sources.prefixes, seed: options.seed, logger });
        console.log(`wrote ${objects} sample dataset objects (profiles, payments, ratings) to ${store.location}`);
      } finally {
        store.close();
      }
    }
  } finally {
    bar.stop();
    await db.close();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof ConfigError ? err.message : `seed failed: ${errorMessage(err)}`);
  process.exit(1);
});
