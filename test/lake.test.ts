import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { seededRandom } from './fixtures/random.js';
import { exportSettled, exportWritten, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { startS3Server, type S3Server } from './fixtures/s3Server.js';
import { allPages, assertExact, assertFirstPagesByCustomer, directStats } from './fixtures/statsCheck.js';
import { eventually, repeatUntil } from './fixtures/eventually.js';
import { CustomerStatsDocument, InvoiceByIdDocument, InvoiceStatsDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

type Lakeside = FeedGateway;

/** A gateway with the feed on a seeded database, its lake exported once. */
async function startLakeside(label: string, env: Record<string, string>): Promise<Lakeside> {
  const side = await startFeedGateway(label, { env, seed: { customers: 40, invoices: 4_000, months: 14, seed: 9 }, poolMax: 4 });
  try {
    assert.equal((await side.gw.gateway.lake.exportNow()).kind, 'exported');
    return side;
  } catch (err) {
    await side.stop();
    throw err;
  }
}

/** An export that writes every invoice again (the lake was emptied, or lost objects): its outcome. */
async function exportsEverything(side: Lakeside, what: string) {
  const outcome = await exportWritten(side.gw, what);
  const { rows } = await side.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM invoices');
  assert.equal(outcome.rows, rows[0]!.n, `${what}: every invoice exported again`);
  return outcome;
}

/**
 * Random inserts (some in transactions that commit late, out of id order), updates of amount,
 * party and date (moving invoices between months and customers), deletes, and exports in
 * between; after every step invoiceStats must equal the aggregate computed in Postgres.
 */
async function randomHistory(side: Lakeside, seed: number, steps: number, onStep: (label: string) => Promise<void>) {
  // Every value chosen here, none by Postgres's random(): the same seed gives the same history
  // on two databases seeded alike.
  const next = seededRandom(seed);
  const pick = (n: number) => 1 + Math.floor(next() * n);
  const amount = () => (1 + next() * 5000).toFixed(2);
  const daysAgo = () => Math.floor(next() * 420);
  const someInvoice = `(SELECT invoice_id FROM invoices WHERE invoice_id >= $1 ORDER BY invoice_id LIMIT 1)`;
  const anyId = () => pick(4_400);
  for (let step = 0; step < steps; step++) {
    const kind = next();
    let label: string;
    if (kind < 0.3) {
      const rows = Array.from({ length: pick(20) }, () => [daysAgo(), pick(40), pick(40), amount()] as const);
      await side.sql.query(
        `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
         SELECT now() - make_interval(days => d), i, r, a FROM unnest($1::int[], $2::int[], $3::int[], $4::numeric[]) AS t(d, i, r, a)`,
        [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2]), rows.map((r) => r[3])],
      );
      label = `insert ${rows.length}`;
    } else if (kind < 0.45) {
      // Ids taken first, committed last: a later insert commits before this one.
      const late = await side.sql.connect();
      await late.query('BEGIN');
      await late.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES ($1, $2, $3)`, [pick(40), pick(40), amount()]);
      await side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now() - interval '2 days', $1, $2, $3)`, [pick(40), pick(40), amount()]);
      await late.query('COMMIT');
      late.release();
      label = 'late commit';
    } else if (kind < 0.6) {
      await side.sql.query(`UPDATE invoices SET amount_usd = $2 WHERE invoice_id = ${someInvoice}`, [anyId(), amount()]);
      label = 'update amount';
    } else if (kind < 0.7) {
      await side.sql.query(`UPDATE invoices SET issuer_id = $2, receiver_id = $3 WHERE invoice_id = ${someInvoice}`, [anyId(), pick(40), pick(40)]);
      label = 'update parties';
    } else if (kind < 0.8) {
      await side.sql.query(`UPDATE invoices SET issue_date = now() - make_interval(days => $2) WHERE invoice_id = ${someInvoice}`, [anyId(), daysAgo()]);
      label = 'move months';
    } else if (kind < 0.9) {
      await side.sql.query(`DELETE FROM invoices WHERE invoice_id = ${someInvoice}`, [anyId()]);
      label = 'delete';
    } else {
      const outcome = await side.gw.gateway.lake.exportNow();
      label = `export (${outcome.kind})`;
    }
    await onStep(`seed ${seed}, step ${step}: ${label}`);
  }
}

const BUSY = 150;

describe('invoiceStats is exact and fresh (local lake)', { skip }, () => {
  let side: Lakeside;
  before(async () => {
    // A few customers with more invoices than this between them are read from the lake's rollups.
    side = await startLakeside('lake_local', { ANALYTICS_POSTGRES_MAX_INVOICES: String(BUSY) });
  });
  after(() => side?.stop());

  it('answers from the lake right after an export, equal to Postgres', async () => {
    const { freshness, warnings } = await allPages(side.gw, { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
    assert.deepEqual(warnings, []);
    assert.ok(freshness.lakeRows > 0);
    assert.ok(freshness.lakeAsOf);
    await assertExact(side.gw, side.sql, 'after the first export');
  });

  it('stays equal to Postgres through random inserts, late commits, updates, deletes and exports', async (t) => {
    const { metrics } = side.gw.gateway;
    const fromFeed = () => metrics.total(metrics.analyticsFreshReads, { source: 'feed' });
    const fromPostgres = () => metrics.total(metrics.analyticsFreshReads, { source: 'postgres' });
    const [feedBefore, postgresBefore] = [await fromFeed(), await fromPostgres()];
    await randomHistory(side, 20261124, 40, async (label) => {
      await assertExact(side.gw, side.sql, label, [1, 12]);
      await assertFirstPagesByCustomer(side.gw, side.sql, label);
    });
    const { freshness } = await allPages(side.gw, { groupBy: 'RECEIVER', months: 12, granularity: 'TOTAL', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
    // Where the fresh invoices came from: what the feed kept, unless an export's snapshot began
    // before the stream or while another test file's transaction older than it still ran (the
    // next test asserts the feed's way is taken).
    t.diagnostic(`fresh invoices grouped from the feed ${(await fromFeed()) - feedBefore} times, read from Postgres ${(await fromPostgres()) - postgresBefore}`);
  });

  it('groups fresh invoices from what its feed kept: inserted, updated, moved, renumbered and deleted before any export', async () => {
    const { metrics } = side.gw.gateway;
    const fromFeed = () => metrics.total(metrics.analyticsFreshReads, { source: 'feed' });
    // An export whose snapshot began after the stream did, with no older transaction running
    // anywhere in the cluster (other test files' can be): exported again until one is.
    await eventually(async () => {
      await side.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (3, 4, 10.00)`);
      await exportWritten(side.gw, 'an export of an insert');
      await side.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (3, 4, 11.00)`);
      const before = await fromFeed();
      await assertExact(side.gw, side.sql, 'after an export', [1]);
      return (await fromFeed()) > before;
    }, 'an export the feed kept every fresh invoice for', 60_000);
    const before = await fromFeed();
    const { rows: fresh } = await side.sql.query<{ id: string }>(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
       SELECT now() - make_interval(days => d % 50), 1 + d % 9, 1 + d % 7, (d * 37.21 - 500)::numeric(14,2) FROM generate_series(1, 60) AS d
       RETURNING invoice_id::text AS id`,
    );
    const ids = fresh.map((r) => r.id);
    await assertExact(side.gw, side.sql, 'fresh inserts', [1, 3, 12]);
    await side.sql.query(`UPDATE invoices SET amount_usd = -12.05 WHERE invoice_id = $1`, [ids[0]]);
    await side.sql.query(`UPDATE invoices SET issuer_id = 33, receiver_id = 34 WHERE invoice_id = $1`, [ids[1]]);
    await side.sql.query(`UPDATE invoices SET issue_date = now() - interval '200 days' WHERE invoice_id = $1`, [ids[2]]);
    await side.sql.query(`DELETE FROM invoices WHERE invoice_id = ANY($1::bigint[])`, [[ids[3], ids[4]]]);
    // A new id for a fresh invoice (the feed sees a delete of the old key and the new row).
    await side.sql.query(`UPDATE invoices SET invoice_id = nextval(pg_get_serial_sequence('invoices', 'invoice_id')) WHERE invoice_id = $1`, [ids[5]]);
    // One transaction changing an invoice twice, and one rolled back.
    await side.sql.query(`BEGIN; UPDATE invoices SET amount_usd = 1.00 WHERE invoice_id = ${Number(ids[6])}; UPDATE invoices SET amount_usd = 2.00 WHERE invoice_id = ${Number(ids[6])}; COMMIT`);
    await side.sql.query(`BEGIN; DELETE FROM invoices WHERE invoice_id = ${Number(ids[7])}; ROLLBACK`);
    await assertExact(side.gw, side.sql, 'fresh invoices changed and deleted', [1, 3, 12]);
    await assertFirstPagesByCustomer(side.gw, side.sql, 'fresh invoices changed and deleted');
    assert.ok((await fromFeed()) > before, `grouped from the feed (${await fromFeed()} - ${before}; from Postgres ${await metrics.total(metrics.analyticsFreshReads, { source: 'postgres' })})`);
    await exportSettled(side.gw);
    await assertExact(side.gw, side.sql, 'after the next export', [1, 12]);
  });

  it('reads fresh inserts above the export’s highest id as a range, and an id below it committed after the export from the change list', async () => {
    // Id n taken first, n + 1 committed, then the export: it sees n + 1 but not n.
    const late = await side.sql.connect();
    try {
      await late.query('BEGIN');
      const { rows: [below] } = await late.query<{ id: string }>(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (5, 6, 321.09) RETURNING invoice_id::text AS id`);
      const { rows: [highest] } = await side.sql.query<{ id: string }>(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (6, 5, 1.23) RETURNING invoice_id::text AS id`);
      await exportWritten(side.gw, 'an export while one insert is uncommitted');
      const { rows: [state] } = await side.sql.query<{ max: string }>(`SELECT exported_max_id::text AS max FROM lake_state`);
      assert.equal(state!.max, highest!.id, 'the export records the highest id its snapshot saw');
      await late.query('COMMIT');
      await side.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (5, 5, 77.00), (7, 6, 8.80)`);
      await assertExact(side.gw, side.sql, 'a late commit below the export’s highest id, and inserts above it', [1, 12]);
      // The answers' barriers waited for the feed: the late invoice is a recorded change by now.
      const { rows: listed } = await side.sql.query<{ id: string }>(`SELECT invoice_id::text AS id FROM lake_changes`);
      assert.ok(listed.some((c) => c.id === below!.id), 'the late invoice is recorded as a change');
      const { freshness } = await allPages(side.gw, { groupBy: 'ISSUER', months: 1, granularity: 'TOTAL', first: 10_000 });
      assert.equal(freshness.engine, 'LAKE');
      assert.ok(freshness.liveRows >= 3, `live rows ${freshness.liveRows}`);
    } finally {
      await late.query('ROLLBACK').catch(() => undefined);
      late.release();
    }
  });

  it('adds fresh invoices to the window groups DuckDB holds: to groups it has, and as groups of their own', async () => {
    // Asked once first, so that DuckDB holds the windows' groups and the fresh invoices are added to them.
    await assertExact(side.gw, side.sql, 'before the fresh invoices', [1, 12]);
    const { rows: [customer] } = await side.sql.query<{ id: number }>(`INSERT INTO customers (customer_name) VALUES ('Fresh Ltd') RETURNING customer_id AS id`);
    await side.sql.query(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
       VALUES (now(), 7, 8, 0.01), (now(), 7, 8, 99999.99), (now(), $1, 8, 12.30), (now() - interval '40 days', $1, $1, 45.60), (now(), 8, $1, 7.00)`,
      [customer!.id],
    );
    await assertExact(side.gw, side.sql, 'after fresh invoices for an old and a new customer', [1, 3, 12]);
    const { freshness } = await allPages(side.gw, { groupBy: 'ISSUER', months: 3, granularity: 'TOTAL', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
    assert.ok(freshness.liveRows >= 5, `live rows ${freshness.liveRows}`);
  });

  it('pages with cursors in every order, and says how the answer was made', async () => {
    const expected = await directStats(side.sql, 'ISSUER', 3, 'MONTH');
    const { rows } = await allPages(side.gw, { groupBy: 'ISSUER', months: 3, granularity: 'MONTH', first: 7 });
    assert.deepEqual(rows, expected);
    for (const orderBy of ['COUNT_DESC', 'CUSTOMER_ASC'] as const) {
      const paged = await allPages(side.gw, { groupBy: 'ISSUER', months: 3, granularity: 'TOTAL', first: 5 }, orderBy);
      assert.deepEqual(paged.rows, await directStats(side.sql, 'ISSUER', 3, 'TOTAL', undefined, orderBy), orderBy);
    }
    // Pages that end inside a customer's months; fresh invoices (a customer of their own among them) not exported yet.
    const byCustomer = await allPages(side.gw, { groupBy: 'RECEIVER', months: 12, granularity: 'MONTH', first: 7 }, 'CUSTOMER_ASC');
    assert.equal(byCustomer.freshness.engine, 'LAKE');
    assert.deepEqual(byCustomer.rows, await directStats(side.sql, 'RECEIVER', 12, 'MONTH', undefined, 'CUSTOMER_ASC'), 'by customer and month');
  });

  it('pages in customer order over held groups and fresh invoices: a fresh customer and fresh months appear in their place', async () => {
    await exportWritten(side.gw, 'an export that leaves nothing stale');
    const byCustomer = (granularity: 'MONTH' | 'TOTAL') => allPages(side.gw, { groupBy: 'RECEIVER', months: 12, granularity, first: 6 }, 'CUSTOMER_ASC');
    await byCustomer('MONTH'); // DuckDB now holds the window's groups.
    const { rows: [customer] } = await side.sql.query<{ id: number }>(`INSERT INTO customers (customer_name) VALUES ('Page Ltd') RETURNING customer_id AS id`);
    await side.sql.query(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
       VALUES (now(), 3, $1, 10.00), (now() - interval '65 days', 3, $1, 20.00), (now(), 4, 1, 30.00), (now(), 5, 2, 40.00)`,
      [customer!.id],
    );
    for (const granularity of ['MONTH', 'TOTAL'] as const) {
      const paged = await byCustomer(granularity);
      assert.equal(paged.freshness.engine, 'LAKE');
      assert.ok(paged.freshness.liveRows >= 4, `live rows ${paged.freshness.liveRows}`);
      assert.deepEqual(paged.rows, await directStats(side.sql, 'RECEIVER', 12, granularity, undefined, 'CUSTOMER_ASC'), `by customer, ${granularity}`);
    }
  });

  it('reads a page in customer order from DuckDB once, and merges later fresh invoices into the kept page', async () => {
    await exportSettled(side.gw);
    const first = 5;
    const page = (granularity: 'MONTH' | 'TOTAL') => side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, granularity, first, orderBy: 'CUSTOMER_ASC' });
    const assertPages = async (label: string) => {
      for (const granularity of ['MONTH', 'TOTAL'] as const) {
        const res = await page(granularity);
        assert.equal(res.errors, undefined, JSON.stringify(res.errors));
        const { rows, freshness } = res.data!.invoiceStats;
        assert.equal(freshness.engine, 'LAKE', label);
        const expected = await directStats(side.sql, 'ISSUER', 12, granularity, undefined, 'CUSTOMER_ASC');
        assert.deepEqual(rows, expected.slice(0, first), `${label}, ${granularity}`);
        assert.equal(freshness.lakeRows + freshness.liveRows, expected.reduce((sum, row) => sum + row.invoiceCount, 0), `${label}, ${granularity}: lake and live invoices`);
      }
    };
    await assertPages('read from DuckDB');
    const statements = side.gw.gateway.lake.duckQueries();
    await assertPages('asked again');
    // Fresh invoices on the page (its first customer, in this month and an earlier one) and a new
    // lowest-amount invoice of its second customer: merged into the kept held groups.
    const [one, two] = (await directStats(side.sql, 'ISSUER', 12, 'TOTAL', undefined, 'CUSTOMER_ASC')).map((row) => row.customerId);
    await side.sql.query(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
       VALUES (now(), $1, 3, 123.45), (now() - interval '35 days', $1, 4, 6.78), (now(), $2, 5, 0.01)`,
      [one, two],
    );
    await assertPages('after fresh invoices');
    assert.equal(side.gw.gateway.lake.duckQueries(), statements, 'the kept pages took no DuckDB statement');
    // An exported invoice of the page changed: the held groups hold its old amount, so the kept
    // page must not be used until an export (its new version is read live).
    await side.sql.query(
      `UPDATE invoices SET amount_usd = amount_usd + 1000 WHERE invoice_id = (SELECT min(invoice_id) FROM invoices WHERE issuer_id = $1 AND issue_date >= now() - interval '9 months')`,
      [one],
    );
    await assertPages('after an exported invoice of the page changed');
    assert.ok(side.gw.gateway.lake.duckQueries() > statements, 'the lake answered from its files, not from the kept page');
  });

  it('bounds a first page in customer order by the held groups only while the lake holds nothing stale', async () => {
    await exportSettled(side.gw);
    const first = 5;
    const assertPage = async (label: string) => {
      const res = await side.gw.request(InvoiceStatsDocument, { groupBy: 'RECEIVER', months: 12, granularity: 'TOTAL', first, orderBy: 'CUSTOMER_ASC' });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      const { rows, freshness } = res.data!.invoiceStats;
      assert.equal(freshness.engine, 'LAKE', label);
      const expected = await directStats(side.sql, 'RECEIVER', 12, 'TOTAL', undefined, 'CUSTOMER_ASC');
      assert.deepEqual(rows, expected.slice(0, first), label);
      return { expected, freshness };
    };
    // The first read marks the held groups; from then on a first page is bounded by a mark
    // (the 16th receiver here), and its fresh invoices are read before the change list.
    const { expected: held } = await assertPage('read from DuckDB');
    await assertPage('bounded by the marks');
    // The first 20 receivers lose their invoices of the window: the lake holds them stale, the
    // page now lies past that mark, and a fresh invoice lands on it. A bound kept from the
    // marks (or a fresh read made under it) would cut the page short.
    const gone = held.slice(0, 20).map((row) => Number(row.customerId));
    const removed = `invoice_id IN (SELECT invoice_id FROM invoices WHERE receiver_id = ANY($1::int[]) AND issue_date >= now() - interval '13 months')`;
    await side.sql.query(`CREATE TABLE bound_test_removed AS SELECT * FROM invoices WHERE ${removed}`, [gone]);
    try {
      await side.sql.query(`DELETE FROM invoices WHERE ${removed}`, [gone]);
      const { rows: [added] } = await side.sql.query<{ id: string }>(
        `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), 1, $1, 77.70) RETURNING invoice_id::text AS id`,
        [held[21]!.customerId],
      );
      const { freshness } = await assertPage('after the page’s first receivers lost their invoices');
      assert.ok(freshness.liveRows >= 1, `live rows ${freshness.liveRows}`);
      await side.sql.query(`DELETE FROM invoices WHERE invoice_id = $1`, [added!.id]);
    } finally {
      // The other tests here count on the seeded receivers: theirs back, under their ids.
      await side.sql.query(`INSERT INTO invoices SELECT * FROM bound_test_removed`);
      await side.sql.query(`DROP TABLE bound_test_removed`);
    }
  });

  it('serves the pages after the second from one whole answer while no invoice changes, and sees a change between pages', async () => {
    // Whole answers are made from the window's held groups: nothing stale in the lake.
    await exportSettled(side.gw);
    const { metrics } = side.gw.gateway;
    const outcomes = async () => {
      const [kept, served, stale] = await Promise.all(['kept', 'served', 'stale'].map((outcome) => metrics.total(metrics.analyticsWholeAnswers, { outcome })));
      return { kept: kept!, served: served!, stale: stale! };
    };
    const variables = { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', first: 40 } as const;
    const start = await outcomes();
    const paged = await allPages(side.gw, variables);
    assert.deepEqual(paged.rows, await directStats(side.sql, 'ISSUER', 12, 'MONTH'));
    const pages = Math.ceil(paged.rows.length / variables.first);
    assert.ok(pages >= 4, `${paged.rows.length} rows`);
    const read = await outcomes();
    assert.deepEqual(read, { kept: start.kept + 1, served: start.served + pages - 2, stale: start.stale }, 'the second page kept the whole answer, the rest were sliced from it');

    // Two pages read, then an invoice that moves a group from the end to the top.
    const first = await side.gw.request(InvoiceStatsDocument, { ...variables, orderBy: 'TOTAL_DESC' });
    const second = await side.gw.request(InvoiceStatsDocument, { ...variables, orderBy: 'TOTAL_DESC', after: first.data!.invoiceStats.pageInfo.endCursor });
    const cursorRow = second.data!.invoiceStats.rows.at(-1)!;
    const before = await directStats(side.sql, 'ISSUER', 12, 'MONTH');
    const moved = [...before].reverse().find((r) => r.customerId !== cursorRow.customerId)!;
    await side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, 1, 999999.99)`, [moved.customerId]);

    // The rest is the new answer's rows after the cursor's row (which the invoice did not touch).
    const now = await directStats(side.sql, 'ISSUER', 12, 'MONTH');
    const cents = (usd: string) => Math.round(Number(usd) * 100);
    const afterCursor = (r: (typeof now)[number]) =>
      cents(r.totalUsd) < cents(cursorRow.totalUsd) ||
      (cents(r.totalUsd) === cents(cursorRow.totalUsd) && (Number(r.customerId) > Number(cursorRow.customerId) || (r.customerId === cursorRow.customerId && r.month! > cursorRow.month!)));
    const rest: typeof now = [];
    let after = second.data!.invoiceStats.pageInfo.endCursor;
    for (let more = true; more; ) {
      const page = await side.gw.request(InvoiceStatsDocument, { ...variables, orderBy: 'TOTAL_DESC', after });
      assert.equal(page.errors, undefined, JSON.stringify(page.errors));
      rest.push(...page.data!.invoiceStats.rows);
      more = page.data!.invoiceStats.pageInfo.hasNextPage;
      after = page.data!.invoiceStats.pageInfo.endCursor;
    }
    assert.deepEqual(rest, now.filter(afterCursor), 'the pages after the change are of the new answer');
    const changed = await outcomes();
    assert.equal(changed.stale, read.stale + 1, 'the kept answer was refused once the invoices changed');
    assert.equal(changed.kept, read.kept + 1, 'the third page kept the new answer (the second was served from the first one)');
  });

  it('replays a lake page asked again while its invoices are unchanged, each time at its own moment, and answers anew once one changes', async () => {
    await exportSettled(side.gw);
    const { metrics } = side.gw.gateway;
    const replays = async () => {
      const [replayed, stale] = await Promise.all(['replayed', 'stale'].map((outcome) => metrics.total(metrics.analyticsLakeReplays, { outcome })));
      return { replayed: replayed!, stale: stale! };
    };
    // Receivers by month over 8 months, in customer order (no other test here asks for 8 months).
    const variables = { groupBy: 'RECEIVER', months: 8, granularity: 'MONTH', orderBy: 'CUSTOMER_ASC', first: 25 } as const;
    const expected = () => directStats(side.sql, 'RECEIVER', 8, 'MONTH', undefined, 'CUSTOMER_ASC');
    const firstPage = await side.gw.request(InvoiceStatsDocument, variables);
    const cursor = firstPage.data!.invoiceStats.pageInfo.endCursor!;
    const last = firstPage.data!.invoiceStats.rows.at(-1)!;
    const afterCursor = (r: { customerId: string; month?: string | null }) =>
      Number(r.customerId) > Number(last.customerId) || (r.customerId === last.customerId && r.month! > last.month!);
    const askBoth = async (label: string) => {
      const now = await expected();
      const asOfs: string[] = [];
      for (const [page, rows] of [[null, now.slice(0, 25)], [cursor, now.filter(afterCursor).slice(0, 25)]] as const) {
        const answer = await side.gw.request(InvoiceStatsDocument, { ...variables, after: page });
        assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
        assert.equal(answer.data!.invoiceStats.freshness.engine, 'LAKE', label);
        assert.deepEqual(answer.data!.invoiceStats.rows, rows, `${label}: ${page ? 'second' : 'first'} page`);
        asOfs.push(answer.data!.invoiceStats.freshness.asOf);
      }
      return asOfs;
    };

    // Both pages asked again and again are replayed, each answer at a later moment than the one
    // before; a wrong answer fails at once (repeatUntil).
    let previous = await askBoth('first asked');
    await repeatUntil(async () => {
      const start = await replays();
      const asOfs = await askBoth('asked until replayed');
      asOfs.forEach((asOf, i) => assert.ok(asOf > previous[i]!, `asOf ${asOf} after ${previous[i]}`));
      previous = asOfs;
      return (await replays()).replayed === start.replayed + 2;
    }, 'both pages replayed', 30_000);

    // An invoice of the second page's first receiver changes amount: its replay is refused, and
    // both pages are answered again, equal to Postgres, then replayed at the new version.
    const { rows: [changed] } = await side.sql.query<{ id: string }>(
      `SELECT invoice_id::text AS id FROM invoices WHERE receiver_id = $1
         AND issue_date >= (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '7 months') AT TIME ZONE 'UTC' ORDER BY invoice_id LIMIT 1`,
      [(await expected()).find(afterCursor)!.customerId],
    );
    await side.sql.query(`UPDATE invoices SET amount_usd = amount_usd + 1000 WHERE invoice_id = $1`, [changed!.id]);
    const before = await replays();
    await askBoth('after the change');
    assert.ok((await replays()).stale >= before.stale + 1, 'the replay was refused once the invoice changed');
    await repeatUntil(async () => {
      const start = await replays();
      await askBoth('asked until replayed at the new version');
      return (await replays()).replayed === start.replayed + 2;
    }, 'both pages replayed again after the change', 30_000);
  });

  it('asks Postgres for a few quiet customers, the lake for busy ones and for all, with the same figures', async () => {
    const { rows: counts } = await side.sql.query<{ id: string; n: number }>(
      `SELECT receiver_id::text AS id, count(*)::int AS n FROM invoices WHERE issue_date >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '11 months'
       GROUP BY 1 ORDER BY 2, 1`,
    );
    const quiet = counts.find((c) => c.n <= BUSY)!;
    const busy = counts.at(-1)!;
    assert.ok(quiet && busy.n > BUSY, `a customer at most ${BUSY} invoices and one above: ${JSON.stringify(counts)}`);
    for (const [ids, engine] of [[[quiet.id], 'POSTGRES'], [[busy.id], 'LAKE'], [[quiet.id, busy.id], 'LAKE']] as const) {
      for (const granularity of ['TOTAL', 'MONTH'] as const) {
        const few = await side.gw.request(InvoiceStatsDocument, { groupBy: 'RECEIVER', months: 12, granularity, customerIds: [...ids], first: 100 });
        assert.equal(few.data!.invoiceStats.freshness.engine, engine, `customers ${ids.join(', ')}`);
        assert.deepEqual(few.data!.invoiceStats.rows, await directStats(side.sql, 'RECEIVER', 12, granularity, [...ids]), `customers ${ids.join(', ')}, ${granularity}`);
      }
    }
    const many = Array.from({ length: 30 }, (_, i) => String(i + 1));
    const lake = await side.gw.request(InvoiceStatsDocument, { groupBy: 'RECEIVER', months: 12, granularity: 'TOTAL', customerIds: many, first: 100 });
    assert.equal(lake.data!.invoiceStats.freshness.engine, 'LAKE');
    assert.deepEqual(lake.data!.invoiceStats.rows, await directStats(side.sql, 'RECEIVER', 12, 'TOTAL', many));
  });

  it('keeps a few customers’ answer while its feed proves it current: their commits reach the next answer, others’ keep it', async () => {
    const { metrics } = side.gw.gateway;
    const outcomes = async () =>
      Object.fromEntries(await Promise.all(['kept', 'served', 'stale', 'replayed'].map(async (outcome) => [outcome, await metrics.total(metrics.analyticsFewAnswers, { outcome })] as const)));
    // Quiet issuers over 6 months (no other test of this file asks for 6 months by issuer).
    const { rows } = await side.sql.query<{ id: string }>(
      `SELECT issuer_id::text AS id FROM invoices
       WHERE issue_date >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '5 months'
       GROUP BY 1 HAVING count(*) <= ${BUSY / 2} ORDER BY count(*), 1 LIMIT 3`,
    );
    const [quiet, other, third] = rows.map((r) => r.id);
    assert.ok(third, 'three quiet issuers');
    const ask = async (label: string) => {
      const answer = await side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 6, granularity: 'MONTH', customerIds: [quiet!], first: 50 });
      assert.equal(answer.data!.invoiceStats.freshness.engine, 'POSTGRES', label);
      assert.deepEqual(answer.data!.invoiceStats.rows, await directStats(side.sql, 'ISSUER', 6, 'MONTH', [quiet!]), label);
      return answer.data!.invoiceStats.freshness.asOf;
    };
    const insertFor = (issuer: string) =>
      side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, $2, 3.33)`, [issuer, third]);

    // Kept once asked, then served (a transaction running elsewhere when the stream began keeps it from being kept: asked until one is).
    const start = await outcomes();
    let now = start;
    await eventually(async () => {
      await ask('asked until served');
      now = await outcomes();
      return now.served! > start.served!;
    }, 'a kept answer served', 30_000);
    assert.ok(now.kept! > start.kept!, 'kept before served');
    // Asked again, its whole response is replayed (no GraphQL work), each time at its own moment.
    await eventually(async () => {
      const first = await ask('asked until replayed');
      const second = await ask('asked until replayed, again');
      assert.ok(second > first, `asOf ${second} after ${first}`);
      now = await outcomes();
      return now.replayed! > start.replayed!;
    }, 'a kept response replayed', 30_000);
    // A replay is recorded as the operation it answers, as every other answer is.
    const recorded = () => metrics.total(metrics.graphqlRequests, { operation: 'InvoiceStats', outcome: 'ok' });
    await eventually(async () => {
      const [recordedBefore, replayedBefore] = [await recorded(), (await outcomes()).replayed!];
      await ask('replayed and recorded');
      assert.equal((await recorded()) - recordedBefore, 1, 'recorded once, replayed or not');
      return (await outcomes()).replayed! > replayedBefore;
    }, 'a replay recorded', 30_000);

    // Another customer's commit keeps it: served right after one (the feed is waited for only a
    // few milliseconds before the statement runs instead: asked until served).
    await eventually(async () => {
      await insertFor(other!);
      const before = await outcomes();
      await ask('after a commit for another issuer');
      return (await outcomes()).served! > before.served!;
    }, 'a kept answer served right after another issuer’s commit', 30_000);

    // A commit for the customer, made just before (as from psql), is in the next answer.
    for (let i = 0; i < 5; i++) {
      await insertFor(quiet!);
      await ask(`right after commit ${i} for the customer`);
      await ask(`asked again after commit ${i}`);
    }
    // So is one whose transaction began before the answer was kept and committed after it.
    const late = await side.sql.connect();
    try {
      await late.query('BEGIN');
      await late.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, $2, 4.44)`, [quiet, third]);
      await ask('a transaction for the customer still running');
      await ask('asked again while it runs');
      await late.query('COMMIT');
    } finally {
      late.release();
    }
    await ask('after it committed');
    // An update names no old parties: every kept answer it did not see goes.
    const before = await outcomes();
    await side.sql.query(`UPDATE invoices SET amount_usd = amount_usd + 1 WHERE invoice_id = (SELECT max(invoice_id) FROM invoices WHERE issuer_id = $1)`, [quiet]);
    await ask('after an update of its invoice');
    now = await outcomes();
    assert.equal(now.served! - before.served!, 0, 'not served after an update it did not see');
    assert.equal(now.replayed! - before.replayed!, 0, 'nor replayed');
  });

  it('adds fresh invoices of asked and unasked customers to a few customers’ held groups, equal to Postgres', async () => {
    await exportSettled(side.gw);
    const { rows: [busy] } = await side.sql.query<{ id: string }>(`SELECT issuer_id::text AS id FROM invoices GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1`);
    const asked = (ids: string[], granularity: 'TOTAL' | 'MONTH') =>
      side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, granularity, customerIds: ids, first: 1000 });
    await asked([busy!.id], 'MONTH'); // DuckDB now holds the window's groups.
    await side.sql.query(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
       VALUES (now(), $1, 2, 5.55), (now() - interval '62 days', $1, 3, 6.66), (now(), 9, $1, 7.77), (now(), 11, 4, 8.88)`,
      [Number(busy!.id)],
    );
    for (const ids of [[busy!.id], [busy!.id, '9'], Array.from({ length: 30 }, (_, i) => String(i + 1))]) {
      for (const granularity of ['TOTAL', 'MONTH'] as const) {
        const answer = await asked(ids, granularity);
        assert.equal(answer.data!.invoiceStats.freshness.engine, 'LAKE', `customers ${ids.join(', ')}`);
        assert.ok(answer.data!.invoiceStats.freshness.liveRows >= 2, `customers ${ids.join(', ')}: live rows`);
        assert.deepEqual(answer.data!.invoiceStats.rows, await directStats(side.sql, 'ISSUER', 12, granularity, ids), `customers ${ids.join(', ')}, ${granularity}`);
      }
    }
  });

  it('passes its barrier without writing (recorded or decoded) when its feed streams, and sees a commit made just before', async () => {
    const { metrics } = side.gw.gateway;
    const barriers = async () =>
      Object.fromEntries(await Promise.all(['recorded', 'decoded', 'written'].map(async (kind) => [kind, await metrics.total(metrics.analyticsBarriers, { kind })] as const)));
    const since = (before: Record<string, number>, now: Record<string, number>) => Object.fromEntries(Object.keys(now).map((kind) => [kind, now[kind]! - before[kind]!]));
    await exportSettled(side.gw);
    const { rows: [quiet] } = await side.sql.query<{ id: string }>(`SELECT max(customer_id)::text AS id FROM customers`);
    // Each request another (its page's length): a request asked again is first proven for a replay, with a barrier of its own.
    let asked = 0;
    const exact = async (label: string) => {
      const answer = await side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 1, granularity: 'TOTAL', orderBy: 'CUSTOMER_ASC', first: 100 + (asked++ % 9000) });
      assert.equal(answer.data!.invoiceStats.freshness.engine, 'LAKE', label);
      assert.deepEqual(answer.data!.invoiceStats.rows, (await directStats(side.sql, 'ISSUER', 1, 'TOTAL', undefined, 'CUSTOMER_ASC')).slice(0, 100), label);
    };

    let before = await barriers();
    for (let i = 0; i < 10; i++) {
      // Committed a moment before the query, through another connection (as from psql).
      await side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, 2, 1.00)`, [quiet!.id]);
      await exact(`query ${i} after an insert`);
    }
    const counted = since(before, await barriers());
    assert.equal(counted.recorded! + counted.decoded! + counted.written!, 10, 'one barrier per lake query');

    // Other test files write WAL meanwhile (a bulk load keeps it unflushed for its whole length),
    // and a snapshot that finds it not yet flushed writes its barrier: asked until one does not.
    before = await barriers();
    await repeatUntil(async () => {
      await side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, 2, 1.00)`, [quiet!.id]);
      await exact('a query right after an insert');
      const now = since(before, await barriers());
      return now.recorded! + now.decoded! >= 1;
    }, 'a query right after an insert passing its barrier without a write', 30_000);

    // With the WAL quiet, the feed has recorded past a snapshot before it begins: the change list is read in it.
    before = await barriers();
    await repeatUntil(async () => {
      await exact('a query with nothing committed just before');
      return since(before, await barriers()).recorded! >= 1;
    }, 'a query whose change list was read in its own snapshot', 30_000);
  });

  it('says in /metrics where each query spent its time, stage by stage', async () => {
    const stageCounts = async () => {
      const text = await (await fetch(new URL('/metrics', side.gw.url))).text();
      return Object.fromEntries(
        ['snapshot', 'barrier', 'changes', 'live', 'lake', 'postgres'].map((stage) => {
          const found = new RegExp(`^gateway_analytics_stage_seconds_count\\{stage="${stage}"\\} (\\d+)$`, 'm').exec(text);
          return [stage, found ? Number(found[1]) : 0];
        }),
      );
    };
    const delta = (before: Record<string, number>, after: Record<string, number>) =>
      Object.fromEntries(Object.keys(after).map((stage) => [stage, after[stage]! - before[stage]!]));

    // All customers, from the lake with no fresh invoice: every stage but Postgres answering.
    await exportSettled(side.gw);
    let before = await stageCounts();
    const all = await side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 5 });
    assert.equal(all.data!.invoiceStats.freshness.engine, 'LAKE');
    assert.equal(all.data!.invoiceStats.freshness.liveRows, 0);
    assert.deepEqual(delta(before, await stageCounts()), { snapshot: 1, barrier: 1, changes: 1, live: 1, lake: 1, postgres: 0 });

    // Asked again with nothing changed, its response is replayed: the moment (counted as the
    // snapshot), which reads the lake's version too; the barrier and the version read after it
    // (counted as the changes) only when the feed had not recorded past the moment's WAL
    // (other test files write WAL meanwhile). Nothing else.
    before = await stageCounts();
    const again = await side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 5 });
    assert.deepEqual(again.data!.invoiceStats.rows, all.data!.invoiceStats.rows);
    const replayed = delta(before, await stageCounts());
    assert.ok([0, 1].includes(replayed.barrier!), `barriers: ${replayed.barrier}`);
    assert.deepEqual(replayed, { snapshot: 1, barrier: replayed.barrier, changes: replayed.barrier, live: 0, lake: 0, postgres: 0 });

    // A fresh invoice is read live from Postgres beside the lake (another page length: no replay to prove first).
    await side.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), 1, 2, 10.00)`);
    before = await stageCounts();
    const fresh = await side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 6 });
    assert.equal(fresh.data!.invoiceStats.freshness.liveRows, 1);
    assert.deepEqual(delta(before, await stageCounts()), { snapshot: 1, barrier: 1, changes: 1, live: 1, lake: 1, postgres: 0 });

    // One quiet customer: one Postgres statement, no snapshot and no barrier.
    const { rows: [quietest] } = await side.sql.query<{ id: string }>(`SELECT receiver_id::text AS id FROM invoices GROUP BY 1 ORDER BY count(*), 1 LIMIT 1`);
    before = await stageCounts();
    const quiet = await side.gw.request(InvoiceStatsDocument, { groupBy: 'RECEIVER', months: 12, granularity: 'TOTAL', customerIds: [quietest!.id], first: 5 });
    assert.equal(quiet.data!.invoiceStats.freshness.engine, 'POSTGRES');
    assert.deepEqual(delta(before, await stageCounts()), { snapshot: 0, barrier: 0, changes: 0, live: 0, lake: 0, postgres: 1 });

    // One busy customer: counted in Postgres past the limit, then the lake; asked again, the lake
    // alone. (No other test of this file asks for 9 months: the gateway remembers busy customers
    // by role, months and granularity.)
    const { rows: [busiest] } = await side.sql.query<{ id: string; n: number }>(
      `SELECT issuer_id::text AS id, count(*)::int AS n FROM invoices
       WHERE issue_date >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '8 months'
       GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1`,
    );
    assert.ok(busiest!.n > BUSY, `the busiest issuer over 9 months has ${busiest!.n} invoices`);
    // Each asked with another page length: the same request again would be a replay.
    const busy = (first: number) => side.gw.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 9, granularity: 'MONTH', customerIds: [busiest!.id], first });
    for (const [label, postgres, first] of [['counted', 1, 20], ['remembered as busy', 0, 21]] as const) {
      before = await stageCounts();
      const answer = await busy(first);
      assert.equal(answer.data!.invoiceStats.freshness.engine, 'LAKE', label);
      assert.deepEqual(answer.data!.invoiceStats.rows, await directStats(side.sql, 'ISSUER', 9, 'MONTH', [busiest!.id]), label);
      assert.deepEqual(delta(before, await stageCounts()), { snapshot: 1, barrier: 1, changes: 1, live: 1, lake: 1, postgres }, label);
    }
  });

  it('Customer.stats for a list of customers costs one analytics query, with the same figures', async () => {
    const ids = Array.from({ length: 25 }, (_, i) => String(i + 1));
    const queries = () => side.gw.gateway.metrics.total(side.gw.gateway.metrics.analyticsQueries);
    const before = await queries();
    const res = await side.gw.request(CustomerStatsDocument, { ids, months: 3, role: 'RECEIVER' });
    assert.equal(res.errors, undefined, JSON.stringify(res.errors));
    assert.equal((await queries()) - before, 1, 'one analytics query for 25 customers');
    const expected = new Map((await directStats(side.sql, 'RECEIVER', 3, 'TOTAL', ids)).map((r) => [r.customerId, r]));
    for (const customer of res.data!.customers) {
      const want = expected.get(customer!.id);
      assert.deepEqual(
        customer!.stats,
        want ? [{ customerId: want.customerId, invoiceCount: want.invoiceCount, totalUsd: want.totalUsd, avgUsd: want.avgUsd }] : [],
        `customer ${customer!.id}`,
      );
    }
  });

  it('refuses bad arguments with BAD_USER_INPUT', async () => {
    const base = { groupBy: 'ISSUER' as const, months: 12, first: 10 };
    const first = await side.gw.request(InvoiceStatsDocument, { ...base, orderBy: 'TOTAL_DESC' });
    const otherOrder = first.data!.invoiceStats.pageInfo.endCursor;
    const forged = (position: unknown[]) => Buffer.from(JSON.stringify(position)).toString('base64url');
    const cases: [string, Record<string, unknown>][] = [
      ['months 0', { ...base, months: 0 }],
      ['months 121', { ...base, months: 121 }],
      ['first 0', { ...base, first: 0 }],
      ['first 10001', { ...base, first: 10_001 }],
      ['malformed cursor', { ...base, after: 'nope' }],
      ['a cursor of another order', { ...base, orderBy: 'COUNT_DESC', after: otherOrder }],
      // Well formed, but no month or customer a row can have (compared as such in Postgres and DuckDB).
      ['a cursor with month 13', { ...base, granularity: 'MONTH', orderBy: 'CUSTOMER_ASC', after: forged(['CUSTOMER_ASC', 'MONTH', null, 5, '2024-13']) }],
      ['a cursor with month 00', { ...base, granularity: 'MONTH', orderBy: 'CUSTOMER_ASC', after: forged(['CUSTOMER_ASC', 'MONTH', null, 5, '2024-00']) }],
      ['a cursor past int', { ...base, granularity: 'TOTAL', orderBy: 'CUSTOMER_ASC', after: forged(['CUSTOMER_ASC', 'TOTAL', null, 2 ** 31, null]) }],
      ['a malformed customer id', { ...base, customerIds: ['x'] }],
      ['too many customers', { ...base, customerIds: Array.from({ length: 1001 }, (_, i) => String(i + 1)) }],
    ];
    for (const [label, variables] of cases) {
      const res = await side.gw.request(InvoiceStatsDocument, variables as never);
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `${label}: ${JSON.stringify(res.errors)}`);
    }
  });
});

describe('the lake under load and after a TRUNCATE', { skip }, () => {
  let side: Lakeside;
  before(async () => {
    side = await startLakeside('lake_reset', { ANALYTICS_POOL_MAX: '3' });
  });
  after(() => side?.stop());

  it('answers more concurrent analytics queries than the pool has connections', async () => {
    // Each holds an analytics connection for its snapshot while it reads the lake state.
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => side.gw.request(InvoiceStatsDocument, { groupBy: i % 2 ? 'ISSUER' : 'RECEIVER', months: 12, granularity: 'TOTAL', first: 100 })),
    );
    for (const answer of answers) {
      assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
      assert.equal(answer.data?.invoiceStats.freshness.engine, 'LAKE');
    }
  });

  it('exports a new generation above every earlier one, and answers exactly again', async () => {
    const first = await side.gw.gateway.lake.exportNow();
    const before = first.kind === 'exported' ? first.generation : Number((await side.sql.query('SELECT generation FROM lake_state')).rows[0].generation);
    await side.sql.query('TRUNCATE invoices');
    await side.sql.query(
      `INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) SELECT now() - make_interval(days => g % 300), 1 + g % 40, 1 + (g * 7) % 40, 10 + g FROM generate_series(1, 500) g`,
    );
    // lake_state starts again from generation 0; the store still holds the old manifests. A
    // reused number would overwrite one, and orphan removal (keeping the highest) would then
    // delete the current lake.
    const outcome = await exportWritten(side.gw, 'an export after the TRUNCATE');
    assert.ok(outcome.generation > before, `generation ${outcome.generation} after ${before}`);
    await assertExact(side.gw, side.sql, 'after TRUNCATE and a new export', [1, 12]);
    const { freshness } = await allPages(side.gw, { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
  });
});

describe('the S3 lake (a real S3 protocol server)', { skip }, () => {
  let s3: S3Server;
  let local: Lakeside;
  let remote: Lakeside;

  before(async () => {
    s3 = await startS3Server();
    local = await startLakeside('lake_twin_local', {});
    remote = await startLakeside('lake_twin_s3', s3.env);
  });
  after(async () => {
    await local?.stop();
    await remote?.stop();
    await s3?.stop();
  });

  /**
   * Seeded and random dates are relative to each database's moment of writing them, seconds
   * apart here: an invoice near a month's end could fall on either side of it (seen once in CI).
   * The S3 side takes the local side's dates, by id, and exports again: the same data on both.
   */
  async function sameDates() {
    const { rows } = await local.sql.query<{ id: string; date: string }>(`SELECT invoice_id::text AS id, issue_date::text AS date FROM invoices`);
    await remote.sql.query(
      `UPDATE invoices i SET issue_date = d.date FROM unnest($1::bigint[], $2::timestamptz[]) AS d(id, date) WHERE i.invoice_id = d.id AND i.issue_date <> d.date`,
      [rows.map((r) => r.id), rows.map((r) => r.date)],
    );
    // Unchanged: nothing differed, and nothing else was left to export.
    await exportSettled(remote.gw, 'the S3 side exported with the same dates');
  }

  /** `work` on another gateway on the S3 side's database and bucket, with an empty object cache and no feed. */
  async function withEmptyCache(work: (fresh: TestGateway) => Promise<void>) {
    const fresh = await startTestGateway({ databaseUrl: remote.db.url, env: { ...s3.env, CHANGE_FEED: '0' } });
    try {
      await work(fresh);
    } finally {
      await fresh.stop();
    }
  }

  it('gives the same answers as the local-directory lake for the same history', async () => {
    await sameDates();
    const twin = async (label: string) => {
      for (const side of [local, remote]) await assertExact(side.gw, side.sql, `${label} (${side === local ? 'local' : 's3'})`, [12]);
      const a = await allPages(local.gw, { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', first: 10_000 });
      const b = await allPages(remote.gw, { groupBy: 'ISSUER', months: 12, granularity: 'MONTH', first: 10_000 });
      assert.deepEqual([a.freshness.engine, b.freshness.engine], ['LAKE', 'LAKE'], `${label}: both answered from their lake`);
      assert.deepEqual(b.rows, a.rows, label);
    };
    await twin('after the first export');
    // The same operations on both: a deterministic history, then an export on each.
    for (const side of [local, remote]) await randomHistory(side, 7, 12, async () => undefined);
    assert.equal((await local.gw.gateway.lake.exportNow()).kind, 'exported');
    await sameDates();
    await twin('after the same history');
    const objects = await remote.gw.gateway.lake.store.list('');
    assert.ok(objects.some((o) => /^invoices\/month=\d{4}-\d{2}\/g\d+-\d+\.parquet$/.test(o.key)), 'raw files by month');
    assert.ok(objects.some((o) => o.key === 'manifests/latest.json'));
  });

  it('replays a page on a gateway whose feed is another\u2019s (through a written barrier), and not once an invoice changed', async () => {
    await exportSettled(remote.gw);
    await withEmptyCache(async (fresh) => {
      const { metrics } = fresh.gateway;
      const count = (counter: typeof metrics.analyticsLakeReplays | typeof metrics.analyticsBarriers, labels: Record<string, string>) => metrics.total(counter, labels);
      const variables = { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 10 } as const;
      const ask = async (label: string) => {
        const answer = await fresh.request(InvoiceStatsDocument, variables);
        assert.equal(answer.errors, undefined, JSON.stringify(answer.errors));
        assert.equal(answer.data!.invoiceStats.freshness.engine, 'LAKE', label);
        assert.deepEqual(answer.data!.invoiceStats.rows, (await directStats(remote.sql, 'ISSUER', 12, 'TOTAL')).slice(0, 10), label);
      };
      await ask('first asked');
      await repeatUntil(async () => {
        const [replayed, written] = [await count(metrics.analyticsLakeReplays, { outcome: 'replayed' }), await count(metrics.analyticsBarriers, { kind: 'written' })];
        await ask('asked until replayed');
        return (await count(metrics.analyticsLakeReplays, { outcome: 'replayed' })) === replayed! + 1 && (await count(metrics.analyticsBarriers, { kind: 'written' })) === written! + 1;
      }, 'a replay proven through a barrier it wrote', 30_000);
      // An invoice of the top issuer changes (recorded by the other gateway's feed): not replayed, Postgres's figures.
      const [top] = await directStats(remote.sql, 'ISSUER', 12, 'TOTAL');
      await remote.sql.query(
        `UPDATE invoices SET amount_usd = amount_usd + 5000 WHERE invoice_id = (SELECT min(invoice_id) FROM invoices WHERE issuer_id = $1 AND issue_date >= now() - interval '300 days')`,
        [top!.customerId],
      );
      const [replayed, stale] = [await count(metrics.analyticsLakeReplays, { outcome: 'replayed' }), await count(metrics.analyticsLakeReplays, { outcome: 'stale' })];
      await ask('after the change');
      assert.equal(await count(metrics.analyticsLakeReplays, { outcome: 'replayed' }), replayed, 'not replayed once an invoice changed');
      // Refused as stale by the version read after its written barrier (not merely unproven).
      assert.equal(await count(metrics.analyticsLakeReplays, { outcome: 'stale' }), stale! + 1, 'the replay found stale');
    });
  });

  it('a lake emptied under it (its last manifest gone) is exported afresh, not failed on every interval', async () => {
    const store = local.gw.gateway.lake.store;
    await store.delete((await store.list('')).map((o) => o.key));
    await local.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), 1, 2, 12.34)`);
    // Until the export writes it again, answers come from Postgres (or from tables held before), exact.
    await assertExact(local.gw, local.sql, 'the lake emptied, not exported yet', [1, 12]);
    const outcome = await exportsEverything(local, 'an export into the emptied lake');
    assert.equal(outcome.appended, 0);
    await assertExact(local.gw, local.sql, 'after the lake was emptied and exported again', [12]);
  });

  it('a lake missing one month\u2019s files answers from Postgres, and the next export writes everything again', async () => {
    await exportSettled(remote.gw);
    const store = remote.gw.gateway.lake.store;
    const files = (await store.list('invoices/')).map((o) => o.key).sort();
    // The newest month's raw file and rollups gone (a lifecycle rule, a cleanup by hand).
    const month = /month=(\d{4}-\d{2})/.exec(files.at(-1)!)![1]!;
    await store.delete((await store.list('')).map((o) => o.key).filter((key) => key.includes(`month=${month}`)));
    await withEmptyCache(async (fresh) => {
      const res = await fresh.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 3, granularity: 'MONTH', first: 1_000 });
      assert.equal(res.errors, undefined, JSON.stringify(res.errors));
      assert.deepEqual(res.data!.invoiceStats.rows, await directStats(remote.sql, 'ISSUER', 3, 'MONTH'));
      assert.deepEqual(res.data!.invoiceStats.warnings.map((w) => w.code), ['LAKE_NOT_READY']);
    });
    // Nothing changed since: the export finds the gone objects all the same (the months it would
    // not rewrite would pass into its manifest as they are).
    await exportsEverything(remote, 'an export with a file of the last one gone');
    await assertExact(remote.gw, remote.sql, 'after a file went missing and the lake was exported again', [3, 12]);
  });

  it('an unreachable store fails analytics with SERVICE_UNAVAILABLE while lookups still answer', async () => {
    await withEmptyCache(async (fresh) => {
      await s3.kill();
      try {
        const stats = await fresh.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, first: 10 });
        assert.equal(stats.errors?.[0]?.extensions?.code, 'SERVICE_UNAVAILABLE', JSON.stringify(stats.errors));
        assert.doesNotMatch(JSON.stringify(stats.errors), /127\.0\.0\.1|lake-|manifests|invoices\//);
        const lookup = await fresh.request(InvoiceByIdDocument, { id: '1' });
        assert.equal(lookup.data?.invoice?.id, '1');
        const small = await fresh.request(InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, customerIds: ['1'], first: 10 });
        assert.equal(small.errors, undefined, 'the Postgres shape does not need the store');
      } finally {
        await s3.restart();
      }
    });
  });
});
