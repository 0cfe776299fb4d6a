import pg from 'pg';
import { runCommand } from './runCommand.js';

export interface BenchData {
  readonly invoices: number;
  readonly customers: number;
  /** Invoice ids run from minId to maxId without gaps, so any id drawn in between exists. */
  readonly minId: number;
  readonly maxId: number;
  /** Seconds spent seeding, 0 when the database already held the data. */
  readonly seedSeconds: number;
}

/** Databases with this prefix belong to the benchmarks: they may be created and reseeded. */
const OWNED = /^ig_bench_\w+$/;

/**
 * Makes sure `url` holds exactly `want` seeded rows with gap-free invoice ids. A benchmark
 * database (ig_bench_*) is created and (re)seeded with the repo's seeder when it does not; any
 * other database is never truncated: the benchmark stops and says why.
 */
export async function ensureBenchDatabase(
  url: string,
  want: { invoices: number; customers: number },
  seedCommand: string,
): Promise<BenchData> {
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  const owned = OWNED.test(name);
  if (owned && !(await exists(url, name))) await admin(url, `CREATE DATABASE "${name}"`);

  let found = await inspect(url);
  const matches = (d: Omit<BenchData, 'seedSeconds'> | undefined) =>
    d !== undefined && d.invoices === want.invoices && d.customers === want.customers && d.maxId - d.minId + 1 === d.invoices;
  if (matches(found)) return { ...found!, seedSeconds: 0 };
  if (!owned) {
    throw new Error(
      `database ${name} does not hold ${want.invoices} invoices with gap-free ids and ${want.customers} customers, ` +
        'and only ig_bench_* databases are reseeded: seed it with npm run seed, or use a database named ig_bench_*',
    );
  }

  console.error(`seeding ${name}: ${want.customers} customers, ${want.invoices} invoices`);
  const started = performance.now();
  await runCommand(process.execPath, [seedCommand, '--customers', String(want.customers), '--invoices', String(want.invoices), '--reset', '--no-datasets'], {
    DATABASE_URL: url,
    LOG_LEVEL: 'warn',
  });
  found = await inspect(url);
  if (!matches(found)) throw new Error(`the seeder left ${name} with ${JSON.stringify(found)}, not ${JSON.stringify(want)}`);
  return { ...found!, seedSeconds: (performance.now() - started) / 1000 };
}

async function inspect(url: string): Promise<Omit<BenchData, 'seedSeconds'> | undefined> {
  return withClient(url, async (client) => {
    const { rows: [table] } = await client.query<{ present: boolean }>(`SELECT to_regclass('public.invoices') IS NOT NULL AS present`);
    if (!table?.present) return undefined;
    const { rows: [row] } = await client.query<{ invoices: string; customers: string; min_id: string | null; max_id: string | null }>(
      `SELECT count(*)::text AS invoices, (SELECT count(*) FROM customers)::text AS customers,
              min(invoice_id)::text AS min_id, max(invoice_id)::text AS max_id
       FROM invoices`,
    );
    return { invoices: Number(row!.invoices), customers: Number(row!.customers), minId: Number(row!.min_id ?? 0), maxId: Number(row!.max_id ?? -1) };
  });
}

async function exists(url: string, name: string): Promise<boolean> {
  return withClient(adminUrl(url), async (client) => (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1);
}

async function admin(url: string, sql: string): Promise<void> {
  await withClient(adminUrl(url), (client) => client.query(sql));
}

/** The same server's `postgres` database, where CREATE DATABASE runs. */
function adminUrl(url: string): string {
  const admin = new URL(url);
  admin.pathname = '/postgres';
  return admin.toString();
}

/** One short-lived connection for setup work. */
export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}
