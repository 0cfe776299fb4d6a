import type { Logger } from 'pino';
import type { Database, Statement } from './database.js';

export interface SeedOptions {
  readonly customers: number;
  readonly invoices: number;
  /** Invoices are dated within the last `months` calendar months, the current one included. */
  readonly months: number;
  /** Same seed, same data (names, parties, amounts; dates relative to the moment of seeding). */
  readonly seed: number;
  /** Connections inserting chunks at once; does not change the data. */
  readonly parallelism?: number;
  /** Drop the secondary indexes and build them after the load; default: from 1,000,000 invoices. */
  readonly rebuildIndexes?: boolean;
}

/**
 * Rows per INSERT ... SELECT. Each chunk draws from its own setseed stream, so the data depends
 * on the seed and this constant only: changing it changes every seeded data set.
 */
const CHUNK_ROWS = 50_000;

/** From this many invoices on, dropping the secondary indexes and building them once pays off. */
const REBUILD_INDEXES_FROM = 1_000_000;

export interface SeedResult {
  readonly customers: number;
  readonly invoices: number;
  readonly seconds: number;
}

const NAME_HEADS = ['Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Wonka', 'Tyrell', 'Cyberdyne', 'Soylent', 'Hooli', 'Vandelay', 'Massive', 'Oscorp', 'Gringotts', 'Monarch', 'Aperture', 'Black Mesa', 'Nakatomi', 'Pied Piper'];
const NAME_TAILS = ['Corp', 'Ltd', 'GmbH', 'Inc', 'LLC', 'SA', 'BV', 'AG', 'Holdings', 'Trading', 'Logistics', 'Systems'];

const SET_SEED: Statement = { name: 'seed_setseed', text: 'SELECT setseed($1)' };

const INSERT_CUSTOMERS: Statement = {
  name: 'seed_customers',
  text: `WITH inserted AS (INSERT INTO customers (customer_name)
    SELECT ($2::text[])[1 + floor(random() * array_length($2::text[], 1))::int] || ' '
        || ($3::text[])[1 + floor(random() * array_length($3::text[], 1))::int] || ' #' || g
    FROM generate_series(1, $1::int) g
    ORDER BY g
    RETURNING customer_id)
    SELECT min(customer_id)::int AS first FROM inserted`,
};

/**
 * One chunk of invoices, generated set-based inside Postgres (no rows cross the network).
 * - popularity is skewed: rank = floor(n * u^3) puts most invoices on few customers, and a
 *   multiplicative permutation scatters the popular ones over the id range;
 * - amounts are log-normal (Box-Muller), median about $450, rounded to cents;
 * - dates grow denser towards now (sqrt of the position: a fast-growing table), so ids rise
 *   roughly with time as bigserial ids do.
 */
const INSERT_INVOICES: Statement = {
  name: 'seed_invoices',
  text: `INSERT INTO invoices (invoice_id, issue_date, issuer_id, receiver_id, amount_usd)
    SELECT $1::bigint + g,
      $4::timestamptz + ($5::timestamptz - $4::timestamptz) * sqrt(least(1, (($2::bigint + g - 1) + random()) / $3::float8)),
      p.issuer, CASE WHEN p.receiver = p.issuer THEN $6::int + ((p.receiver - $6::int + 1) % $7::int) ELSE p.receiver END,
      least(999999999.99, greatest(0.01, round(exp(ln(450) + 1.1 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::numeric, 2)))
    FROM generate_series(1, $8::int) g
    CROSS JOIN LATERAL (SELECT
      $6::int + ((floor($7::int * power(random(), 3))::bigint * $9::bigint) % $7::int)::int AS issuer,
      $6::int + ((floor($7::int * power(random(), 2))::bigint * $10::bigint) % $7::int)::int AS receiver,
      g AS keep) p`,
};

const TABLE_COUNTS: Statement = {
  name: 'seed_counts',
  text: `SELECT (SELECT count(*) FROM customers)::int AS customers, (SELECT count(*) FROM invoices)::bigint::text AS invoices`,
};
const NEXT_INVOICE_ID: Statement = { name: 'seed_next_id', text: `SELECT coalesce(max(invoice_id), 0)::text AS max FROM invoices` };
const SYNC_SEQUENCE: Statement = {
  name: 'seed_sync_sequence',
  text: `SELECT setval(pg_get_serial_sequence('invoices', 'invoice_id'), (SELECT max(invoice_id) FROM invoices))`,
};
/**
 * Secondary indexes on invoices (not the primary key), with their definitions. Loading into an
 * empty table and building each index once afterwards is several times faster than updating
 * three btrees on every row.
 */
const SECONDARY_INDEXES: Statement = {
  name: 'seed_secondary_indexes',
  text: `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'invoices'::regclass AND NOT i.indisprimary
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)`,
};
const BUILD_SETTINGS: Statement = {
  name: 'seed_build_settings',
  text: `SELECT set_config('maintenance_work_mem', '512MB', false), set_config('max_parallel_maintenance_workers', '2', false)`,
};

// No CASCADE: a table that references these (the user's, or the gateway's own) makes Postgres
// refuse, rather than being emptied silently.
const RESET: Statement = { name: 'seed_reset', text: 'TRUNCATE invoices, customers RESTART IDENTITY' };
const DEMO_MARKER: Statement = {
  name: 'demo_marker',
  text: 'CREATE TABLE IF NOT EXISTS gateway_demo_seed (seeded_at timestamptz NOT NULL DEFAULT now())',
};
const DEMO_SEEDED: Statement = { name: 'demo_seeded', text: 'SELECT EXISTS (SELECT 1 FROM gateway_demo_seed) AS seeded' };
const MARK_DEMO_SEEDED: Statement = { name: 'demo_mark_seeded', text: 'INSERT INTO gateway_demo_seed DEFAULT VALUES' };
const ANALYZE: Statement = { name: 'seed_analyze', text: 'ANALYZE customers, invoices' };
const WINDOW: Statement = {
  name: 'seed_window',
  text: `SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => $1::int - 1)) AT TIME ZONE 'UTC' AS start, now() AS end`,
};

/** A seed in (-1, 1) for setseed, distinct per (seed, stream), the same on every run. */
export function streamSeed(seed: number, stream: number): number {
  let h = (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return ((h ^ (h >>> 16)) >>> 0) / 2 ** 32 - 0.5;
}

function coprimeMultiplier(n: number, candidate: number): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  let m = candidate % n || 1;
  while (gcd(m, n) !== 1) m++;
  return m;
}

/**
 * Loads deterministic demo data. Refuses tables that already hold rows unless `reset` (which
 * truncates them): mixing generated data into real data is never what a user meant.
 */
export async function seedDatabase(
  db: Database,
  options: SeedOptions & { reset?: boolean },
  logger: Logger,
  onProgress: (done: number, total: number) => void = () => undefined,
): Promise<SeedResult> {
  const started = performance.now();
  if (options.customers < 2) throw new Error('--customers must be at least 2 (an invoice has two parties)');
  if (options.invoices < 0) throw new Error('--invoices must not be negative');
  if (options.months < 1) throw new Error('--months must be at least 1');

  if (options.reset) await db.query(RESET);
  if (!(await tablesEmpty(db))) {
    throw new Error('customers or invoices already hold rows; seed into an empty database or pass --reset');
  }

  const firstCustomer = await db.transaction(async (tx) => {
    await tx.query(SET_SEED, [streamSeed(options.seed, -1)]);
    const [row] = await tx.query<{ first: number }>(INSERT_CUSTOMERS, [options.customers, NAME_HEADS, NAME_TAILS]);
    return row!.first;
  });

  const rebuild = options.rebuildIndexes ?? options.invoices >= REBUILD_INDEXES_FROM;
  const indexes = rebuild && options.invoices > 0 ? await db.query<{ name: string; definition: string }>(SECONDARY_INDEXES) : [];
  try {
    await db.withClient(async (client) => {
      for (const index of indexes) await client.query(`DROP INDEX ${quoteIdent(index.name)}`);
    });
    await loadInvoices(db, options, firstCustomer, onProgress);
  } finally {
    // Rebuilt even when dropping or loading failed. A process killed half-way cannot do this;
    // the gateway's own indexes then come back at its next start (see migrate.ts).
    for (const index of indexes) {
      await db.withClient(async (client) => {
        await client.query(BUILD_SETTINGS.text);
        await client.query(index.definition.replace(/^CREATE (UNIQUE )?INDEX /, 'CREATE $1INDEX IF NOT EXISTS '));
      });
    }
  }
  if (options.invoices > 0) await db.query(SYNC_SEQUENCE);
  await db.query(ANALYZE);
  const seconds = (performance.now() - started) / 1000;
  logger.info({ customers: options.customers, invoices: options.invoices, seconds }, 'seeded');
  return { customers: options.customers, invoices: options.invoices, seconds };
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

async function loadInvoices(db: Database, options: SeedOptions, firstCustomer: number, onProgress: (done: number, total: number) => void) {
  const [window] = await db.query<{ start: Date; end: Date }>(WINDOW, [options.months]);
  const [{ max: idBase } = { max: '0' }] = await db.query<{ max: string }>(NEXT_INVOICE_ID);
  const chunkSize = CHUNK_ROWS;
  const chunks = Math.ceil(options.invoices / chunkSize);
  const issuerMultiplier = coprimeMultiplier(options.customers, 7919);
  const receiverMultiplier = coprimeMultiplier(options.customers, 104729);
  let done = 0;
  onProgress(0, options.invoices);

  let next = 0;
  const worker = async () => {
    for (let chunk = next++; chunk < chunks; chunk = next++) {
      const offset = chunk * chunkSize;
      const rows = Math.min(chunkSize, options.invoices - offset);
      await db.transaction(async (tx) => {
        await tx.query(SET_SEED, [streamSeed(options.seed, chunk)]);
        await tx.query(INSERT_INVOICES, [
          BigInt(idBase) + BigInt(offset),
          offset,
          options.invoices,
          window!.start,
          window!.end,
          firstCustomer,
          options.customers,
          rows,
          issuerMultiplier,
          receiverMultiplier,
        ]);
      });
      done += rows;
      onProgress(done, options.invoices);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.parallelism ?? 2) }, worker));
}

/** Whether customers and invoices hold no rows (`npm run seed -- --if-empty`). */
export async function tablesEmpty(db: Database): Promise<boolean> {
  const [counts] = await db.query<{ customers: number; invoices: string }>(TABLE_COUNTS);
  return counts!.customers === 0 && counts!.invoices === '0';
}

/**
 * The embedded database's demo data: loaded (after emptying the tables) until a load has
 * completed, so a first start that was stopped half-way is repaired by the next one.
 */
export async function ensureDemoData(db: Database, options: SeedOptions, logger: Logger): Promise<void> {
  await db.query(DEMO_MARKER);
  const [row] = await db.query<{ seeded: boolean }>(DEMO_SEEDED);
  if (row!.seeded) return;
  logger.info(options, 'seeding demo data');
  await seedDatabase(db, { ...options, reset: true }, logger);
  await db.query(MARK_DEMO_SEEDED);
}
