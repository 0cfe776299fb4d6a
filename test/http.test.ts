import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { connect, subscribe } from './fixtures/subscriber.js';
import { InvoiceByIdDocument, RiskScoredDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

describe('HTTP endpoints', { skip }, () => {
  const f = useTestGateway('http', { seed: { customers: 3, invoices: 10, months: 1, seed: 2 } });

  it('/healthz and /readyz answer 200 while Postgres is up', async () => {
    const health = await fetch(new URL('/healthz', f.gw.url));
    assert.equal(health.status, 200);
    const ready = await fetch(new URL('/readyz', f.gw.url));
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), {
      status: 'ready',
      postgres: true,
      feed: { state: 'off', reason: 'CHANGE_FEED=0 on this gateway', lag: { bytes: null, seconds: 0 } },
    });
  });

  it('/metrics exposes operations, cache, SQL and pool figures in Prometheus format', async () => {
    // Three reads: the second is admitted into the cache (CACHE_ADMISSION=second-read), the third hits.
    for (let i = 0; i < 3; i++) await f.gw.request(InvoiceByIdDocument, { id: '1' });
    const res = await fetch(new URL('/metrics', f.gw.url));
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    assert.match(text, /gateway_graphql_requests_total\{operation="InvoiceById",outcome="ok"\} 3/);
    assert.match(text, /gateway_graphql_request_duration_seconds_count\{operation="InvoiceById"\} 3/);
    assert.match(text, /gateway_cache_hits_total\{entity="invoice"\} 1/);
    assert.match(text, /gateway_cache_misses_total\{entity="invoice"\} 2/);
    assert.match(text, /gateway_cache_fills_refused_total\{entity="invoice"\} 1/);
    assert.match(text, /gateway_sql_statements_total\{statement="invoices_by_ids",outcome="ok"\} 2/);
    assert.match(text, /gateway_pg_pool_connections\{state="total"\} \d+/);
    assert.match(text, /process_resident_memory_bytes/);
    const logged = f.gw.logs.filter((l) => l.msg === 'graphql operation' && l.operation === 'InvoiceById');
    assert.equal(logged.length, 3, 'LOG_LEVEL=debug logs one line per operation');
  });

  it('serves Apollo Sandbox as the landing page to a browser', async () => {
    const res = await fetch(f.gw.url, { headers: { accept: 'text/html' } });
    assert.equal(res.status, 200);
    assert.match(await res.text(), /embeddable-sandbox/);
  });

  it('rejects a syntax error and an unknown field with their GraphQL codes', async () => {
    const post = (query: string) =>
      fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) }).then(
        (r) => r.json() as Promise<{ errors: { extensions: { code: string } }[] }>,
      );
    assert.equal((await post('{ invoice(id: ')).errors[0]!.extensions.code, 'GRAPHQL_PARSE_FAILED');
    assert.equal((await post('{ invoice(id: "1") { nope } }')).errors[0]!.extensions.code, 'GRAPHQL_VALIDATION_FAILED');
  });

  it('answers GET queries, oversized bodies, bad JSON and unknown paths with proper statuses', async () => {
    const get = await fetch(`${f.gw.url}?query=${encodeURIComponent('{ invoice(id: "1") { id } }')}`, { headers: { 'apollo-require-preflight': 'true' } });
    assert.equal(get.status, 200);
    assert.deepEqual(await get.json(), { data: { invoice: { id: '1' } } });

    const csrf = await fetch(`${f.gw.url}?query=${encodeURIComponent('{ invoice(id: "1") { id } }')}`);
    assert.equal(csrf.status, 400, 'a simple GET without a preflight header is refused (CSRF prevention)');

    const huge = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: `{ invoice(id: "1") { id } } # ${'x'.repeat(2 * 1024 * 1024)}` }) });
    assert.equal(huge.status, 413);

    const badJson = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query": ' });
    assert.equal(badJson.status, 400);
    assert.equal(((await badJson.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code, 'BAD_REQUEST');

    assert.equal((await fetch(new URL('/nope', f.gw.url))).status, 404);
    assert.equal((await fetch(new URL('/metrics', f.gw.url), { method: 'POST' })).status, 405);
    const root = await fetch(new URL('/', f.gw.url), { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/graphql');
  });

  it('keeps an idle connection open past a proxy\u2019s 60 s idle timeout, and says so (a request seconds later reuses it)', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const post = () =>
      new Promise<{ status: number; keepAlive: string | undefined; reused: boolean }>((resolve, reject) => {
        const req = http.request(f.gw.url, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, keepAlive: res.headers['keep-alive'] as string | undefined, reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ query: '{ __typename }' }));
      });
    try {
      const first = await post();
      assert.deepEqual(first, { status: 200, keepAlive: 'timeout=65', reused: false });
      // Past Node's default of 5 s, which closed the connection in between.
      await new Promise((resolve) => setTimeout(resolve, 5_500));
      assert.deepEqual(await post(), { status: 200, keepAlive: 'timeout=65', reused: true });
    } finally {
      agent.destroy();
    }
  });

  it('sends answers as UTF-8 bytes with their byte length, from Apollo and from the compiled path alike', async () => {
    // Descriptions with a typographic apostrophe (3 bytes in UTF-8) through Apollo, then a lookup
    // asked twice (compiled once Apollo answered it) and a third time (stored).
    const requests = [
      '{ __type(name: "Customer") { fields { name description } } }',
      '{ invoice(id: "1") { id issuer { name } } }',
      '{ invoice(id: "1") { id issuer { name } } }',
      '{ invoice(id: "1") { id issuer { name } } }',
    ];
    for (const query of requests) {
      const res = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
      const bytes = Buffer.from(await res.arrayBuffer());
      assert.equal(res.status, 200, query);
      assert.equal(Number(res.headers.get('content-length')), bytes.length, query);
      const body = JSON.parse(bytes.toString('utf8')) as { data?: unknown; errors?: unknown };
      assert.equal(body.errors, undefined, query);
      if (query.includes('__type')) assert.match(JSON.stringify(body.data), /customer\u2019s/, 'the apostrophe arrives whole');
    }
  });

  it('refuses an integer variable past 2^53 (JSON rounds it), over POST, GET and WebSocket', async () => {
    const query = 'query ($id: ID!) { invoice(id: $id) { id } }';
    // Written by hand: JSON.stringify cannot send 9007199254740993 unrounded.
    const post = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"query": ${JSON.stringify(query)}, "variables": {"id": 9007199254740993}}` });
    assert.equal(post.status, 400);
    const refused = (await post.json()) as { errors: { message: string; extensions: { code: string } }[] };
    assert.equal(refused.errors[0]!.extensions.code, 'BAD_USER_INPUT');
    assert.match(refused.errors[0]!.message, /\$id is a number beyond 2\^53/);
    const get = await fetch(`${f.gw.url}?query=${encodeURIComponent(query)}&variables=${encodeURIComponent('{"id":9007199254740993}')}`, { headers: { 'apollo-require-preflight': 'true' } });
    assert.equal(get.status, 400);
    // A safe integer is still taken as the id's text, as GraphQL's ID does.
    const safe = await fetch(f.gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables: { id: 1 } }) });
    assert.deepEqual(await safe.json(), { data: { invoice: { id: '1' } } });

    const client = connect(f.gw.url);
    try {
      const sub = subscribe(client, RiskScoredDocument, { issuerId: 2 ** 53 as unknown as string });
      await sub.ended;
      assert.equal(sub.errors[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(sub.errors));
    } finally {
      await client.dispose();
    }
  });
});

/** Its figures name operations and count risk scores by band: for the operator's scraper only, when a token is set. */
describe('/metrics behind METRICS_TOKEN', { skip }, () => {
  const token = 'scrape-me-0123456789';
  const f = useTestGateway('http_metrics_token', { env: () => ({ METRICS_TOKEN: token }) });
  const scrape = (authorization?: string) => fetch(new URL('/metrics', f.gw.url), { headers: authorization ? { authorization } : {} });

  it('answers 401 without the token or with another, and the figures with it', async () => {
    for (const authorization of [undefined, `Bearer ${token}x`, `Bearer ${token.slice(1)}`, token, `Basic ${token}`]) {
      const res = await scrape(authorization);
      assert.equal(res.status, 401, String(authorization));
      assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
      assert.equal(await res.text(), '');
    }
    const res = await scrape(`Bearer ${token}`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /gateway_feed_state/);
    // The other probes stay open: an orchestrator's checks carry no token.
    assert.equal((await fetch(new URL('/healthz', f.gw.url))).status, 200);
  });
});
