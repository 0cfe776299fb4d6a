import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { eventually } from './fixtures/eventually.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { useTestGateway } from './fixtures/perFile.js';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';

const skip = await missingServices('postgres', 'redis');

const SECRET = 'a-response-cache-test-secret-of-32-bytes';
const AUTH = { AUTH_MODE: 'required', AUTH_JWT_SECRET: SECRET, AUTH_ISSUER: 'https://idp.test/', AUTH_AUDIENCE: 'invoice-gateway' };
const INVOICE = 'query Inv($id: ID!) { invoice(id: $id) { id amountUsd issuer { id name } receiverId } }';
const STATS = `query Stats($ids: [ID!], $after: String) {
  invoiceStats(groupBy: ISSUER, months: 3, customerIds: $ids, granularity: MONTH, first: 2, after: $after) {
    rows { customerId customer { name } month invoiceCount totalUsd avgUsd minUsd maxUsd }
    pageInfo { hasNextPage endCursor } freshness { lakeRows liveRows engine } warnings { code message } } }`;

const token = (claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuer(AUTH.AUTH_ISSUER).setAudience(AUTH.AUTH_AUDIENCE).setExpirationTime('10m').sign(new TextEncoder().encode(SECRET));

interface Raw {
  status: number;
  contentType: string | null;
  retryAfter: string | null;
  text: string;
}

async function ask(url: string, bearer: string | undefined, query: string, variables: Record<string, unknown>): Promise<Raw> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, contentType: response.headers.get('content-type'), retryAfter: response.headers.get('retry-after'), text: await response.text() };
}

describe('response cache: repeated lookups answered before Apollo, exactly as computed', { skip }, () => {
  const env = (prefix: string) => ({ ...AUTH, CHANGE_FEED: '1', REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: prefix, RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '0' });
  /** A second gateway process on the same database and Redis: a standby of the feed. */
  let other: TestGateway;
  // Registered before the fixture's hooks, so that it runs first (after hooks run in order): once
  // the first gateway stops, this standby takes the feed's slot, the database cannot be dropped
  // ("used by an active logical replication slot") and the still running standby kept the test
  // process alive for good (seen once in CI on Node 22).
  after(() => other?.stop());
  const f = useTestGateway('response_cache', { env: (db) => env(`${db.name}:`), seed: { customers: 8, invoices: 200, months: 3, seed: 5 } });
  const tokens: Record<string, string> = {};
  let row: { id: string; issuerId: string; receiverId: string };
  let stranger: string;

  before(async () => {
    await eventually(() => f.gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    other = await startTestGateway({ databaseUrl: f.db.url, env: env(`${f.db.name}:`) });
    await eventually(() => other.gateway.feed.status().state === 'standby', 'the second gateway to stand by');
    const { rows } = await f.sql.query(`SELECT invoice_id::text AS id, issuer_id::text AS "issuerId", receiver_id::text AS "receiverId" FROM invoices WHERE issuer_id <> receiver_id ORDER BY invoice_id LIMIT 1`);
    row = rows[0];
    stranger = (await f.sql.query(`SELECT customer_id::text AS id FROM customers WHERE customer_id NOT IN ($1, $2) LIMIT 1`, [row.issuerId, row.receiverId])).rows[0].id;
    tokens.admin = await token({ sub: 'admin-1', role: 'admin' });
    tokens.issuer = await token({ sub: 'issuer-1', role: 'customer', customer_id: row.issuerId });
    tokens.stranger = await token({ sub: 'stranger-1', role: 'customer', customer_id: stranger });
    // Answers are kept only once a process's invalidation channel is subscribed: until then, ask.
    const probe = (await f.sql.query(`SELECT max(invoice_id)::text AS id FROM invoices`)).rows[0].id;
    for (const gw of [f.gw, other]) {
      await eventually(async () => {
        await ask(gw.url, tokens.admin!, INVOICE, { id: probe });
        return (await hits(gw)) > 0;
      }, 'answers to be kept');
    }
  });
  after(() => deleteRedisKeys(`${f.db.name}:*`));

  const hits = (gw: TestGateway) => gw.gateway.metrics.total(gw.gateway.metrics.responseCache, { outcome: 'hit' });

  it('answers the third ask from the cache, byte for byte and header for header as computed, counted in the metrics', async () => {
    const requests = () => f.gw.gateway.metrics.total(f.gw.gateway.metrics.graphqlRequests);
    const [requestsBefore, hitsBefore] = [await requests(), await hits(f.gw)];
    const computed = [await ask(f.gw.url, tokens.admin!, INVOICE, { id: row.id }), await ask(f.gw.url, tokens.admin!, INVOICE, { id: row.id })];
    assert.equal(await hits(f.gw), hitsBefore, 'the first two are computed (the second is admitted)');
    const stored = await ask(f.gw.url, tokens.admin!, INVOICE, { id: row.id });
    assert.equal(await hits(f.gw), hitsBefore + 1);
    assert.deepEqual(stored, computed[0]);
    assert.equal(JSON.parse(stored.text).data.invoice.id, row.id);
    assert.equal(await requests(), requestsBefore + 3, 'an answer from the cache is an operation in the metrics too');
  });

  it('scopes answers by viewer: a customer never gets another viewer’s stored answer', async () => {
    // The admin's answer is stored (previous test): a stranger asking the same body gets null.
    for (let i = 0; i < 3; i++) assert.deepEqual(JSON.parse((await ask(f.gw.url, tokens.stranger!, INVOICE, { id: row.id })).text), { data: { invoice: null } });
    // The stranger's null is stored now too: the issuer still gets its invoice, and the admin as well.
    const hitsBefore = await hits(f.gw);
    for (let i = 0; i < 3; i++) assert.equal(JSON.parse((await ask(f.gw.url, tokens.issuer!, INVOICE, { id: row.id })).text).data.invoice.id, row.id);
    assert.equal(JSON.parse((await ask(f.gw.url, tokens.admin!, INVOICE, { id: row.id })).text).data.invoice.id, row.id);
    assert.ok((await hits(f.gw)) >= hitsBefore + 2, 'the issuer and the admin were answered from the cache, each from its own answer');
  });

  it('drops an answer in every process when the feed sees its row change, be it an update, a delete or an insert of an absent id', async () => {
    const amount = async (gw: TestGateway) => JSON.parse((await ask(gw.url, tokens.admin!, INVOICE, { id: row.id })).text).data.invoice?.amountUsd ?? null;
    for (let i = 0; i < 3; i++) await amount(other);
    const hitsBefore = await hits(other);
    await amount(other);
    assert.equal(await hits(other), hitsBefore + 1, 'stored in the second process too');

    await f.sql.query(`UPDATE invoices SET amount_usd = 4242.42 WHERE invoice_id = $1`, [row.id]);
    for (const gw of [f.gw, other]) await eventually(async () => (await amount(gw)) === '4242.42', 'the update to be answered');
    // The issuer's name is in the answer too: a change of the customer row drops it as well.
    await f.sql.query(`UPDATE customers SET customer_name = 'Renamed by psql' WHERE customer_id = $1`, [row.issuerId]);
    for (const gw of [f.gw, other]) {
      await eventually(async () => JSON.parse((await ask(gw.url, tokens.admin!, INVOICE, { id: row.id })).text).data.invoice.issuer.name === 'Renamed by psql', 'the rename to be answered');
    }
    await f.sql.query(`DELETE FROM invoices WHERE invoice_id = $1`, [row.id]);
    for (const gw of [f.gw, other]) await eventually(async () => (await amount(gw)) === null, 'the delete to be answered');

    const absent = '9900001';
    for (let i = 0; i < 3; i++) assert.deepEqual(JSON.parse((await ask(other.url, tokens.admin!, INVOICE, { id: absent })).text), { data: { invoice: null } });
    await f.sql.query(`INSERT INTO invoices (invoice_id, issue_date, issuer_id, receiver_id, amount_usd) VALUES ($1, now(), $2, $3, 7)`, [absent, row.issuerId, row.receiverId]);
    await eventually(async () => JSON.parse((await ask(other.url, tokens.admin!, INVOICE, { id: absent })).text).data.invoice?.id === absent, 'the insert to be answered');
  });

  it('keeps only answers of lookups without errors', async () => {
    const metrics = f.gw.gateway.metrics;
    const before = await hits(f.gw);
    const uncacheable = await metrics.total(metrics.responseCache, { outcome: 'uncacheable' });
    const { rows } = await f.sql.query(`SELECT invoice_id::text AS id FROM invoices ORDER BY invoice_id DESC LIMIT 1`);
    for (let i = 0; i < 3; i++) {
      // dueDate reads the payment terms in the lake; risk and lists read other tables.
      await ask(f.gw.url, tokens.admin!, 'query($id: ID!) { invoice(id: $id) { id dueDate } }', { id: rows[0].id });
      await ask(f.gw.url, tokens.admin!, 'query($id: ID!) { invoice(id: $id) { id risk { score } } }', { id: rows[0].id });
      const bad = await ask(f.gw.url, tokens.admin!, INVOICE, { id: 'not-an-id' });
      assert.equal(JSON.parse(bad.text).errors[0].extensions.code, 'BAD_USER_INPUT');
    }
    assert.equal(await hits(f.gw), before);
    assert.equal(await metrics.total(metrics.responseCache, { outcome: 'uncacheable' }), uncacheable + 6);
  });
});

describe('response cache: a stored answer is charged its cost like a computed one', { skip }, () => {
  const env = (prefix: string, responses: string) => ({
    AUTH_MODE: 'off', CHANGE_FEED: '1', REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: prefix,
    RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '40', RATE_LIMIT_WINDOW_SECONDS: '600', RESPONSE_CACHE_MAX_ENTRIES: responses,
  });
  const f = useTestGateway('response_cost', { env: (db) => env(`${db.name}:cached:`, '1000'), seed: { customers: 3, invoices: 10, months: 1, seed: 3 } });
  let uncached: TestGateway;
  before(async () => {
    await eventually(() => f.gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    // Budgets are per client (its address with AUTH_MODE=off): a prefix of its own keeps them apart.
    uncached = await startTestGateway({ databaseUrl: f.db.url, env: { ...env(`${f.db.name}:uncached:`, '0'), CHANGE_FEED: '0' } });
  });
  after(async () => {
    await uncached?.stop();
    await deleteRedisKeys(`${f.db.name}:*`);
  });

  it('runs out of budget after as many asks, with the same 429 answer, with and without the cache', async () => {
    const run = async (gw: TestGateway) => {
      const answers: Raw[] = [];
      for (let i = 0; i < 12; i++) answers.push(await ask(gw.url, undefined, INVOICE, { id: '3' }));
      return answers;
    };
    const [withCache, without] = [await run(f.gw), await run(uncached)];
    const statuses = (answers: Raw[]) => answers.map((a) => a.status);
    assert.deepEqual(statuses(withCache), statuses(without));
    assert.ok(statuses(withCache).includes(429) && statuses(withCache).filter((s) => s === 200).length >= 3, statuses(withCache).join());
    assert.ok((await f.gw.gateway.metrics.total(f.gw.gateway.metrics.responseCache, { outcome: 'hit' })) > 0, 'some answers came from the cache');
    const refusal = (answers: Raw[]) => {
      const first = answers.find((a) => a.status === 429)!;
      return { ...first, text: first.text.replace(/retry after \d+ s/, 'retry after N s') };
    };
    assert.deepEqual({ ...refusal(withCache), retryAfter: null }, { ...refusal(without), retryAfter: null });
    assert.ok(Number(refusal(withCache).retryAfter) > 0);
  });
});

describe('compiled runs (graphql-jit) answer exactly as Apollo does', { skip }, () => {
  const env = (prefix: string, responses: string) => ({
    ...AUTH, CHANGE_FEED: '0', REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: prefix, RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '0', RESPONSE_CACHE_MAX_ENTRIES: responses,
  });
  const f = useTestGateway('compiled_runs', { env: (db) => env(`${db.name}:`, '1000'), seed: { customers: 6, invoices: 120, months: 2, seed: 8 } });
  let apolloOnly: TestGateway;
  const tokens: Record<string, string> = {};
  let ids: string[];
  /** Cursors of invoiceStats pages of two rows, as the gateway gave them. */
  const cursors: string[] = [];
  before(async () => {
    apolloOnly = await startTestGateway({ databaseUrl: f.db.url, env: env(`${f.db.name}:`, '0') });
    // Asked of both gateways alike, so that both count the same requests.
    const admin = await token({ sub: 'admin-0', role: 'admin' });
    for (let after: string | null = null; cursors.length < 4; ) {
      const [ours, apollo]: Raw[] = [await ask(f.gw.url, admin, STATS, { ids: null, after }), await ask(apolloOnly.url, admin, STATS, { ids: null, after })];
      assert.deepEqual(ours, apollo);
      const page: { endCursor: string } = JSON.parse(apollo!.text).data.invoiceStats.pageInfo;
      cursors.push((after = page.endCursor));
    }
    const { rows } = await f.sql.query(`SELECT invoice_id::text AS id, issuer_id::text AS issuer FROM invoices ORDER BY invoice_id`);
    ids = rows.map((r: { id: string }) => r.id);
    tokens.admin = await token({ sub: 'admin-1', role: 'admin' });
    tokens.customer = await token({ sub: 'customer-1', role: 'customer', customer_id: rows[0].issuer });
  });
  after(async () => {
    await apolloOnly?.stop();
    await deleteRedisKeys(`${f.db.name}:*`);
  });

  const cases: { name: string; query: string; variables: (i: number) => Record<string, unknown> }[] = [
    { name: 'one invoice with a party', query: INVOICE, variables: (i) => ({ id: ids[i] }) },
    {
      name: 'aliases, a fragment, __typename and @include',
      query: `query Two($a: ID!, $b: ID!, $withReceiver: Boolean!) { first: invoice(id: $a) { ...Columns } second: invoice(id: $b) { ...Columns receiver @include(if: $withReceiver) { name __typename } } }
              fragment Columns on Invoice { id issueDate amountUsd __typename }`,
      variables: (i) => ({ a: ids[i], b: ids[i + 1], withReceiver: i % 2 === 0 }),
    },
    { name: 'a list with absent ids', query: 'query List($ids: [ID!]!) { invoices(ids: $ids) { id issuerId receiver { id name } } }', variables: (i) => ({ ids: [ids[i], '987654321', ids[i + 2]] }) },
    { name: 'customers', query: 'query People($ids: [ID!]!) { customers(ids: $ids) { id name } }', variables: (i) => ({ ids: [String((i % 6) + 1), '999'] }) },
    { name: 'a bad id (an error)', query: INVOICE, variables: (i) => ({ id: `not-an-id-${i}` }) },
    // Analytics: freshness.asOf (the moment of the answer) is left out, the rest compared byte for byte.
    { name: 'invoiceStats for some customers', query: STATS, variables: (i) => ({ ids: [String((i % 6) + 1), String(((i + 1) % 6) + 1)], after: null }) },
    { name: 'invoiceStats, a second page', query: STATS, variables: (i) => ({ ids: null, after: cursors[i % cursors.length] }) },
    // Same variable shape as the page above, so compiled: the error is formatted by the compiled run, not by Apollo.
    { name: 'invoiceStats with a bad cursor (an error)', query: STATS, variables: (i) => ({ ids: null, after: `not-a-cursor-${i}` }) },
  ];

  it('gives the same status, headers and bytes as Apollo for every viewer, over many requests of each shape', async () => {
    const runsBefore = await f.gw.gateway.metrics.total(f.gw.gateway.metrics.compiledRuns);
    for (const viewer of ['admin', 'customer']) {
      for (const c of cases) {
        // Different variables each time: no stored answer, so every request after the first is a compiled run.
        for (let i = 0; i < 6; i++) {
          const [ours, apollo] = [await ask(f.gw.url, tokens[viewer], c.query, c.variables(i)), await ask(apolloOnly.url, tokens[viewer], c.query, c.variables(i))];
          assert.deepEqual(ours, apollo, `${c.name}, ${viewer}, request ${i}`);
        }
      }
    }
    const runs = (await f.gw.gateway.metrics.total(f.gw.gateway.metrics.compiledRuns)) - runsBefore;
    // Four lookup and two analytics shapes without errors, and the analytics error; two viewers,
    // five requests each after the first (the list of customers is one shape).
    assert.ok(runs >= 7 * 2 * 5 - 2, `${runs} compiled runs`);
    const requests = (gw: TestGateway) => gw.gateway.metrics.total(gw.gateway.metrics.graphqlRequests);
    assert.equal(await requests(f.gw), await requests(apolloOnly), 'every answer counted alike');
  });
});
