import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { createDuck, type Duck } from '../sources/duckdb/duckdb.js';
import { createDatasets, type Datasets, type DatasetWarning } from '../sources/lake/datasets.js';
import { createObjectCache, type ObjectCache } from '../sources/objectStore/objectCache.js';
import type { ObjectStore } from '../sources/objectStore/objectStore.js';
import { s3StoreOf, startS3Server, type S3Server } from './fixtures/s3Server.js';

const PREFIXES = { profiles: 'sources/customer-profiles/', payments: 'sources/payments/', ratings: 'sources/credit-ratings/' };

const event = (paymentId: string, invoiceId: number | string, paidAt: string, amount: string, method = 'wire') =>
  JSON.stringify({ payment_id: paymentId, invoice_id: invoiceId, paid_at: paidAt, amount_usd: amount, method });

/**
 * The payments dataset as files land, are replaced and removed, in a real S3 protocol server:
 * a landing reads only the new file, and every table equals what reading all the files afresh
 * gives, warnings included.
 */
describe('payment files landing one by one (a real S3 protocol server)', () => {
  let s3: S3Server;
  let store: ObjectStore;
  let cache: ObjectCache;
  let duck: Duck;
  let dir: string;
  const logged: { msg: string; dataset?: string; read?: number; added?: boolean }[] = [];

  const open = (logger = pino({ level: 'silent' })): Datasets =>
    createDatasets({ store, cache, duck, prefixes: PREFIXES, listingTtlMs: 0, timeoutMs: 30_000, warningKeys: true, logger });
  const put = (key: string, lines: string[]) => store.putBytes(`${PREFIXES.payments}${key}`, lines.join('\n') + '\n');

  /** The table's rows and warnings, comparable across builds. */
  const contents = async (datasets: Datasets) => {
    const [loaded, table] = await Promise.all([datasets.load(), datasets.table('payments')]);
    const rows = await duck.session(
      (s) =>
        s.all<Record<string, string>>(
          `SELECT payment_id, invoice_id::VARCHAR AS invoice_id, strftime(paid_at, '%Y-%m-%dT%H:%M:%SZ') AS paid_at, amount_usd::VARCHAR AS amount_usd, method
           FROM ${table} ORDER BY payment_id`,
        ),
      { timeoutMs: 30_000, label: 'test' },
    );
    // Only payments are in the bucket: every warning is theirs.
    const warnings = loaded.warnings.map((w: DatasetWarning) => `${w.code}: ${w.message}`).sort();
    return { rows, warnings };
  };
  /** What a gateway that never saw the earlier file sets reads now. */
  const afresh = () => contents(open());

  const lastBuild = () => logged.filter((l) => l.msg === 'dataset loaded' && l.dataset === 'payments').at(-1);

  before(async () => {
    s3 = await startS3Server();
    store = s3StoreOf(s3);
    dir = await mkdtemp(path.join(tmpdir(), 'ig-datasets-'));
    cache = await createObjectCache({ dir: path.join(dir, 'cache'), maxBytes: 1 << 26, inUseMs: 30_000 });
    duck = await createDuck({ memoryLimit: '512MB', threads: 2, tempDir: path.join(dir, 'duck') }, pino({ level: 'silent' }));
  });
  after(async () => {
    duck?.close();
    store?.close();
    await s3?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps a table that is current again (its files back as they were) when its drop comes due', async () => {
    const prefixes = { profiles: 'again/profiles/', payments: 'again/payments/', ratings: 'again/ratings/' };
    const datasets = createDatasets({ store, cache, duck, prefixes, listingTtlMs: 0, dropAfterMs: 2_000, timeoutMs: 30_000, warningKeys: true, logger: pino({ level: 'silent' }) });
    const rowsOf = (table: string) => duck.session(async (s) => (await s.all<{ n: number }>(`SELECT count(*)::INTEGER AS n FROM ${table}`))[0]!.n, { timeoutMs: 30_000, label: 'test' });
    await store.putBytes(`${prefixes.payments}date=2026-02-01/a.jsonl`, `${event('q1', 1, '2026-02-01T10:00:00Z', '10.00')}\n`);
    await datasets.load();
    const first = await datasets.table('payments');
    await store.putBytes(`${prefixes.payments}date=2026-02-02/b.jsonl`, `${event('q2', 2, '2026-02-02T10:00:00Z', '20.00')}\n`);
    await datasets.load();
    assert.notEqual(await datasets.table('payments'), first);
    // The new file goes again within the drop's delay: the first table is current again.
    await store.delete([`${prefixes.payments}date=2026-02-02/b.jsonl`]);
    await datasets.load();
    assert.equal(await datasets.table('payments'), first);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal(await rowsOf(first), 1, 'the current table was not dropped');
  });

  it('adds a new file to the last table, with the same rows and warnings as reading every file', async () => {
    const capture = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) logged.push(JSON.parse(line));
        done();
      },
    });
    const datasets = open(pino({ level: 'debug' }, capture));

    await put('date=2026-01-01/a.jsonl', [
      event('p1', 1, '2026-01-01T10:00:00Z', '10.00'),
      event('p2', 2, '2026-01-01T11:00:00Z', '20.00'),
      'not json at all',
      event('p2', 2, '2026-01-01T11:00:00Z', '20.00'),
    ]);
    await put('date=2026-01-02/b.jsonl', [event('p3', '3', '2026-01-02T09:00:00Z', '1,300.50'), JSON.stringify({ payment_id: 'p4', paid_at: '2026-01-02T09:00:00Z' })]);
    const first = await contents(datasets);
    assert.deepEqual(
      first.rows.map((r) => r.payment_id),
      ['p1', 'p2', 'p3'],
    );
    assert.equal(lastBuild()?.read, 2);
    assert.deepEqual(first, await afresh());

    // A landing: a new event, a repeat of p1 delivered earlier than the one held (it counts
    // instead), a repeat of p3 delivered later (it does not), a repeat within the file, junk.
    await put('date=2026-01-03/c.jsonl', [
      event('p5', 5, '2026-01-03T08:00:00Z', '50.00'),
      event('p1', 1, '2026-01-01T09:00:00Z', '10.00', 'card'),
      event('p3', 3, '2026-01-03T09:00:00Z', '1300.50', 'card'),
      event('p6', 6, '2026-01-03T10:00:00Z', '60.00'),
      event('p6', 6, '2026-01-03T10:00:00Z', '60.00'),
      '{"payment_id": ',
    ]);
    const second = await contents(datasets);
    assert.deepEqual(lastBuild(), { ...lastBuild(), read: 1, added: true }, 'only the new file is read');
    assert.deepEqual(
      second.rows.map((r) => [r.payment_id, r.paid_at, r.method]),
      [
        ['p1', '2026-01-01T09:00:00Z', 'card'],
        ['p2', '2026-01-01T11:00:00Z', 'wire'],
        ['p3', '2026-01-02T09:00:00Z', 'wire'],
        ['p5', '2026-01-03T08:00:00Z', 'wire'],
        ['p6', '2026-01-03T10:00:00Z', 'wire'],
      ],
    );
    assert.deepEqual(second, await afresh());
    assert.ok(
      second.warnings.some((w) => w.startsWith('SOURCE_DUPLICATES: 4 repeated payment event')),
      `p2, p1, p3 and p6 repeated once each: ${second.warnings.join('; ')}`,
    );
    assert.ok(second.warnings.some((w) => w.startsWith('SOURCE_MALFORMED: payment events: 2 line(s)')), 'junk lines of the old and the new file both reported');

    // A replaced file, then a removed one: every file is read again.
    await put('date=2026-01-01/a.jsonl', [event('p1', 1, '2026-01-01T12:00:00Z', '11.00')]);
    const replaced = await contents(datasets);
    assert.deepEqual(lastBuild(), { ...lastBuild(), read: 3, added: false });
    assert.deepEqual(replaced, await afresh());
    assert.equal(replaced.rows.find((r) => r.payment_id === 'p1')?.paid_at, '2026-01-01T09:00:00Z', 'the earlier delivery in c.jsonl still counts');
    assert.equal(replaced.rows.find((r) => r.payment_id === 'p2'), undefined, 'p2 was only in the replaced file');

    await store.delete([`${PREFIXES.payments}date=2026-01-03/c.jsonl`]);
    const removed = await contents(datasets);
    assert.deepEqual(lastBuild(), { ...lastBuild(), read: 2, added: false });
    assert.deepEqual(removed, await afresh());
    assert.deepEqual(
      removed.rows.map((r) => [r.payment_id, r.amount_usd]),
      [
        ['p1', '11.00'],
        ['p3', '1300.50'],
      ],
    );
  });
});
