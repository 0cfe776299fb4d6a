import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { print } from 'graphql';
import { missingServices } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { PAGES } from '../sources/postgres/invoiceStore.js';
import {
  type CustomerInvoicesQuery,
  CustomerInvoicesDocument,
  ManyCustomersPagesDocument,
  MaybePagesDocument,
  PagesOfCustomersDocument,
  ReceivedPageDocument,
} from './generated/graphql.js';

const skip = await missingServices('postgres');

describe('Customer.invoicesIssued / invoicesReceived connections', { skip }, () => {
  const f = useTestGateway('connections', { seed: { customers: 30, invoices: 3_000, months: 6, seed: 3 } });

  type Errors = { errors?: { message: string; extensions: { code: string } }[] };
  /** A raw POST, as a client sends it: the HTTP status and the body (refusals are 400s, not GraphQL results). */
  const post = async (request: { query: string; variables?: Record<string, unknown> }) => {
    const res = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) });
    return { status: res.status, body: (await res.json()) as Errors };
  };
  /** `post`, and how many SQL statements the gateway sent meanwhile. */
  const postCounted = async (request: { query: string; variables?: Record<string, unknown> }) => {
    let answer: Awaited<ReturnType<typeof post>> | undefined;
    const statements = await f.gw.countSql(async () => {
      answer = await post(request);
    });
    return { ...answer!, statements };
  };

  before(async () => {
    // Three invoices at the very same instant, so pages must break ties by id, not skip or repeat.
    await f.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
      SELECT '2026-01-15T12:00:00.123456Z', 1, 2, 10 FROM generate_series(1, 3)`);
  });

  async function expectedIds(column: 'issuer_id' | 'receiver_id', customerId: number): Promise<string[]> {
    const { rows } = await f.sql.query(
      `SELECT invoice_id::text AS id FROM invoices WHERE ${column} = $1 ORDER BY issue_date DESC, invoice_id DESC`,
      [customerId],
    );
    return rows.map((r) => r.id);
  }

  it('walks every issued invoice newest first, page by page, without gaps or repeats', async () => {
    const expected = await expectedIds('issuer_id', 1);
    assert.ok(expected.length > 20, 'customer 1 should have many invoices');
    const seen: string[] = [];
    let cursor: string | null | undefined = null;
    for (let pages = 0; pages < 1000; pages++) {
      const res: Awaited<ReturnType<typeof f.gw.request<CustomerInvoicesQuery, unknown>>> = await f.gw.request(CustomerInvoicesDocument, { id: '1', first: 37, after: cursor });
      assert.equal(res.errors, undefined);
      const conn = res.data!.customer!.invoicesIssued;
      assert.deepEqual(conn.nodes.map((n) => n.id), conn.edges.map((e) => e.node.id));
      assert.equal(conn.pageInfo.hasPreviousPage, false);
      assert.equal(conn.pageInfo.startCursor, conn.edges[0]?.cursor ?? null);
      assert.equal(conn.pageInfo.endCursor, conn.edges.at(-1)?.cursor ?? null);
      for (const edge of conn.edges) assert.equal(edge.node.issuerId, '1');
      seen.push(...conn.nodes.map((n) => n.id));
      if (!conn.pageInfo.hasNextPage) break;
      cursor = conn.pageInfo.endCursor;
    }
    assert.deepEqual(seen, expected);
  });

  it('pages received invoices the same way', async () => {
    const expected = await expectedIds('receiver_id', 2);
    const first = await f.gw.request(ReceivedPageDocument, { id: '2', first: 5 });
    const second = await f.gw.request(ReceivedPageDocument, { id: '2', first: 5, after: first.data!.customer!.invoicesReceived.pageInfo.endCursor });
    const ids = [...first.data!.customer!.invoicesReceived.nodes, ...second.data!.customer!.invoicesReceived.nodes].map((n) => n.id);
    assert.deepEqual(ids, expected.slice(0, 10));
  });

  it('an empty connection has no cursors and no next page', async () => {
    await f.sql.query(`INSERT INTO customers (customer_name) VALUES ('Lonely Ltd')`);
    const { rows } = await f.sql.query(`SELECT max(customer_id)::text AS id FROM customers`);
    const res = await f.gw.request(CustomerInvoicesDocument, { id: rows[0].id, first: 10 });
    assert.deepEqual(res.data!.customer!.invoicesIssued.pageInfo, { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null });
  });

  it('rejects first out of 1..500 and malformed cursors with BAD_USER_INPUT', async () => {
    for (const first of [0, -1, 501]) {
      const res = await f.gw.request(CustomerInvoicesDocument, { id: '1', first });
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `first ${first}`);
    }
    const max = await f.gw.request(CustomerInvoicesDocument, { id: '1', first: 500 });
    assert.equal(max.errors, undefined);
    const forge = (position: string) => Buffer.from(position).toString('base64url');
    const forged = [
      forge('2026-01-01T00:00:00.000000Z|abc'),
      forge('2026-02-30T00:00:00.000000Z|5'),
      forge('2026-01-01T24:00:00.000000Z|5'),
      forge('0000-01-01T00:00:00.000000Z|5'),
      forge('2026-01-01T00:00:00.000000Z|9223372036854775808'),
    ];
    for (const after of ['not a cursor', 'Zm9v', '', 'x'.repeat(500), ...forged]) {
      const res = await f.gw.request(CustomerInvoicesDocument, { id: '1', first: 5, after });
      assert.equal(res.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', `after ${JSON.stringify(after)}`);
    }
  });

  it('serves the pages of 20 customers in a constant number of statements', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => String(i + 1));
    let res: Awaited<ReturnType<typeof f.gw.request>> | undefined;
    const statements = await f.gw.countSql(async () => {
      res = await f.gw.request(ManyCustomersPagesDocument, { ids });
    });
    assert.equal(res!.errors, undefined);
    // customers, issued pages, received pages; the page rows prime the invoice loader.
    assert.ok(statements <= 3, `ran ${statements} statements`);
    const customers = (res!.data as { customers: { id: string; invoicesIssued: { nodes: { id: string }[] } }[] }).customers;
    for (const customer of customers.slice(0, 5)) {
      const expected = (await expectedIds('issuer_id', Number(customer.id))).slice(0, 3);
      assert.deepEqual(customer.invoicesIssued.nodes.map((n) => n.id), expected);
    }
  });

  it("plans the store's page statement as scans of the gateway's indexes", async () => {
    const client = await f.sql.connect();
    try {
      for (const role of ['issuer', 'receiver'] as const) {
        await client.query(`PREPARE page_${role} AS ${PAGES[role].text}`);
        const { rows } = await client.query(`EXPLAIN EXECUTE page_${role}('{1,2}', '{21,21}', '{NULL,"2026-01-01T00:00:00Z"}', '{NULL,5}', '{NULL,3}')`);
        const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
        assert.match(plan, new RegExp(`invoices_gw_${role}_date_id_idx`), plan);
        assert.doesNotMatch(plan, /Seq Scan on invoices/, plan);
      }
    } finally {
      client.release();
    }
  });

  it('refuses an operation whose nested lists multiply past MAX_QUERY_COMPLEXITY, before running any SQL', async () => {
    const ids = Array.from({ length: 1000 }, (_, i) => String(i + 1));
    // Twice: the second answer comes from the per-document cost cache.
    for (const round of [1, 2]) {
      const { status, body, statements } = await postCounted({ query: print(PagesOfCustomersDocument), variables: { ids, first: 500 } });
      assert.equal(status, 400, `round ${round}`);
      assert.equal(body.errors?.[0]?.extensions.code, 'BAD_USER_INPUT');
      assert.match(body.errors![0]!.message, /estimated cost \d+ exceeds 100000/);
      assert.equal(statements, 0);
    }

    // The same document with shorter lists is another shape, and within the limit.
    const modest = await f.gw.request(PagesOfCustomersDocument, { ids: ids.slice(0, 30), first: 50 });
    assert.equal(modest.errors, undefined);
    const tooManyAgain = await f.gw.request(PagesOfCustomersDocument, { ids: ids.slice(0, 500), first: 500 });
    assert.equal(tooManyAgain.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');

    // So does an enum: 1,000 customers' totals are cheap, their 120 months each are not.
    const stats = `query ($ids: [ID!]!, $granularity: Granularity!) { customers(ids: $ids) { stats(months: 120, role: ISSUER, granularity: $granularity) { month totalUsd } } }`;
    const totals = await post({ query: stats, variables: { ids, granularity: 'TOTAL' } });
    assert.equal(totals.status, 200, JSON.stringify(totals.body.errors));
    const months = await post({ query: stats, variables: { ids, granularity: 'MONTH' } });
    assert.equal(months.status, 400, 'the cost of the TOTAL variant was not reused');
    assert.match(months.body.errors?.[0]?.message ?? '', /estimated cost \d+ exceeds 100000/);

    // @include changes the cost: the cheap variant must not let the expensive one through.
    const cheap = await f.gw.request(MaybePagesDocument, { ids, first: 500, withPages: false });
    assert.equal(cheap.errors, undefined);
    const costly = await f.gw.request(MaybePagesDocument, { ids, first: 500, withPages: true });
    assert.equal(costly.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT');
  });

  it('refuses an operation whose cost cannot be estimated instead of running it unchecked', async () => {
    // Each fragment spreads the one before twice: 2^15 selections from a few lines. The
    // estimator stops counting at 10,000; the operation was then run without a limit or a charge.
    const fragments = ['fragment F0 on Query { __typename }'];
    for (let i = 1; i <= 15; i++) fragments.push(`fragment F${i} on Query { ...F${i - 1} ...F${i - 1} }`);
    const { status, body, statements } = await postCounted({ query: `{ customers(ids: ["1", "2"]) { name } ...F15 }\n${fragments.join('\n')}` });
    assert.equal(status, 400);
    assert.equal(body.errors?.[0]?.extensions.code, 'BAD_USER_INPUT');
    assert.match(body.errors![0]!.message, /cost cannot be estimated/);
    assert.equal(statements, 0, 'nothing ran');
    // Variables that do not coerce still get execution's own error.
    const { body: wrong } = await post({ query: print(PagesOfCustomersDocument), variables: { ids: ['1'], first: 'many' } });
    assert.equal(wrong.errors?.[0]?.extensions.code, 'BAD_USER_INPUT');
    assert.match(wrong.errors![0]!.message, /Variable "\$first"/);
  });

  it('charges what a page of analytics rows selects per row once rows select more than their columns', async () => {
    const refused = async (query: string) => {
      const { status, body } = await post({ query });
      return status === 400 && body.errors?.[0]?.extensions.code === 'BAD_USER_INPUT' && /estimated cost \d+ exceeds/.test(body.errors[0]!.message);
    };
    // 10,000 rows, each with its customer's 500 invoices: charged as one customer's, it ran.
    const nested = 'customer { invoicesIssued(first: 500) { nodes { id amountUsd } } }';
    assert.ok(await refused(`{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { rows { totalUsd ${nested} } } }`));
    assert.ok(await refused(`{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { ...Page } } fragment Page on InvoiceStats { rows { ...Row } } fragment Row on StatsRow { ${nested} }`));
    // Only the object fields repeat per row: a customer's name 9 times over (1 + 9 per row),
    // 10 + 10,000 (the page) + 1 (rows) + 10 x 10,000.
    const names = Array.from({ length: 9 }, (_, i) => `n${i}: name`).join(' ');
    const nineNames = await post({ query: `{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { rows { customer { ${names} } } } }` });
    assert.match(nineNames.body.errors?.[0]?.message ?? '', /estimated cost 110011 exceeds 100000/);
    // A full page of every column with each row's customer name runs: 10 + 10,000 + 8 (the
    // columns and rows) + 2 x 10,000 (the README's figure).
    const costs = async () => (await f.gw.gateway.metrics.queryComplexity.get()).values.find((v) => v.metricName === 'gateway_query_complexity_sum')!.value;
    const before = await costs();
    const named = await post({ query: `{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { rows { customerId month invoiceCount totalUsd avgUsd minUsd maxUsd customer { name } } } }` });
    assert.equal(named.status, 200, JSON.stringify(named.body.errors));
    assert.equal((await costs()) - before, 30_018);
    // Apollo Client's __typename in each selection counts once where it is not under a row's object.
    const typed = await post({ query: `{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { __typename rows { __typename customerId totalUsd customer { __typename name } } } }` });
    assert.equal(typed.status, 200, JSON.stringify(typed.body.errors));
    assert.equal((await costs()) - before, 30_018 + 10 + 10_000 + 5 + 3 * 10_000);
    // Each of 1,000 customers' months of ten years: 120 rows each.
    const ids = JSON.stringify(Array.from({ length: 1000 }, (_, i) => String(i + 1)));
    assert.ok(await refused(`{ customers(ids: ${ids}) { stats(months: 120, role: ISSUER, granularity: MONTH) { month totalUsd } } }`));
    // Columns alone stay a page's length, through fragments too; a row's customer on a small page is allowed.
    for (const query of [
      `{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { rows { customerId month invoiceCount totalUsd avgUsd minUsd maxUsd } pageInfo { endCursor } } }`,
      `{ invoiceStats(groupBy: ISSUER, months: 12, first: 10000) { ...Page } } fragment Page on InvoiceStats { rows { ... on StatsRow { customerId totalUsd } } }`,
      `{ invoiceStats(groupBy: ISSUER, months: 12, first: 20) { rows { totalUsd customer { name } } } }`,
      `{ customers(ids: ["1", "2"]) { stats(months: 120, role: ISSUER, granularity: MONTH) { month totalUsd } } }`,
    ]) {
      const { status, body } = await post({ query });
      assert.equal(status, 200, query);
      assert.equal(body.errors, undefined, `${query}: ${JSON.stringify(body.errors)}`);
    }
  });
});

