import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { connect } from './fixtures/subscriber.js';
import { freePorts } from './fixtures/network.js';
import { spawnGateway } from './fixtures/process.js';
import { hasRedisServer, startRedisServer } from './fixtures/redisServer.js';

const skip = await missingServices('postgres', 'redis');

const SECRET = 'an-hs256-test-secret-of-at-least-32-bytes';
const ISSUER = 'https://idp.test/';
const AUDIENCE = 'invoice-gateway';

/** A public key as an identity provider publishes it in its key set. */
const publicJwk = async (key: KeyObject, kid: string, alg: string) => ({ ...(await exportJWK(key)), kid, alg, use: 'sig' }) as JWK;

/** An identity provider's key set endpoint: `answer()` at each fetch, HTTP 500 while it says 'down'. */
async function startKeySet(answer: () => JWK[] | 'down'): Promise<{ url: string; fetches(): number; close(): Promise<void> }> {
  let fetches = 0;
  const idp = http.createServer((_req, res) => {
    fetches++;
    const keys = answer();
    if (keys === 'down') res.writeHead(500).end('down');
    else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(idp.address() as AddressInfo).port}/jwks.json`,
    fetches: () => fetches,
    close: () => new Promise((resolve) => idp.close(() => resolve())),
  };
}
const AUTH = { AUTH_MODE: 'required', AUTH_JWT_SECRET: SECRET, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE };

type Claims = Record<string, unknown>;

/** A token as the identity provider would issue it; `change` alters it to forge one. */
async function token(claims: Claims, options: { key?: Uint8Array | CryptoKey; alg?: string; kid?: string; expiresIn?: string | number | null; notBefore?: string | number; issuer?: string; audience?: string } = {}): Promise<string> {
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256', ...(options.kid ? { kid: options.kid } : {}) })
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setIssuedAt();
  if (options.expiresIn !== null) jwt.setExpirationTime(options.expiresIn ?? '10m');
  if (options.notBefore !== undefined) jwt.setNotBefore(options.notBefore);
  return jwt.sign(options.key ?? new TextEncoder().encode(SECRET));
}

interface Answer {
  status: number;
  headers: Headers;
  body: { data?: Record<string, unknown> | null; errors?: { message: string; path?: unknown[]; extensions?: { code?: string } }[] };
}

async function ask(url: string, bearer: string | undefined, query: string, variables: Record<string, unknown> = {}): Promise<Answer> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Answer['body'] };
}

const codes = (answer: Answer) => (answer.body.errors ?? []).map((e) => e.extensions?.code);

describe('access control: roles, rows and fields', { skip }, () => {
  const f = useTestGateway('access', {
    env: (db) => ({ ...AUTH, AUTH_CLOCK_SKEW_SECONDS: '1', CHANGE_FEED: '1', REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: `${db.name}:`, RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '0' }),
    seed: { customers: 12, invoices: 600, months: 6, seed: 9 },
  });
  after(() => deleteRedisKeys(`${f.db.name}:*`));

  const tokens: Record<string, string> = {};
  let own: { id: string; issuerId: string; receiverId: string };
  let other: { id: string; issuerId: string; receiverId: string };
  let me: string;
  let absentId: string;

  before(async () => {
    await eventually(() => f.gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    // Customer `me` and an invoice of two other customers.
    const { rows } = await f.sql.query<{ id: string; issuerId: string; receiverId: string }>(
      `SELECT invoice_id::text AS id, issuer_id::text AS "issuerId", receiver_id::text AS "receiverId" FROM invoices WHERE issuer_id <> receiver_id ORDER BY invoice_id`,
    );
    own = rows[0]!;
    me = own.issuerId;
    other = rows.find((r) => r.issuerId !== me && r.receiverId !== me)!;
    absentId = String(Number((await f.sql.query('SELECT max(invoice_id)::text AS m FROM invoices')).rows[0].m) + 1_000_000);
    tokens.admin = await token({ sub: 'admin-1', role: 'admin' });
    tokens.analyst = await token({ sub: 'analyst-1', role: 'analyst' });
    tokens.customer = await token({ sub: 'customer-1', role: 'customer', customer_id: Number(me) });
    tokens.writer = await token({ sub: 'erp-1', role: 'writer' });
    tokens.stranger = await token({ sub: 'someone', role: 'auditor' });
  });

  const INVOICE = `query($id: ID!) { invoice(id: $id) { id issuerId receiverId risk { score } } }`;

  it('answers each role with its data or FORBIDDEN, for every query and mutation', async () => {
    const url = f.gw.url;
    const createInput = { input: { issuerId: me, receiverId: own.receiverId, amountUsd: '12.34' } };
    // [operation, variables, roles that may run it]
    const operations: [string, string, Record<string, unknown>, string[]][] = [
      ['invoice', INVOICE, { id: own.id }, ['admin', 'analyst', 'customer']],
      ['invoices', `query($ids: [ID!]!) { invoices(ids: $ids) { id } }`, { ids: [own.id] }, ['admin', 'analyst', 'customer']],
      ['customer', `query($id: ID!) { customer(id: $id) { id name } }`, { id: me }, ['admin', 'analyst', 'customer']],
      ['customers', `query($ids: [ID!]!) { customers(ids: $ids) { id } }`, { ids: [me] }, ['admin', 'analyst', 'customer']],
      ['invoiceStats', `{ invoiceStats(groupBy: ISSUER, months: 6, granularity: TOTAL) { rows { customerId invoiceCount } } }`, {}, ['admin', 'analyst', 'customer']],
      ['segmentStats', `{ segmentStats(dimensions: [MONTH], months: 6) { rows { month invoiceCount } } }`, {}, ['admin', 'analyst', 'customer']],
      ['riskScores', `{ riskScores(first: 5) { nodes { invoiceId } } }`, {}, ['admin', 'analyst']],
      ['createInvoice', `mutation($input: CreateInvoiceInput!) { createInvoice(input: $input) { id issuerId risk { score } issuer { name profile { industry } } } }`, createInput, ['admin', 'writer']],
    ];
    for (const [name, query, variables, allowed] of operations) {
      for (const role of ['admin', 'analyst', 'customer', 'writer', 'stranger']) {
        const answer = await ask(url, tokens[role], query, variables);
        if (allowed.includes(role)) {
          assert.deepEqual(answer.body.errors, undefined, `${role} ${name}`);
          assert.ok(answer.body.data?.[name] != null, `${role} ${name} has data`);
        } else {
          assert.deepEqual(codes(answer), ['FORBIDDEN'], `${role} ${name}: ${JSON.stringify(answer.body)}`);
          assert.equal(answer.body.data?.[name] ?? null, null);
        }
      }
    }
    // What a writer reads back is only the invoice it created: no risk, no profiles.
    const created = await ask(url, tokens.writer, operations[7]![1], createInput);
    const invoice = created.body.data!.createInvoice as { risk: unknown; issuer: { name: string; profile: unknown } };
    assert.equal(invoice.risk, null);
    assert.equal(invoice.issuer.profile, null);
    assert.ok(invoice.issuer.name);
  });

  it('shows a customer only its own invoices, records and analytics, and no risk scores', async () => {
    const url = f.gw.url;
    const mine = await ask(url, tokens.customer, INVOICE, { id: own.id });
    assert.equal((mine.body.data!.invoice as { id: string }).id, own.id);
    assert.equal((mine.body.data!.invoice as { risk: unknown }).risk, null, 'risk is internal');
    const admin = await eventually(async () => {
      const a = await ask(url, tokens.admin, INVOICE, { id: own.id });
      return (a.body.data!.invoice as { risk: unknown }).risk ? a : undefined;
    }, 'the invoice to be scored');
    assert.equal(typeof ((admin.body.data!.invoice as { risk: { score: unknown } }).risk.score), 'number', 'an admin sees the score');

    // Another pair's invoice is null, in lists too; its own customer record only.
    assert.deepEqual((await ask(url, tokens.customer, INVOICE, { id: other.id })).body, { data: { invoice: null } });
    const list = await ask(url, tokens.customer, `query($ids: [ID!]!) { invoices(ids: $ids) { id } }`, { ids: [own.id, other.id, absentId] });
    assert.deepEqual(list.body.data!.invoices, [{ id: own.id }, null, null]);
    const people = await ask(url, tokens.customer, `query($ids: [ID!]!) { customers(ids: $ids) { id } }`, { ids: [me, other.issuerId] });
    assert.deepEqual(people.body.data!.customers, [{ id: me }, null]);

    // Through its invoice: the counterparty's name, not its profile, rating or stats; its
    // invoice list holds only the invoices between the two.
    const counterparty = await ask(
      url,
      tokens.customer,
      `query($id: ID!) { invoice(id: $id) { receiver { id name profile { industry } rating { rating } ratingHistory { rating } stats(months: 6, role: ISSUER) { invoiceCount }
        invoicesIssued(first: 500) { nodes { issuerId receiverId } } invoicesReceived(first: 500) { nodes { issuerId receiverId } } } } }`,
      { id: own.id },
    );
    assert.equal(counterparty.body.errors, undefined);
    const receiver = (counterparty.body.data!.invoice as { receiver: Record<string, unknown> }).receiver as {
      name: string; profile: unknown; rating: unknown; ratingHistory: unknown[]; stats: unknown[];
      invoicesIssued: { nodes: { issuerId: string; receiverId: string }[] }; invoicesReceived: { nodes: { issuerId: string; receiverId: string }[] };
    };
    assert.ok(receiver.name);
    assert.deepEqual([receiver.profile, receiver.rating, receiver.ratingHistory, receiver.stats], [null, null, [], []]);
    assert.ok(receiver.invoicesReceived.nodes.length > 0);
    for (const n of [...receiver.invoicesIssued.nodes, ...receiver.invoicesReceived.nodes]) assert.ok(n.issuerId === me || n.receiverId === me, JSON.stringify(n));
    const { rows: pair } = await f.sql.query('SELECT count(*)::int AS n FROM invoices WHERE issuer_id = $1 AND receiver_id = $2', [me, own.receiverId]);
    assert.equal(receiver.invoicesReceived.nodes.length, Math.min(pair[0].n, 500));

    // invoiceStats: its own id whatever it asks for; segmentStats: its own invoices, never by
    // counterparties' profiles or ratings.
    const stats = await ask(url, tokens.customer, `query($ids: [ID!]) { invoiceStats(groupBy: ISSUER, months: 6, granularity: TOTAL, customerIds: $ids) { rows { customerId invoiceCount } } }`, {});
    const statsRows = (stats.body.data!.invoiceStats as { rows: { customerId: string; invoiceCount: number }[] }).rows;
    assert.deepEqual(statsRows.map((r) => r.customerId), [me]);
    const others = await ask(url, tokens.customer, `query($ids: [ID!]) { invoiceStats(groupBy: ISSUER, months: 6, granularity: TOTAL, customerIds: $ids) { rows { customerId } } }`, { ids: [other.issuerId] });
    assert.deepEqual((others.body.data!.invoiceStats as { rows: unknown[] }).rows, []);
    const segments = await ask(url, tokens.customer, `{ segmentStats(dimensions: [ISSUER, RECEIVER], months: 6, first: 1000) { rows { issuerId receiverId invoiceCount } } }`);
    const segmentRows = (segments.body.data!.segmentStats as { rows: { issuerId: string; receiverId: string; invoiceCount: number }[] }).rows;
    assert.ok(segmentRows.length > 0);
    for (const r of segmentRows) assert.ok(r.issuerId === me || r.receiverId === me, JSON.stringify(r));
    const { rows: total } = await f.sql.query(`SELECT count(*)::int AS n FROM invoices WHERE (issuer_id = $1 OR receiver_id = $1) AND issue_date >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '5 months'`, [me]);
    assert.equal(segmentRows.reduce((n, r) => n + r.invoiceCount, 0), total[0].n);
    for (const query of [`{ segmentStats(dimensions: [RECEIVER_RATING], months: 6) { rows { invoiceCount } } }`, `{ segmentStats(dimensions: [MONTH], months: 6, filter: { receiverIndustries: ["retail"] }) { rows { invoiceCount } } }`]) {
      assert.deepEqual(codes(await ask(url, tokens.customer, query)), ['FORBIDDEN'], query);
    }
  });

  it("answers another's invoice exactly as an absent one, with the same work", async () => {
    const url = f.gw.url;
    const metrics = f.gw.gateway.metrics;
    const work = async (id: string) => {
      const hits = await metrics.total(metrics.cacheHits);
      const misses = await metrics.total(metrics.cacheMisses);
      const sql = await metrics.total(metrics.sqlStatements);
      const answer = await ask(url, tokens.customer, INVOICE, { id });
      return { answer: answer.body, status: answer.status, hits: (await metrics.total(metrics.cacheHits)) - hits, misses: (await metrics.total(metrics.cacheMisses)) - misses, sql: (await metrics.total(metrics.sqlStatements)) - sql };
    };
    // Ids no other test reads: another pair's invoice, and one that does not exist.
    const { rows: unread } = await f.sql.query<{ id: string }>(
      `SELECT invoice_id::text AS id FROM invoices WHERE issuer_id <> $1 AND receiver_id <> $1 AND invoice_id <> $2 ORDER BY invoice_id DESC LIMIT 1`,
      [me, other.id],
    );
    const hiddenId = unread[0]!.id;
    const missingId = String(Number(absentId) + 1);
    // The first two asks read Postgres for both; the second caches the row, and the absence.
    for (let i = 0; i < 2; i++) {
      const [hidden, absent] = [await work(hiddenId), await work(missingId)];
      assert.deepEqual(hidden, absent);
    }
    await eventually(async () => (await work(missingId)).hits === 1, 'the absence to be cached');
    const [hidden, absent] = [await work(hiddenId), await work(missingId)];
    assert.deepEqual(hidden, absent);
    assert.deepEqual(hidden, { answer: { data: { invoice: null } }, status: 200, hits: 1, misses: 0, sql: 0 });
    // An id inserted after its absence was cached is found (the feed tombstones it).
    const { rows } = await f.sql.query(`INSERT INTO invoices (invoice_id, issue_date, issuer_id, receiver_id, amount_usd) VALUES ($1, now(), $2, $3, 5) RETURNING invoice_id::text AS id`, [missingId, me, own.receiverId]);
    await eventually(async () => ((await ask(url, tokens.customer, INVOICE, { id: rows[0].id })).body.data!.invoice as { id: string } | null)?.id === missingId, 'the new invoice to be found');
  });

  it('checks subscriptions at the start and closes them when the token expires', async () => {
    const url = f.gw.url;
    const query = `subscription { riskScored { invoiceId } }`;
    const run = (params: Record<string, unknown> | undefined) =>
      new Promise<{ events: unknown[]; error?: { code?: number; reason?: string } | unknown[] }>((resolve) => {
        const client = connect(url, { connectionParams: params });
        const events: unknown[] = [];
        const stop = client.subscribe({ query }, {
          next: (value) => {
            if (value.errors) {
              stop();
              void client.dispose();
              resolve({ events, error: value.errors as unknown[] });
            } else events.push(value.data);
          },
          error: (error) => {
            void client.dispose();
            resolve({ events, error: error as { code?: number; reason?: string } });
          },
          complete: () => resolve({ events }),
        });
      });
    const noToken = await run(undefined);
    assert.equal((noToken.error as { code: number }).code, 4401);
    const forged = await run({ authorization: `Bearer ${tokens.customer!.slice(0, -3)}abc` });
    assert.deepEqual([(forged.error as { code: number }).code, (forged.error as { reason: string }).reason], [4401, 'invalid token']);
    for (const role of ['customer', 'writer', 'stranger']) {
      const refused = await run({ authorization: `Bearer ${tokens[role]}` });
      assert.deepEqual((refused.error as { extensions: { code: string } }[]).map((e) => e.extensions.code), ['FORBIDDEN'], role);
    }
    const insert = () => f.sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES (now(), $1, $2, 7) RETURNING invoice_id::text AS id`, [me, own.receiverId]);

    // An admin (as a header of the upgrade request's kind, in headers) receives scores.
    const admin = connect(url, { connectionParams: { headers: { Authorization: `Bearer ${tokens.admin}` } } });
    const adminEvents: { riskScored: { invoiceId: string } }[] = [];
    admin.subscribe<{ riskScored: { invoiceId: string } }>({ query }, { next: (v) => void (v.data && adminEvents.push(v.data)), error: () => undefined, complete: () => undefined });

    // An analyst's token that expires in two seconds (the gateway's skew is 1 s): events until
    // then, then 4401 "token expired".
    const shortLived = await token({ sub: 'analyst-2', role: 'analyst' }, { expiresIn: Math.floor(Date.now() / 1000) + 2 });
    const started = Date.now();
    const client = connect(url, { connectionParams: { authorization: `Bearer ${shortLived}` } });
    const analystEvents: unknown[] = [];
    const closed = new Promise<{ code: number; reason: string }>((resolve) => {
      client.subscribe({ query }, { next: (v) => void analystEvents.push(v.data), error: (e) => resolve(e as { code: number; reason: string }), complete: () => resolve({ code: 0, reason: 'completed' }) });
    });
    // graphql-ws acknowledges before the subscription listens: insert until one arrives.
    const inserted: string[] = [];
    await eventually(async () => {
      const { rows } = await insert();
      inserted.push(String(rows[0].id));
      await new Promise((r) => setTimeout(r, 200));
      return analystEvents.length > 0;
    }, 'a score to reach the analyst', 2_500);
    const scored = analystEvents.map((e) => (e as { riskScored: { invoiceId: string } }).riskScored.invoiceId);
    assert.ok(scored.every((id) => inserted.includes(id)), `scores of ${scored} for inserts of ${inserted}`);
    const result = await closed;
    assert.deepEqual([result.code, result.reason], [4401, 'token expired']);
    assert.ok(Date.now() - started >= 1500, 'closed at expiry, not at once');
    await eventually(() => adminEvents.length > 0, 'a score to reach the admin');
    await admin.dispose();
    await client.dispose();
  });
});

describe('tokens: forged, expired or of the wrong issuer are refused', { skip }, () => {
  const f = useTestGateway('tokens', { env: () => ({ ...AUTH, RATE_LIMIT_REQUESTS: '0' }), seed: { customers: 3, invoices: 10, months: 1, seed: 1 } });
  const probe = `{ invoice(id: "1") { id } }`;

  it('refuses alg none, a wrong key, a tampered claim, expiry, nbf, issuer and audience', async () => {
    const wrongKey = new TextEncoder().encode('another-secret-that-is-32-bytes-long!!');
    const valid = await token({ sub: 'u', role: 'customer', customer_id: 1 });
    const [header, payload, signature] = valid.split('.') as [string, string, string];
    const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Claims;
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const cases: [string, string | undefined, string][] = [
      ['no token', undefined, 'authentication required: send Authorization: Bearer <token>'],
      ['not a JWT', 'not-a-token', 'invalid token'],
      ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, role: 'admin' })}.`, 'invalid token'],
      ['wrong key', await token({ sub: 'u', role: 'admin' }, { key: wrongKey }), 'invalid token'],
      ['tampered claim', `${header}.${b64({ ...claims, role: 'admin' })}.${signature}`, 'invalid token'],
      ['RS256 against an HS256 gateway', await token({ sub: 'u', role: 'admin' }, { alg: 'RS256', key: privateKey as unknown as CryptoKey }), 'invalid token'],
      ['expired', await token({ sub: 'u', role: 'admin' }, { expiresIn: Math.floor(Date.now() / 1000) - 120 }), 'expired token'],
      ['not yet valid', await token({ sub: 'u', role: 'admin' }, { notBefore: Math.floor(Date.now() / 1000) + 600 }), 'invalid token'],
      ['wrong issuer', await token({ sub: 'u', role: 'admin' }, { issuer: 'https://evil.test/' }), 'invalid token'],
      ['wrong audience', await token({ sub: 'u', role: 'admin' }, { audience: 'another-api' }), 'invalid token'],
      ['no subject', await token({ role: 'admin' }), 'invalid token'],
      ['no expiry', await token({ sub: 'u', role: 'admin' }, { expiresIn: null }), 'invalid token'],
      ['customer without customer id', await token({ sub: 'u', role: 'customer' }), 'invalid token'],
    ];
    for (const [name, bearer, message] of cases) {
      const answer = await ask(f.gw.url, bearer, probe);
      assert.equal(answer.status, 401, name);
      assert.equal(answer.headers.get('www-authenticate'), bearer === undefined ? 'Bearer' : 'Bearer error="invalid_token"', name);
      assert.deepEqual(answer.body, { errors: [{ message, extensions: { code: 'UNAUTHENTICATED' } }] }, name);
    }
    // Within the clock skew, a token just past exp still passes; the valid one does.
    const skewed = await token({ sub: 'u', role: 'admin' }, { expiresIn: Math.floor(Date.now() / 1000) - 5 });
    assert.equal((await ask(f.gw.url, skewed, probe)).status, 200);
    assert.equal((await ask(f.gw.url, valid, probe)).status, 200);
  });

  it('with a JWKS: verifies RS256, refuses the HS/RS confusion, and fetches the set again for a new kid', async () => {
    const first = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const second = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let keys: JWK[] = [await publicJwk(first.publicKey, 'k1', 'RS256')];
    let failing = false;
    const idp = await startKeySet(() => (failing ? 'down' : keys));
    let gw: TestGateway | undefined;
    try {
      gw = await startTestGateway({ databaseUrl: f.db.url, env: { AUTH_MODE: 'required', AUTH_JWKS_URL: idp.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, RATE_LIMIT_REQUESTS: '0' } });
      const rs = await token({ sub: 'u', role: 'analyst' }, { alg: 'RS256', kid: 'k1', key: first.privateKey as unknown as CryptoKey });
      assert.equal((await ask(gw.url, rs, probe)).status, 200);
      // The public key as an HMAC secret: the classic confusion attack.
      const pem = first.publicKey.export({ type: 'spki', format: 'pem' }) as string;
      const confused = await token({ sub: 'u', role: 'admin' }, { alg: 'HS256', kid: 'k1', key: new TextEncoder().encode(pem) });
      assert.equal((await ask(gw.url, confused, probe)).status, 401);
      // Key rotation: a token with a kid the gateway has not seen makes it fetch the set again
      // (at most once per cooldown, so an attacker cannot make it hammer the identity provider).
      keys = [...keys, await publicJwk(second.publicKey, 'k2', 'ES256')];
      const es = await token({ sub: 'u', role: 'analyst' }, { alg: 'ES256', kid: 'k2', key: second.privateKey as unknown as CryptoKey });
      const before = idp.fetches();
      await eventually(async () => (await ask(gw!.url, es, probe)).status === 200, 'the new key to be fetched', 15_000);
      assert.ok(idp.fetches() > before);
      // The identity provider down: a token it signed with a key not yet fetched is 503, not 401.
      failing = true;
      const third = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const unknownKid = await token({ sub: 'u', role: 'analyst' }, { alg: 'ES256', kid: 'k3', key: third.privateKey as unknown as CryptoKey });
      const outage = await eventually(async () => {
        const answer = await ask(gw!.url, unknownKid, probe);
        return answer.status === 503 ? answer : undefined;
      }, 'the key set fetch to fail', 15_000);
      assert.deepEqual(codes(outage), ['SERVICE_UNAVAILABLE']);
      // Tokens of keys already known still pass.
      assert.equal((await ask(gw.url, rs, probe)).status, 200);
    } finally {
      await gw?.stop();
      await idp.close();
    }
  });

  /**
   * A token verified once used to be trusted until its exp: a key the identity provider removed
   * (a leaked one) went on passing for every token it had signed and the gateway had seen.
   */
  it('with a JWKS: a key removed from the set stops passing once the set and the token are checked again', async () => {
    const first = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const second = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let keys: JWK[] = [await publicJwk(first.publicKey, 'k1', 'RS256')];
    const idp = await startKeySet(() => keys);
    let gw: TestGateway | undefined;
    try {
      gw = await startTestGateway({
        databaseUrl: f.db.url,
        env: { AUTH_MODE: 'required', AUTH_JWKS_URL: idp.url, AUTH_ISSUER: ISSUER, AUTH_AUDIENCE: AUDIENCE, AUTH_KEYS_MAX_AGE_SECONDS: '1', RATE_LIMIT_REQUESTS: '0' },
      });
      const leaked = await token({ sub: 'u', role: 'admin' }, { alg: 'RS256', kid: 'k1', key: first.privateKey as unknown as CryptoKey });
      assert.equal((await ask(gw.url, leaked, probe)).status, 200);
      // A subscription's connection on that token is closed too, not kept until its exp.
      const client = connect(gw.url, { lazy: false, connectionParams: { authorization: `Bearer ${leaked}` } });
      const closed = new Promise<{ code: number; reason: string }>((resolve) => client.on('closed', (event) => resolve(event as { code: number; reason: string })));
      await new Promise<void>((resolve) => client.on('connected', () => resolve()));
      keys = [await publicJwk(second.publicKey, 'k2', 'ES256')];
      const refused = await eventually(async () => {
        const answer = await ask(gw!.url, leaked, probe);
        return answer.status === 401 ? answer : undefined;
      }, 'the removed key to stop passing', 15_000);
      assert.deepEqual(codes(refused), ['UNAUTHENTICATED']);
      const result = await Promise.race([closed, new Promise<{ code: number; reason: string }>((resolve) => setTimeout(() => resolve({ code: -1, reason: 'still open' }), 10_000))]);
      assert.deepEqual([result.code, result.reason], [4401, 'invalid token']);
      await client.dispose();
      const current = await token({ sub: 'u', role: 'analyst' }, { alg: 'ES256', kid: 'k2', key: second.privateKey as unknown as CryptoKey });
      assert.equal((await ask(gw.url, current, probe)).status, 200);
    } finally {
      await gw?.stop();
      await idp.close();
    }
  });
});

describe('rate limits per client, shared through Redis', { skip }, () => {
  const f = useTestGateway('limits', { env: () => ({ AUTH_MODE: 'off' }), seed: { customers: 3, invoices: 10, months: 1, seed: 2 } });
  const prefix = `ig_limits_${process.pid}_${Date.now()}:`;
  after(() => deleteRedisKeys(`${prefix}*`));

  it('runs only trusted documents when they are configured, sent in full or by hash', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'ig-trusted-'));
    const trusted = `query Trusted($id: ID!) { invoice(id: $id) { id } }`;
    const hash = createHash('sha256').update(trusted).digest('hex');
    const file = path.join(dir, 'manifest.json');
    await writeFile(file, JSON.stringify({ format: 'apollo-persisted-query-manifest', version: 1, operations: [{ id: hash, body: trusted, name: 'Trusted', type: 'query' }] }));
    const gw = await startTestGateway({ databaseUrl: f.db.url, env: { AUTH_MODE: 'off', TRUSTED_DOCUMENTS_FILE: file } });
    try {
      assert.deepEqual((await ask(gw.url, undefined, trusted, { id: '1' })).body, { data: { invoice: { id: '1' } } });
      const byHash = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ variables: { id: '2' }, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } }),
      });
      assert.deepEqual(await byHash.json(), { data: { invoice: { id: '2' } } });
      const other = await ask(gw.url, undefined, `{ invoice(id: "1") { id amountUsd } }`);
      assert.equal(other.status, 403);
      assert.deepEqual(codes(other), ['FORBIDDEN']);
      const unknownHash = await fetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: 'f'.repeat(64) } } }) });
      assert.equal(unknownHash.status, 403);
      // GET, as Apollo Client sends hashed queries: by hash, and an untrusted text refused.
      const get = (params: Record<string, string>) => fetch(`${gw.url}?${new URLSearchParams(params)}`, { headers: { 'apollo-require-preflight': 'true' } });
      const getByHash = await get({ variables: JSON.stringify({ id: '3' }), extensions: JSON.stringify({ persistedQuery: { version: 1, sha256Hash: hash } }) });
      assert.deepEqual(await getByHash.json(), { data: { invoice: { id: '3' } } });
      assert.equal((await get({ query: '{ invoice(id: "1") { amountUsd } }' })).status, 403);
      // And over the WebSocket: an untrusted subscription is refused before it runs.
      const ws = connect(gw.url);
      const refused = await new Promise<unknown>((resolve) => {
        ws.subscribe({ query: 'subscription { riskScored { invoiceId } }' }, { next: (v) => resolve(v.errors), error: (e) => resolve(e), complete: () => resolve('completed') });
      });
      assert.deepEqual((refused as { extensions: { code: string } }[]).map((e) => e.extensions.code), ['FORBIDDEN']);
      await ws.dispose();
    } finally {
      await gw.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('holds one budget across two gateway processes: past it, 429 with Retry-After; other clients unaffected', async () => {
    const dirs = [await mkdtemp(path.join(tmpdir(), 'ig-limits-')), await mkdtemp(path.join(tmpdir(), 'ig-limits-'))];
    const ports = await freePorts(2);
    const processes = dirs.map((dir, i) =>
      spawnGateway({
        ...AUTH, DATABASE_URL: f.db.url, HOST: '127.0.0.1', PORT: String(ports[i]), DATA_DIR: dir, CHANGE_FEED: '0', LAKE_EXPORT_INTERVAL_MS: '0',
        REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: prefix, RATE_LIMIT_REQUESTS: '10', RATE_LIMIT_WINDOW_SECONDS: '60', RATE_LIMIT_COST: '0',
      }),
    );
    try {
      await Promise.all(processes.map((p) => p.waitFor(/gateway listening/)));
      const urls = ports.map((port) => `http://127.0.0.1:${port}/graphql`);
      const heavy = await token({ sub: 'heavy-client', role: 'analyst' });
      const light = await token({ sub: 'light-client', role: 'analyst' });
      const statuses: number[] = [];
      for (let i = 0; i < 14; i++) statuses.push((await ask(urls[i % 2]!, heavy, `{ __typename }`)).status);
      assert.deepEqual(statuses, [...Array(10).fill(200), ...Array(4).fill(429)]);
      const refused = await ask(urls[0]!, heavy, `{ __typename }`);
      assert.equal(refused.status, 429);
      const retryAfter = Number(refused.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
      assert.equal(refused.body.errors?.[0]?.extensions?.code, 'LIMIT_EXCEEDED');
      assert.equal((await ask(urls[1]!, light, `{ __typename }`)).status, 200);
    } finally {
      for (const p of processes) p.child.kill('SIGTERM');
      await Promise.all(processes.map((p) => p.exited));
      await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
    }
  });

  it('charges a replayed few-customer answer before proving it: past the budget, refused without the proof', async () => {
    const env = { ...AUTH, CHANGE_FEED: '1', REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: `${prefix}replay:`, RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '1500' };
    const gw = await startTestGateway({ databaseUrl: f.db.url, env });
    try {
      const { metrics } = gw.gateway;
      await eventually(() => gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
      const outcome = (name: string) => metrics.total(metrics.analyticsFewAnswers, { outcome: name });
      const client = await token({ sub: 'replaying', role: 'analyst' });
      const stats = () =>
        ask(gw.url, client, `{ invoiceStats(groupBy: ISSUER, months: 1, customerIds: ["1"], first: 10) { rows { customerId invoiceCount totalUsd } freshness { asOf } } }`);
      // Asked until a replay answers (kept, then served, then replayed), then until the budget is spent.
      let replayed = false;
      for (let i = 0; i < 40 && !replayed; i++) {
        const before = await outcome('replayed');
        assert.equal((await stats()).status, 200);
        replayed = (await outcome('replayed')) > before;
      }
      assert.ok(replayed, 'a replay within the budget');
      let status = 200;
      for (let i = 0; i < 100 && status === 200; i++) status = (await stats()).status;
      assert.equal(status, 429, 'the budget spent');
      // Refused before its proof: no kept answer proven (served), none replayed.
      const [served, again] = [await outcome('served'), await outcome('replayed')];
      const refused = await stats();
      assert.equal(refused.status, 429);
      assert.equal(refused.body.errors?.[0]?.extensions?.code, 'LIMIT_EXCEEDED');
      assert.equal(await outcome('served'), served, 'not proven');
      assert.equal(await outcome('replayed'), again, 'not replayed');
    } finally {
      await gw.stop();
    }
  });

  it('keeps a budget per process while Redis is down', { skip: !hasRedisServer() && 'redis-server is not installed' }, async () => {
    const redis = await startRedisServer();
    const gw = await startTestGateway({ databaseUrl: f.db.url, env: { ...AUTH, REDIS_URL: redis.url, CACHE_KEY_PREFIX: `${prefix}down:`, RATE_LIMIT_REQUESTS: '5', RATE_LIMIT_COST: '0' } });
    try {
      const client = await token({ sub: 'during-outage', role: 'analyst' });
      await redis.kill();
      const statuses: number[] = [];
      for (let i = 0; i < 7; i++) statuses.push((await ask(gw.url, client, `{ __typename }`)).status);
      assert.deepEqual(statuses, [...Array(5).fill(200), 429, 429]);
    } finally {
      await gw.stop();
      await redis.kill();
    }
  });

  it("spends each operation's estimated cost from its budget", async () => {
    const env = { ...AUTH, REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: `${prefix}cost:`, RATE_LIMIT_REQUESTS: '0', RATE_LIMIT_COST: '25' };
    const gw = await startTestGateway({ databaseUrl: f.db.url, env });
    try {
      const client = await token({ sub: 'costly', role: 'analyst' });
      const ids = Array.from({ length: 10 }, (_, i) => String(i + 1));
      const first = await ask(gw.url, client, `query($ids: [ID!]!) { invoices(ids: $ids) { id } }`, { ids });
      assert.equal(first.status, 200);
      const again = await ask(gw.url, client, `query($ids: [ID!]!) { invoices(ids: $ids) { id } }`, { ids });
      const third = again.status === 200 ? await ask(gw.url, client, `query($ids: [ID!]!) { invoices(ids: $ids) { id } }`, { ids }) : again;
      assert.equal(third.status, 429);
      assert.equal(third.body.errors?.[0]?.extensions?.code, 'LIMIT_EXCEEDED');
      assert.ok(Number(third.headers.get('retry-after')) >= 1);
      // A cheap operation of another client still runs.
      assert.equal((await ask(gw.url, await token({ sub: 'cheap', role: 'analyst' }), `{ __typename }`)).status, 200);
    } finally {
      await gw.stop();
    }
  });
});
