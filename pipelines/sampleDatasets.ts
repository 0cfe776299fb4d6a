import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import type { DatasetPrefixes } from '../sources/lake/datasets.js';
import type { ObjectStore } from '../sources/objectStore/objectStore.js';
import type { Database, Statement } from '../sources/postgres/database.js';

/** Payments are generated for the newest invoices only: a sample, not a second copy of the table. */
const PAYMENT_SAMPLE = 50_000;

const CUSTOMERS: Statement = { name: 'sample_customers', text: 'SELECT customer_id AS id, customer_name AS name FROM customers ORDER BY customer_id' };
const INVOICES: Statement = {
  name: 'sample_invoices',
  text: `SELECT invoice_id::text AS id, to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "issueDate", amount_usd::text AS amount
    FROM invoices ORDER BY invoice_id DESC LIMIT $1`,
};

const INDUSTRIES = ['software', 'logistics', 'retail', 'manufacturing', 'healthcare', 'energy', 'finance', 'media'];
const COUNTRIES = ['US', 'DE', 'FR', 'GB', 'NL', 'ES', 'BR', 'JP', 'IN', 'CA'];
const RATINGS = ['AAA', 'AA', 'A', 'BBB', 'BB', 'B', 'CCC', 'CC', 'C', 'D'];
const METHODS = ['card', 'wire', 'ach', 'sepa'];

/** A small deterministic generator: the same seed writes the same files. */
function random(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * Realistic samples of the three datasets, written into the lake for the demo and for trying
 * joined analytics: profiles over two CRM exports (the second gzipped, updating some customers),
 * payment events by day (partial payments, unpaid invoices, repeated deliveries, a few for
 * invoices that do not exist), two rating snapshots in Parquet, and the drift real exports have:
 * ids as text, "1,200" employees, missing fields, and a few lines that are not JSON at all.
 */
export async function writeSampleDatasets(deps: { db: Database; store: ObjectStore; prefixes: DatasetPrefixes; seed: number; logger: Logger }): Promise<{ objects: number }> {
  const next = random(deps.seed);
  const pick = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)]!;
  const customers = await deps.db.query<{ id: number; name: string }>(CUSTOMERS);
  const invoices = await deps.db.query<{ id: string; issueDate: string; amount: string }>(INVOICES, [PAYMENT_SAMPLE]);
  const now = Date.now();
  let objects = 0;
  const put = async (key: string, body: Buffer | string) => {
    await deps.store.putBytes(key, body);
    objects++;
  };

  // Profiles: most customers, drifting types; a later export updates a tenth of them.
  const profileLine = (c: { id: number; name: string }, updatedAt: Date, terms: number) => {
    const employees = Math.round(10 + next() * 5000);
    const profile: Record<string, unknown> = {
      customer_id: next() < 0.2 ? String(c.id) : c.id,
      legal_name: `${c.name} ${pick(['Inc.', 'GmbH', 'SA', 'Ltd'])}`,
      industry: pick(INDUSTRIES),
      address: { street: `${Math.round(next() * 200)} Main St`, city: pick(['Springfield', 'Berlin', 'Lyon', 'Leeds']), geo: { lat: next() * 90, lon: next() * 180 } },
      tags: next() < 0.5 ? ['key-account'] : [],
      contacts: [{ name: 'Accounts payable', email: `ap${c.id}@example.com` }],
      employees: next() < 0.25 ? employees.toLocaleString('en-US') : employees,
      payment_terms_days: terms,
      updated_at: updatedAt.toISOString(),
    };
    if (next() < 0.9) profile.country = pick(COUNTRIES);
    return JSON.stringify(profile);
  };
  const first: string[] = [];
  const second: string[] = [];
  for (const c of customers) {
    if (next() < 0.9) first.push(profileLine(c, new Date(now - 90 * 86_400_000), pick([15, 30, 30, 45, 60])));
    if (next() < 0.1) second.push(profileLine(c, new Date(now - 5 * 86_400_000), pick([30, 60, 90])));
  }
  first.splice(Math.floor(first.length / 2), 0, '{"customer_id": 1, "legal_name": "truncated', 'not json at all');
  await put(`${deps.prefixes.profiles}crm-export-1.jsonl`, first.join('\n') + '\n');
  await put(`${deps.prefixes.profiles}crm-export-2.jsonl.gz`, gzipSync(second.join('\n') + '\n'));

  // Payments: by the day they were made.
  const byDay = new Map<string, string[]>();
  let sequence = 0;
  const emit = (invoiceId: string, paidAt: Date, amount: string) => {
    if (paidAt.getTime() > now) return;
    const event: Record<string, unknown> = {
      payment_id: `pay_${deps.seed}_${++sequence}`,
      invoice_id: next() < 0.2 ? invoiceId : Number(invoiceId),
      paid_at: paidAt.toISOString(),
      amount_usd: next() < 0.3 ? amount : Number(amount),
      method: pick(METHODS),
    };
    const line = JSON.stringify(event);
    const day = paidAt.toISOString().slice(0, 10);
    const lines = byDay.get(day) ?? [];
    lines.push(line);
    // At-least-once delivery: some events arrive twice.
    if (next() < 0.02) lines.push(line);
    byDay.set(day, lines);
  };
  for (const invoice of invoices) {
    const cents = Math.round(Number(invoice.amount) * 100);
    const issued = Date.parse(invoice.issueDate);
    const roll = next();
    const at = (days: number) => new Date(issued + days * 86_400_000 + Math.floor(next() * 86_400_000));
    if (roll < 0.55) emit(invoice.id, at(5 + next() * 55), invoice.amount);
    else if (roll < 0.7) {
      const part = Math.max(1, Math.floor(cents * (0.2 + next() * 0.5)));
      emit(invoice.id, at(5 + next() * 20), (part / 100).toFixed(2));
      if (next() < 0.5) emit(invoice.id, at(30 + next() * 40), ((cents - part) / 100).toFixed(2));
    } else if (roll < 0.72) emit(invoice.id, at(10 + next() * 30), ((cents + 1000) / 100).toFixed(2));
  }
  if (invoices.length > 0) {
    for (let i = 0; i < 3; i++) emit(String(900_000_000_000 + i), new Date(now - (i + 1) * 86_400_000), '10.00');
  }
  const days = [...byDay.keys()].sort();
  for (const [i, day] of days.entries()) {
    const lines = byDay.get(day)!;
    if (i === days.length - 1) lines.push('{"payment_id": "broken", ');
    await put(`${deps.prefixes.payments}date=${day}/events.jsonl`, lines.join('\n') + '\n');
  }

  // Ratings: two quarterly snapshots; the newer one with ids as text (drift between files).
  const dir = await mkdtemp(path.join(tmpdir(), 'ig-sample-'));
  const duck = await DuckDBInstance.create(':memory:');
  const connection = await duck.connect();
  try {
    for (const [index, asOf] of [new Date(now - 120 * 86_400_000), new Date(now - 30 * 86_400_000)].entries()) {
      const rows = customers.filter(() => next() < 0.8).map((c) => ({ customer_id: c.id, rating: pick(RATINGS), score: Math.round(next() * 1000) / 10, as_of: asOf.toISOString() }));
      const json = path.join(dir, `ratings-${index}.json`);
      const parquet = path.join(dir, `ratings-${index}.parquet`);
      await writeFile(json, rows.map((r) => JSON.stringify(r)).join('\n'));
      const id = index === 0 ? 'customer_id::BIGINT' : 'customer_id::VARCHAR';
      await connection.run(
        `COPY (SELECT ${id} AS customer_id, rating, score, as_of::TIMESTAMPTZ AS as_of FROM read_json('${json}', format = 'newline_delimited',
           columns = {customer_id: 'BIGINT', rating: 'VARCHAR', score: 'DOUBLE', as_of: 'VARCHAR'})) TO '${parquet}' (FORMAT parquet)`,
      );
      await put(`${deps.prefixes.ratings}snapshot-${asOf.toISOString().slice(0, 10)}.parquet`, await readFile(parquet));
    }
  } finally {
    connection.closeSync();
    duck.closeSync();
    await rm(dir, { recursive: true, force: true });
  }
  deps.logger.info({ objects, profiles: first.length + second.length, paymentDays: days.length }, 'sample datasets written to the lake');
  return { objects };
}
