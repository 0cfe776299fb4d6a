import { mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { SEGMENT_INDEXES, SEGMENT_TABLES } from '../test/fixtures/segmentCheck.js';

const { from: copyFrom, to: copyTo } = copyStreams;

/*
 * The joins benchmark's datasets, made from the seeded invoices and customers: written into the
 * lake as the README's contract describes them (profiles JSONL, payments JSONL by day, monthly
 * rating snapshots in Parquet), and the same records loaded into Postgres (seg_* tables of
 * test/fixtures/segmentCheck.ts) for the comparison. Deterministic: every value is a hash of the
 * invoice or customer id, so the same seed gives the same files, whatever order rows arrive in;
 * only what is "already paid" depends on the moment of writing.
 */

export const PREFIXES = { profiles: 'sources/customer-profiles/', payments: 'sources/payments/', ratings: 'sources/credit-ratings/' } as const;

const INDUSTRIES = ['software', 'logistics', 'retail', 'manufacturing', 'healthcare', 'energy', 'finance', 'media'];
const COUNTRIES = ['US', 'DE', 'FR', 'GB', 'NL', 'ES', 'BR', 'JP', 'IN', 'CA'];
const RATINGS = ['AAA', 'AA', 'A', 'BBB', 'BB', 'B', 'CCC', 'CC', 'C', 'D'];
const METHODS = ['card', 'wire', 'ach', 'sepa'];
const DAY = 86_400_000;
const PROFILE_FILES = 4;
const SNAPSHOTS = 12;
/** Unpaid invoices kept as candidates for the landed files. */
const UNPAID_KEPT = 20_000;

/** A value in [0, 1) from an id and a stream number: splitmix-like, 32-bit. */
function h(id: number, stream: number): number {
  let x = (Math.imul(id ^ (id >>> 16), 0x7feb352d) ^ Math.imul(stream + 0x9e3779b9, 0x846ca68b)) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) >>> 0;
  x = Math.imul(x ^ (x >>> 12), 0x297a2d39) >>> 0;
  return ((x ^ (x >>> 15)) >>> 0) / 2 ** 32;
}
const pick = <T>(list: readonly T[], u: number) => list[Math.floor(u * list.length)]!;
const dollars = (cents: number) => (cents / 100).toFixed(2);
/** COPY text format: backslash is its escape character. */
const copyText = (value: string) => value.replaceAll('\\', '\\\\');

export interface JoinsDatasets {
  readonly profiles: number;
  readonly ratingRows: number;
  /** Lines written, repeated deliveries included. */
  readonly paymentLines: number;
  readonly distinctPayments: number;
  readonly paymentFiles: number;
  /** Invoices with at least one payment event. */
  readonly paidInvoices: number;
  readonly invoices: number;
  readonly lakeBytes: number;
  /** Unpaid invoices of the last 12 months, issued over two days ago: what landed files pay. */
  readonly unpaid: string[];
  readonly seconds: number;
}

/**
 * Writes the three datasets under `lakeDir` and replaces Postgres's seg_* tables with the same
 * records (payments once per payment_id, as a load with that primary key keeps them).
 */
export async function writeJoinsDatasets(databaseUrl: string, lakeDir: string, log: (line: string) => void): Promise<JoinsDatasets> {
  const started = performance.now();
  const now = Date.now();
  const reader = new pg.Client({ connectionString: databaseUrl });
  const writer = new pg.Client({ connectionString: databaseUrl });
  await reader.connect();
  await writer.connect();
  let lakeBytes = 0;
  const put = async (key: string, body: string) => {
    const file = path.join(lakeDir, key);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, body);
    lakeBytes += Buffer.byteLength(body);
  };
  try {
    await writer.query('DROP TABLE IF EXISTS seg_profiles, seg_payments, seg_ratings');
    await writer.query(SEGMENT_TABLES);
    const { rows: customers } = await reader.query<{ id: number }>('SELECT customer_id AS id FROM customers ORDER BY customer_id');

    // Profiles: 97% of customers, one JSON object each, over a few CRM export files; ids now and
    // then as text, a field missing here and there (both sides read them the same way).
    const files: string[][] = Array.from({ length: PROFILE_FILES }, () => []);
    const profileCopy: string[] = [];
    for (const [index, { id }] of customers.entries()) {
      if (h(id, 1) >= 0.97) continue;
      const doc: Record<string, unknown> = {
        customer_id: h(id, 2) < 0.1 ? String(id) : id,
        legal_name: `Customer ${id} ${pick(['Inc.', 'GmbH', 'SA', 'Ltd'], h(id, 3))}`,
        industry: pick(INDUSTRIES, h(id, 4)),
        ...(h(id, 5) < 0.97 ? { country: pick(COUNTRIES, h(id, 6)) } : {}),
        address: { street: `${Math.floor(h(id, 7) * 200)} Main St`, city: pick(['Springfield', 'Berlin', 'Lyon', 'Leeds'], h(id, 8)), geo: { lat: h(id, 9) * 90, lon: h(id, 10) * 180 } },
        tags: h(id, 11) < 0.3 ? ['key-account'] : [],
        contacts: [{ name: 'Accounts payable', email: `ap${id}@example.com` }],
        employees: Math.floor(10 + h(id, 12) * 5000),
        ...(h(id, 13) < 0.95 ? { payment_terms_days: pick([15, 30, 30, 45, 60], h(id, 14)) } : {}),
        updated_at: new Date(now - Math.floor(h(id, 15) * 365) * DAY).toISOString(),
      };
      const line = JSON.stringify(doc);
      files[Math.floor((index * PROFILE_FILES) / customers.length)]!.push(line);
      profileCopy.push(copyText(line));
    }
    for (const [k, lines] of files.entries()) await put(`${PREFIXES.profiles}crm-export-${k + 1}.jsonl`, lines.join('\n') + '\n');
    await copyRows(writer, 'COPY seg_profiles (doc) FROM STDIN', profileCopy);
    log(`profiles: ${profileCopy.length} in ${PROFILE_FILES} files`);

    const ratingRows = await writeRatings(writer, customers, now, lakeDir, (bytes) => (lakeBytes += bytes));
    log(`ratings: ${ratingRows} rows in ${SNAPSHOTS} monthly Parquet snapshots`);

    const payments = await writePayments(reader, writer, now, put);
    log(`payments: ${payments.distinctPayments} events (${payments.paymentLines} lines with repeats) for ${payments.paidInvoices} of ${payments.invoices} invoices, ${payments.paymentFiles} day files`);

    await writer.query(SEGMENT_INDEXES);
    // VACUUM too: index-only scans need the visibility map a fresh load lacks.
    await writer.query('VACUUM (ANALYZE) seg_profiles, seg_payments, seg_ratings');
    return { profiles: profileCopy.length, ratingRows, ...payments, lakeBytes, seconds: (performance.now() - started) / 1000 };
  } finally {
    await reader.end();
    await writer.end();
  }
}

async function copyRows(client: pg.Client, statement: string, rows: Iterable<string>): Promise<void> {
  const stream = client.query(copyFrom(statement));
  for (const row of rows) if (!stream.write(`${row}\n`)) await new Promise((resolve) => stream.once('drain', resolve));
  stream.end();
  await new Promise<void>((resolve, reject) => stream.once('finish', resolve).once('error', reject));
}

/** One snapshot per month, as of the 1st, the current month's included; each covers 92% of customers. */
async function writeRatings(writer: pg.Client, customers: readonly { id: number }[], now: number, lakeDir: string, wrote: (bytes: number) => void): Promise<number> {
  const dir = await mkdtemp(path.join(tmpdir(), 'ig-bench-ratings-'));
  const duck = await DuckDBInstance.create(':memory:');
  const connection = await duck.connect();
  let count = 0;
  try {
    const month = new Date(now);
    for (let s = SNAPSHOTS - 1; s >= 0; s--) {
      const asOf = new Date(Date.UTC(month.getUTCFullYear(), month.getUTCMonth() - s, 1)).toISOString();
      const rows: string[] = [];
      for (const { id } of customers) {
        if (h(id, 100 + s) >= 0.92) continue;
        // A customer's grade drifts by a notch now and then around its own level.
        const level = Math.floor(h(id, 20) * 7) + (h(id, 200 + s) < 0.15 ? 1 : 0) - (h(id, 300 + s) < 0.1 ? 1 : 0);
        rows.push(`${id},${RATINGS[Math.min(Math.max(level, 0), RATINGS.length - 1)]},${(h(id, 400 + s) * 100).toFixed(1)},${asOf}`);
      }
      count += rows.length;
      const csv = path.join(dir, `snapshot-${s}.csv`);
      await writeFile(csv, rows.join('\n') + '\n');
      const key = `${PREFIXES.ratings}snapshot-${asOf.slice(0, 10)}.parquet`;
      const target = path.join(lakeDir, key);
      await mkdir(path.dirname(target), { recursive: true });
      await connection.run(
        `COPY (SELECT customer_id, rating, score, as_of FROM read_csv('${csv}', header = false,
           columns = {customer_id: 'BIGINT', rating: 'VARCHAR', score: 'DOUBLE', as_of: 'TIMESTAMPTZ'})) TO '${target}' (FORMAT parquet)`,
      );
      wrote((await stat(target)).size);
      // The comparison needs no score.
      await copyRows(writer, 'COPY seg_ratings (customer_id, rating, as_of) FROM STDIN (FORMAT csv)', rows.map((r) => r.split(',').filter((_, i) => i !== 2).join(',')));
    }
  } finally {
    connection.closeSync();
    duck.closeSync();
    await rm(dir, { recursive: true, force: true });
  }
  return count;
}

interface Invoice {
  readonly id: number;
  readonly issuedMs: number;
  readonly cents: number;
}

interface PaymentEvent {
  readonly paymentId: string;
  readonly invoiceId: number;
  readonly paidMs: number;
  readonly cents: number;
}

/** The events of one invoice, those already made by `now`: most paid in full, some in parts, late, over, or not at all. */
function paymentsOf(inv: Invoice, now: number): PaymentEvent[] {
  const { id, issuedMs, cents } = inv;
  const u = h(id, 30);
  const at = (minDays: number, spanDays: number, stream: number) => issuedMs + Math.floor((minDays + h(id, stream) * spanDays) * DAY);
  const events: { paidMs: number; cents: number }[] = [];
  if (u < 0.7) events.push({ paidMs: at(5, 70, 31), cents });
  else if (u < 0.8) {
    const part = Math.max(1, Math.floor(cents * (0.2 + 0.5 * h(id, 32))));
    events.push({ paidMs: at(5, 20, 33), cents: part });
    if (h(id, 34) < 0.6) events.push({ paidMs: at(30, 40, 35), cents: cents - part });
  } else if (u < 0.82) events.push({ paidMs: at(10, 30, 36), cents: cents + 1000 });
  else if (u < 0.9) events.push({ paidMs: at(60, 60, 37), cents });
  return events.filter((e) => e.paidMs <= now).map((e, k) => ({ paymentId: `pay-${id}-${k + 1}`, invoiceId: id, ...e }));
}

/** The JSON line of an event, with the drift the contract allows (ids and amounts as text or numbers). */
function paymentLine(e: PaymentEvent): string {
  const u = h(e.invoiceId, 40 + e.paymentId.length);
  return JSON.stringify({
    payment_id: e.paymentId,
    invoice_id: u < 0.1 ? String(e.invoiceId) : e.invoiceId,
    paid_at: new Date(e.paidMs).toISOString(),
    amount_usd: h(e.invoiceId, 41) < 0.3 ? dollars(e.cents) : Number(dollars(e.cents)),
    method: pick(METHODS, h(e.invoiceId, 42)),
  });
}

/**
 * Streams the invoices in issue order, so that a day's file is complete (no later invoice can be
 * paid on it) once the stream has passed that day: only a few weeks of events are held at once.
 */
async function writePayments(
  reader: pg.Client,
  writer: pg.Client,
  now: number,
  put: (key: string, body: string) => Promise<void>,
): Promise<Omit<JoinsDatasets, 'profiles' | 'ratingRows' | 'lakeBytes' | 'seconds'>> {
  const byDay = new Map<string, string[]>();
  const written = new Set<string>();
  const copy = writer.query(copyFrom('COPY seg_payments (payment_id, invoice_id, paid_at, amount) FROM STDIN'));
  const copied = new Promise<void>((resolve, reject) => copy.once('finish', resolve).once('error', reject));
  const unpaid: string[] = [];
  const windowStart = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth() - 11, 1);
  let paymentLines = 0;
  let distinctPayments = 0;
  let paidInvoices = 0;
  let invoices = 0;
  let paymentFiles = 0;
  const flush = async (beforeDay: string) => {
    for (const day of [...byDay.keys()].sort()) {
      if (day >= beforeDay) break;
      await put(`${PREFIXES.payments}date=${day}/events.jsonl`, byDay.get(day)!.join('\n') + '\n');
      byDay.delete(day);
      written.add(day);
      paymentFiles++;
    }
  };
  let pending = '';
  let lastFlushDay = '';
  const handle = async (line: string) => {
    const [id, issued, cents] = line.split('\t');
    const inv: Invoice = { id: Number(id), issuedMs: Number(issued), cents: Number(cents) };
    invoices++;
    const events = paymentsOf(inv, now);
    if (events.length === 0 && inv.issuedMs >= windowStart && inv.issuedMs < now - 2 * DAY && unpaid.length < UNPAID_KEPT && h(inv.id, 30) >= 0.9) unpaid.push(String(inv.id));
    if (events.length > 0) paidInvoices++;
    for (const e of events) {
      const text = paymentLine(e);
      const day = new Date(e.paidMs).toISOString().slice(0, 10);
      let lines = byDay.get(day);
      if (!lines) {
        if (written.has(day)) throw new Error(`payments of ${day} arrived after its file was written: invoices are not in issue order`);
        byDay.set(day, (lines = []));
      }
      lines.push(text);
      paymentLines++;
      // At-least-once delivery: some events arrive twice.
      if (h(e.invoiceId, 50 + e.paymentId.length) < 0.01) {
        lines.push(text);
        paymentLines++;
      }
      distinctPayments++;
      if (!copy.write(`${e.paymentId}\t${e.invoiceId}\t${new Date(e.paidMs).toISOString()}\t${dollars(e.cents)}\n`)) {
        await new Promise((resolve) => copy.once('drain', resolve));
      }
    }
    // Every later invoice is issued at or after this one, and paid at least 5 days after its issue.
    const safeDay = new Date(inv.issuedMs + 5 * DAY).toISOString().slice(0, 10);
    if (safeDay > lastFlushDay) {
      lastFlushDay = safeDay;
      await flush(safeDay);
    }
  };
  const source = reader.query(
    copyTo(`COPY (SELECT invoice_id, floor(extract(epoch FROM issue_date) * 1000)::bigint, (amount_usd * 100)::bigint FROM invoices ORDER BY issue_date, invoice_id) TO STDOUT`),
  );
  await pipeline(
    source,
    new Writable({
      async write(chunk: Buffer, _encoding, done) {
        try {
          const lines = (pending + chunk.toString('utf8')).split('\n');
          pending = lines.pop()!;
          for (const line of lines) await handle(line);
          done();
        } catch (err) {
          done(err as Error);
        }
      },
      async final(done) {
        try {
          if (pending) await handle(pending);
          await flush('9999-12-31');
          done();
        } catch (err) {
          done(err as Error);
        }
      },
    }),
  );
  copy.end();
  await copied;
  return { paymentLines, distinctPayments, paidInvoices, invoices, paymentFiles, unpaid };
}

/** One landed file: payments in full for these invoices, as a producer would drop them in. */
export interface LandedFile {
  readonly key: string;
  readonly invoiceIds: string[];
  /** For seg_payments: payment_id, invoice_id, paid_at, amount. */
  readonly rows: [string, string, string, string][];
}

/**
 * Writes a new payments file for `invoices` (id and amount) under today's partition, atomically:
 * written beside its place as a .part file (which listings skip), then renamed into it.
 */
export async function landPayments(lakeDir: string, sequence: number, invoices: readonly { id: string; amount: string }[]): Promise<LandedFile> {
  const paidAt = new Date(Date.now() - 60_000).toISOString();
  const key = `${PREFIXES.payments}date=${paidAt.slice(0, 10)}/landed-${String(sequence).padStart(3, '0')}.jsonl`;
  const rows: LandedFile['rows'] = invoices.map((inv) => [`landed-${sequence}-${inv.id}`, inv.id, paidAt, inv.amount]);
  const body = rows.map(([paymentId, invoiceId, at, amount]) => JSON.stringify({ payment_id: paymentId, invoice_id: Number(invoiceId), paid_at: at, amount_usd: amount, method: 'wire' })).join('\n') + '\n';
  const target = path.join(lakeDir, key);
  await mkdir(path.dirname(target), { recursive: true });
  await writeFile(`${target}.part`, body);
  await rename(`${target}.part`, target);
  return { key, invoiceIds: invoices.map((i) => i.id), rows };
}
