import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import pg from 'pg';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { startS3Server, type S3Server } from './fixtures/s3Server.js';
import { SEGMENT_INDEXES, SEGMENT_TABLES, segmentCheck, type SegmentDimension } from './fixtures/segmentCheck.js';
import { InvoiceByIdDocument, InvoicesWithPaymentsDocument, SegmentStatsDocument, type SegmentStatsQuery } from './generated/graphql.js';

const skip = await missingServices('postgres');

interface Profile {
  customerId: number;
  industry: string | null;
  country: string | null;
  terms: number | null;
  employees: number | null;
  updatedAt: string;
}
interface PaymentEvent {
  paymentId: string;
  invoiceId: number;
  paidAt: string;
  amount: string;
}
interface Rating {
  customerId: number;
  rating: string;
  asOf: string;
}

/** What the test writes, as the rows it means: loaded into Postgres for the independent check. */
const profiles: Profile[] = [];
const payments: PaymentEvent[] = [];
const ratings: Rating[] = [];

describe('joined analytics over the users\u2019 datasets (a real S3 protocol server)', { skip }, () => {
  let s3: S3Server;
  let db: TestDatabase;
  let gw: TestGateway;
  let sql: pg.Pool;
  let dir: string;

  const put = (key: string, body: string | Buffer) => gw.gateway.lake.store.putBytes(key, body);

  before(async () => {
    s3 = await startS3Server();
    db = await createTestDatabase('joined');
    gw = await startTestGateway({
      databaseUrl: db.url,
      env: { ...s3.env, CHANGE_FEED: '1', SOURCES_LISTING_TTL_MS: '0', SOURCES_WARNING_KEYS: '1' },
      seed: { customers: 30, invoices: 3_000, months: 14, seed: 5 },
    });
    await eventually(() => gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    assert.equal((await gw.gateway.lake.exportNow()).kind, 'exported');
    sql = new pg.Pool({ connectionString: db.url, max: 3 });
    dir = await mkdtemp(path.join(tmpdir(), 'ig-joined-'));

    // Profiles in two files; drift of types; the later updated_at wins; junk lines.
    const industries = ['software', 'retail', 'energy'];
    const lines1: string[] = [];
    const lines2: string[] = [];
    for (let id = 1; id <= 30; id++) {
      if (id % 10 === 0) continue; // no profile at all
      const p: Profile = { customerId: id, industry: industries[id % 3]!, country: id % 7 === 0 ? null : ['US', 'DE'][id % 2]!, terms: id % 4 === 0 ? null : 15 + (id % 3) * 15, employees: 1000 + id, updatedAt: '2026-01-01T00:00:00Z' };
      lines1.push(JSON.stringify({
        customer_id: id % 2 === 0 ? String(id) : id,
        legal_name: `Customer ${id}`,
        industry: p.industry,
        ...(p.country ? { country: p.country.toLowerCase() } : {}),
        ...(p.terms === null ? {} : { payment_terms_days: p.terms }),
        employees: id % 3 === 0 ? (1000 + id).toLocaleString('en-US') : 1000 + id,
        address: { city: 'X', geo: { lat: 1 } },
        tags: ['a', 'b'],
        updated_at: p.updatedAt,
      }));
      profiles.push(p);
    }
    // A newer record for customer 3 changes its industry.
    lines2.push(JSON.stringify({ customer_id: '3', legal_name: 'Customer 3 renamed', industry: 'media', country: 'FR', payment_terms_days: 60, employees: '2,500', updated_at: '2026-06-01T00:00:00Z' }));
    Object.assign(profiles.find((p) => p.customerId === 3)!, { industry: 'media', country: 'FR', terms: 60, employees: 2500, updatedAt: '2026-06-01T00:00:00Z' });
    lines1.push('this is not json', '[1, 2, 3]', '{"legal_name": "no id"}');
    await put('sources/customer-profiles/a.jsonl', lines1.join('\n'));
    await put('sources/customer-profiles/b.jsonl.gz', gzipSync(lines2.join('\n')));

    // Payments: full, partial, overpaid, duplicated, for an unknown invoice, and junk.
    const { rows: invoices } = await sql.query<{ id: string; amount: string; issued: string }>(
      `SELECT invoice_id::text AS id, amount_usd::text AS amount, to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS issued FROM invoices ORDER BY invoice_id DESC LIMIT 400`,
    );
    const byDay = new Map<string, string[]>();
    let n = 0;
    const pay = (invoiceId: string, amount: string, days: number, issued: string, duplicate = false) => {
      const paidAt = new Date(Date.parse(issued) + days * 86_400_000).toISOString();
      if (Date.parse(paidAt) > Date.now()) return; // not paid yet
      const event: PaymentEvent = { paymentId: `p${++n}`, invoiceId: Number(invoiceId), paidAt, amount };
      const line = JSON.stringify({ payment_id: event.paymentId, invoice_id: n % 2 ? invoiceId : Number(invoiceId), paid_at: paidAt, amount_usd: n % 3 ? amount : Number(amount), method: 'wire' });
      const day = paidAt.slice(0, 10);
      byDay.set(day, [...(byDay.get(day) ?? []), line, ...(duplicate ? [line] : [])]);
      payments.push(event);
    };
    for (const [i, inv] of invoices.entries()) {
      const cents = Math.round(Number(inv.amount) * 100);
      if (i % 4 === 0) pay(inv.id, inv.amount, 10 + (i % 50), inv.issued, i % 8 === 0);
      else if (i % 4 === 1) pay(inv.id, (Math.floor(cents / 3) / 100).toFixed(2), 5, inv.issued);
      else if (i % 4 === 2 && i % 3 === 0) pay(inv.id, ((cents + 500) / 100).toFixed(2), 40, inv.issued);
    }
    // The oldest invoices paid in two parts: settled by the second (on time or late), or a cent short.
    const { rows: oldest } = await sql.query<{ id: string; amount: string; issued: string }>(
      `SELECT invoice_id::text AS id, amount_usd::text AS amount, to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS issued FROM invoices ORDER BY issue_date, invoice_id LIMIT 60`,
    );
    for (const [i, inv] of oldest.entries()) {
      const cents = Math.round(Number(inv.amount) * 100);
      const first = Math.floor(cents / 2);
      pay(inv.id, (first / 100).toFixed(2), 3, inv.issued);
      pay(inv.id, ((cents - first - (i % 3 === 2 ? 1 : 0)) / 100).toFixed(2), 10 + (i % 40), inv.issued);
    }
    const days = [...byDay.keys()].sort();
    // A payment for an invoice that does not exist, a line that is not JSON, one without a usable invoice id.
    byDay.get(days[0]!)!.push(
      '{"payment_id": "orphan", "invoice_id": 999999999, "amount_usd": "12.00", "paid_at": "2026-01-01T00:00:00Z"}',
      '{"payment_id": "broken"',
      '{"payment_id": "x1", "invoice_id": "abc", "amount_usd": 1, "paid_at": "2026-01-01T00:00:00Z"}',
    );
    for (const [day, lines] of byDay) await put(`sources/payments/date=${day}/events.jsonl`, lines.join('\n'));

    // Ratings: two Parquet snapshots, ids as numbers in one and as text in the other.
    const duck = await DuckDBInstance.create(':memory:');
    const c = await duck.connect();
    for (const [index, asOf] of ['2026-03-31T00:00:00Z', '2026-09-30T00:00:00Z'].entries()) {
      const rows: Rating[] = [];
      for (let id = 1; id <= 30; id++) if ((id + index) % 5 !== 0) rows.push({ customerId: id, rating: ['AAA', 'BBB', 'B', 'D'][(id + index) % 4]!, asOf });
      ratings.push(...rows);
      const json = path.join(dir, `r${index}.json`);
      const file = path.join(dir, `r${index}.parquet`);
      await writeFile(json, rows.map((r) => JSON.stringify({ customer_id: r.customerId, rating: r.rating, score: 50.5, as_of: r.asOf })).join('\n'));
      await c.run(
        `COPY (SELECT customer_id::${index === 0 ? 'BIGINT' : 'VARCHAR'} AS customer_id, rating, score, as_of::TIMESTAMPTZ AS as_of
           FROM read_json('${json}', format = 'newline_delimited', columns = {customer_id: 'BIGINT', rating: 'VARCHAR', score: 'DOUBLE', as_of: 'VARCHAR'})) TO '${file}' (FORMAT parquet)`,
      );
      await put(`sources/credit-ratings/snapshot-${index}.parquet`, await readFile(file));
    }
    c.closeSync();
    duck.closeSync();

    // The same rows in Postgres, for the independent check: each profile as the JSON object it means.
    await sql.query(SEGMENT_TABLES);
    for (const p of profiles) {
      await sql.query(`INSERT INTO seg_profiles VALUES ($1)`, [{ customer_id: p.customerId, industry: p.industry, country: p.country, payment_terms_days: p.terms }]);
    }
    for (const p of payments) await sql.query(`INSERT INTO seg_payments VALUES ($1, $2, $3, $4)`, [p.paymentId, p.invoiceId, p.paidAt, p.amount]);
    for (const r of ratings) await sql.query(`INSERT INTO seg_ratings VALUES ($1, $2, $3)`, [r.customerId, r.rating, r.asOf]);
    await sql.query(SEGMENT_INDEXES);
  });

  after(async () => {
    await sql?.end();
    await gw?.stop();
    await db?.drop();
    await s3?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const FIELD: Record<string, keyof SegmentStatsQuery['segmentStats']['rows'][number]> = {
    ISSUER_INDUSTRY: 'issuerIndustry', ISSUER_COUNTRY: 'issuerCountry', ISSUER_RATING: 'issuerRating',
    RECEIVER_INDUSTRY: 'receiverIndustry', RECEIVER_COUNTRY: 'receiverCountry', RECEIVER_RATING: 'receiverRating',
    MONTH: 'month', ISSUER: 'issuerId', RECEIVER: 'receiverId',
  };

  it('segmentStats equals the same join computed in Postgres, for several dimension sets', async () => {
    for (const [dimensions, months] of [
      [['ISSUER_INDUSTRY'], 12],
      [['RECEIVER_RATING', 'RECEIVER_COUNTRY'], 12],
      [['ISSUER_RATING', 'MONTH'], 3],
      [['RECEIVER'], 14],
      [[], 6],
    ] as [string[], number][]) {
      const res = await gw.request(SegmentStatsDocument, { dimensions: dimensions as never, months, first: 10_000 });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      const stats = res.data!.segmentStats;
      assert.equal(stats.freshness.engine, 'LAKE');
      const got = stats.rows.map((r) => {
        const row: Record<string, unknown> = { invoiceCount: r.invoiceCount, totalUsd: r.totalUsd, paidUsd: r.paidUsd, outstandingUsd: r.outstandingUsd, avgDaysToPay: r.avgDaysToPay, lateShare: r.lateShare };
        for (const d of dimensions) row[d] = r[FIELD[d]!];
        return row;
      });
      assert.deepEqual(got, await segmentCheck(sql, { dimensions: dimensions as SegmentDimension[], months, asOf: stats.freshness.asOf }), dimensions.join(','));
      const counted = got.reduce((n, r) => n + (r.invoiceCount as number), 0);
      assert.equal(stats.freshness.lakeRows + stats.freshness.liveRows, counted, `freshness of ${dimensions.join(',')}`);
    }
  });

  it('answers the total of no invoices (no dimensions, a filter nobody matches) as one row of zeros', async () => {
    const res = await gw.request(SegmentStatsDocument, { dimensions: [], months: 1, filter: { issuerIds: ['999999'] }, first: 10 });
    assert.equal(res.errors, undefined, JSON.stringify(res.errors));
    const [row, ...more] = res.data!.segmentStats.rows;
    assert.deepEqual(more, []);
    assert.deepEqual(
      { invoiceCount: row?.invoiceCount, totalUsd: row?.totalUsd, paidUsd: row?.paidUsd, outstandingUsd: row?.outstandingUsd, avgDaysToPay: row?.avgDaysToPay, lateShare: row?.lateShare },
      { invoiceCount: 0, totalUsd: '0.00', paidUsd: '0.00', outstandingUsd: '0.00', avgDaysToPay: null, lateShare: null },
    );
  });

  it("counts freshness over the invoices the query kept: a filter's rows, live or from the lake", async () => {
    const ask = async () => {
      const res = await gw.request(SegmentStatsDocument, { dimensions: ['ISSUER'], months: 1, filter: { issuerIds: ['2'] }, first: 10 });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      return res.data!.segmentStats;
    };
    const before = await ask();
    await sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) SELECT now(), 2, 3, 10 + g FROM generate_series(1, 3) g`);
    await sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), 4, 3, 99)`);
    const after = await ask();
    assert.equal(after.freshness.engine, 'LAKE');
    assert.equal(after.freshness.liveRows - before.freshness.liveRows, 3, 'only the filtered issuer\'s new invoices');
    assert.equal(after.freshness.lakeRows, before.freshness.lakeRows);
    const { rows } = await sql.query(`SELECT count(*)::int AS n FROM invoices WHERE issuer_id = 2 AND issue_date >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`);
    assert.equal(after.freshness.lakeRows + after.freshness.liveRows, rows[0].n);
    assert.equal(after.rows[0]?.invoiceCount, rows[0].n);
  });

  it('reports malformed lines, incomplete records, duplicates and payments for unknown invoices', async () => {
    const res = await gw.request(SegmentStatsDocument, { dimensions: ['ISSUER_INDUSTRY'], months: 12 });
    const codes = res.data!.segmentStats.warnings.map((w) => w.code);
    for (const code of ['SOURCE_MALFORMED', 'SOURCE_INCOMPLETE', 'SOURCE_DUPLICATES', 'PAYMENTS_UNMATCHED']) assert.ok(codes.includes(code), `${code} in ${JSON.stringify(codes)}`);
    const malformed = res.data!.segmentStats.warnings.filter((w) => w.code === 'SOURCE_MALFORMED').map((w) => w.message).join(' | ');
    assert.match(malformed, /customer profiles: 2 line\(s\) that are not a JSON object were skipped \(in sources\/customer-profiles\/a\.jsonl\)/);
    assert.match(malformed, /payment events: 1 line/);
  });

  it('profiles, ratings and payments through loaders: 100 invoices cost a constant number of queries', async () => {
    const { rows } = await sql.query<{ id: string }>(`SELECT invoice_id::text AS id FROM invoices ORDER BY invoice_id DESC LIMIT 100`);
    const ids = rows.map((r) => r.id);
    const queriesFor = async (some: string[]) => {
      const before = gw.gateway.lake.duckQueries();
      const res = await gw.request(InvoicesWithPaymentsDocument, { ids: some });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      return { res, queries: gw.gateway.lake.duckQueries() - before };
    };
    const few = await queriesFor(ids.slice(0, 5));
    const { res, queries } = await queriesFor(ids);
    // Payments, profiles (both parties, then receivers' terms for dueDate), ratings: batched.
    assert.ok(queries <= 4, `DuckDB queries for 100 invoices: ${queries}`);
    assert.equal(queries, few.queries, 'as many for 100 invoices as for 5');
    for (const invoice of res.data!.invoices) {
      const mine = payments.filter((p) => String(p.invoiceId) === invoice!.id);
      const paid = mine.reduce((s, p) => s + Math.round(Number(p.amount) * 100), 0);
      const amount = Math.round(Number(invoice!.amountUsd) * 100);
      assert.equal(invoice!.payments.length, mine.length, `payments of ${invoice!.id} counted once each`);
      assert.equal(invoice!.paidUsd, (paid / 100).toFixed(2));
      assert.equal(invoice!.outstandingUsd, (Math.max(amount - paid, 0) / 100).toFixed(2));
      assert.equal(invoice!.paymentStatus, paid === 0 ? 'UNPAID' : paid < amount ? 'PARTIAL' : paid === amount ? 'PAID' : 'OVERPAID');
    }
    // Due: the issue date plus the receiver's terms (30 days without a profile or terms).
    const { rows: dated } = await sql.query<{ id: string; issued: string; receiver: number }>(
      `SELECT invoice_id::text AS id, to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') AS issued, receiver_id AS receiver FROM invoices WHERE invoice_id = ANY($1::bigint[])`,
      [ids],
    );
    for (const row of dated) {
      const terms = profiles.find((p) => p.customerId === row.receiver)?.terms ?? 30;
      const due = new Date(Date.parse(`${row.issued}Z`) + terms * 86_400_000).toISOString().slice(0, 19);
      assert.equal(res.data!.invoices.find((i) => i!.id === row.id)!.dueDate.slice(0, 19), due, `due date of ${row.id}`);
    }
    const { rows: three } = await sql.query<{ id: string }>(`SELECT invoice_id::text AS id FROM invoices WHERE issuer_id = 3 LIMIT 1`);
    const issuer3 = (await gw.request(InvoicesWithPaymentsDocument, { ids: [three[0]!.id] })).data!.invoices[0]!.issuer;
    assert.equal(issuer3.profile?.industry, 'media', 'the latest updated_at wins');
    assert.equal(issuer3.profile?.employees, 2500, '"2,500" read as a number');
    assert.equal(issuer3.profile?.country, 'FR');
    assert.equal(issuer3.rating?.rating, ['AAA', 'BBB', 'B', 'D'][(3 + 1) % 4], 'the latest snapshot is current');
  });

  it('pages with cursors of its own query, and refuses bad arguments with BAD_USER_INPUT', async () => {
    const all = await gw.request(SegmentStatsDocument, { dimensions: ['RECEIVER'], months: 14, first: 10_000 });
    const paged: unknown[] = [];
    let after: string | null = null;
    do {
      const res: { data?: SegmentStatsQuery | null } = await gw.request(SegmentStatsDocument, { dimensions: ['RECEIVER'], months: 14, first: 7, after });
      paged.push(...res.data!.segmentStats.rows);
      after = res.data!.segmentStats.pageInfo.hasNextPage ? res.data!.segmentStats.pageInfo.endCursor! : null;
    } while (after);
    assert.deepEqual(paged, all.data!.segmentStats.rows);
    const cursor = (await gw.request(SegmentStatsDocument, { dimensions: ['RECEIVER'], months: 14, first: 1 })).data!.segmentStats.pageInfo.endCursor;
    for (const [label, variables] of [
      ['months 0', { dimensions: ['MONTH'], months: 0 }],
      ['first 0', { dimensions: ['MONTH'], months: 3, first: 0 }],
      ['a malformed cursor', { dimensions: ['MONTH'], months: 3, after: 'x' }],
      ['a cursor of another query', { dimensions: ['MONTH'], months: 3, after: cursor }],
      ['a malformed customer id', { dimensions: ['MONTH'], months: 3, filter: { issuerIds: ['abc'] } }],
    ] as [string, Record<string, unknown>][]) {
      const res = await gw.request(SegmentStatsDocument, variables as never);
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `${label}: ${JSON.stringify(res.errors)}`);
    }
    const unknown = await gw.request(SegmentStatsDocument, { dimensions: ['NOPE'], months: 3 } as never);
    assert.ok(unknown.errors?.length, 'a dimension outside the enum is refused by validation');
  });

  it('a replaced object is part of the next query', async () => {
    const issuer = async () => {
      const { rows } = await sql.query<{ id: string }>(`SELECT invoice_id::text AS id FROM invoices WHERE issuer_id = 11 LIMIT 1`);
      return (await gw.request(InvoicesWithPaymentsDocument, { ids: [rows[0]!.id] })).data!.invoices[0]!.issuer.profile;
    };
    assert.equal((await issuer())?.industry, 'energy');
    await put('sources/customer-profiles/b.jsonl.gz', gzipSync(JSON.stringify({ customer_id: 11, industry: 'aerospace', updated_at: '2026-07-01T00:00:00Z' })));
    assert.equal((await issuer())?.industry, 'aerospace');
  });

  it('payments for invoices that do not exist are counted exactly: one deleted after export, one inserted after it', async () => {
    const unmatched = async () => {
      const res = await gw.request(SegmentStatsDocument, { dimensions: ['ISSUER_INDUSTRY'], months: 12 });
      assert.equal(res.data?.segmentStats.freshness.engine, 'LAKE', JSON.stringify(res.errors ?? res.data?.segmentStats.warnings));
      const warning = res.data!.segmentStats.warnings.find((w) => w.code === 'PAYMENTS_UNMATCHED');
      return Number(/(\d+) invoice id/.exec(warning?.message ?? '0 invoice id')![1]);
    };
    assert.equal(await unmatched(), 1, 'the orphan alone');
    // Held in the lake's files, gone from Postgres: its payments now match nothing.
    const paid = payments.find((p) => p.paymentId === 'p1')!;
    await sql.query(`DELETE FROM invoices WHERE invoice_id = $1`, [paid.invoiceId]);
    assert.equal(await unmatched(), 2);
    // Not in the lake's files yet, but an invoice: its payment matches.
    const { rows } = await sql.query<{ id: string }>(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (1, 2, 50) RETURNING invoice_id::text AS id`);
    const event = JSON.stringify({ payment_id: 'fresh-1', invoice_id: Number(rows[0]!.id), paid_at: new Date().toISOString(), amount_usd: '50.00' });
    await put(`sources/payments/date=${new Date().toISOString().slice(0, 10)}/fresh.jsonl`, event + '\n');
    assert.equal(await unmatched(), 2);
  });

  it('an unreachable object store fails joined analytics with SERVICE_UNAVAILABLE; lookups still answer', async () => {
    await s3.kill();
    try {
      const res = await gw.request(SegmentStatsDocument, { dimensions: ['ISSUER_INDUSTRY'], months: 12 });
      assert.equal(res.errors?.[0]?.extensions?.code, 'SERVICE_UNAVAILABLE', JSON.stringify(res.errors));
      const lookup = await gw.request(InvoiceByIdDocument, { id: '1' });
      assert.equal(lookup.data?.invoice?.id, '1');
    } finally {
      await s3.restart();
    }
  });
});
