import assert from 'node:assert/strict';
import { decodeSeqCursor, encodeSeqCursor } from '../resolvers/cursor.js';
import { after, before, describe, it } from 'node:test';
import { parse } from 'graphql';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import WebSocket from 'ws';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';
import { useTestGateway } from './fixtures/perFile.js';
import { eventually } from './fixtures/eventually.js';
import { connect, subscribe, wsUrl } from './fixtures/subscriber.js';
import { InvoiceRiskDocument, RiskScoredDocument, RiskScoredIdsDocument, RiskScoresDocument } from './generated/graphql.js';
import { memoryLogger } from './fixtures/gateway.js';
import { Metrics } from '../core/metrics.js';
import { RISK_TOPIC, riskScoreStream } from '../resolvers/riskSubscription.js';
import { createRiskStore } from '../sources/postgres/riskStore.js';
import { createEventBus } from '../sources/pubsub/eventBus.js';

const skip = await missingServices('postgres', 'redis');

const SUBSCRIPTION_QUEUE = 100;

describe('risk scoring on every insert, and the riskScored subscription', { skip }, () => {
  const f = useTestGateway('risk', {
    env: (db) => ({
      CHANGE_FEED: '1',
      REDIS_URL: TEST_REDIS_URL,
      CACHE_KEY_PREFIX: `${db.name}:`,
      MAX_SUBSCRIPTIONS_PER_CONNECTION: '3',
      SUBSCRIPTION_QUEUE: String(SUBSCRIPTION_QUEUE),
    }),
    seed: { customers: 30, invoices: 3_000, months: 12, seed: 11 },
  });
  after(() => deleteRedisKeys(`${f.db.name}:*`));

  before(async () => {
    await eventually(() => f.gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    await eventually(async () => (await f.sql.query('SELECT count(*)::int AS n FROM risk_backfill_issuers')).rows[0].n === 0, 'the backfill to finish');
  });

  /** The cursor of the newest live score: subscribing after it receives exactly what comes next. */
  const cursorNow = async (): Promise<string> => {
    // Every invoice scored first, so nothing inserted earlier arrives after the cursor.
    await eventually(
      async () => (await f.sql.query(`SELECT NOT EXISTS (SELECT 1 FROM invoices i WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = i.invoice_id)) AS done`)).rows[0].done,
      'every invoice to be scored',
    ).catch(async (err: Error) => {
      const unscored = await f.sql.query(`SELECT invoice_id FROM invoices i WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = i.invoice_id)`);
      throw new Error(`${err.message}; unscored: ${unscored.rows.map((r) => r.invoice_id).join(', ')}`);
    });
    const { rows } = await f.sql.query(`SELECT coalesce(max(live_seq), 0)::text AS n FROM invoice_risk_scores`);
    return encodeSeqCursor('live', String(rows[0].n));
  };

  const insert = async (issuer: number, receiver: number, amount: string): Promise<string> =>
    (await f.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES ($1, $2, $3) RETURNING invoice_id::text AS id`, [issuer, receiver, amount])).rows[0].id;

  it('the backfill scored every invoice that existed before the feed, once, and pushed none', async () => {
    const { rows } = await f.sql.query(`SELECT (SELECT count(*) FROM invoices WHERE invoice_id <= 3000)::int AS invoices,
      count(*)::int AS scores, count(live_seq)::int AS live, count(DISTINCT model_version)::int AS versions
      FROM invoice_risk_scores WHERE invoice_id <= 3000`);
    assert.deepEqual(rows[0], { invoices: 3000, scores: 3000, live: 0, versions: 1 });
    const metrics = await (await fetch(new URL('/metrics', f.gw.url))).text();
    assert.match(metrics, /gateway_risk_backfill_remaining 0/);
    assert.match(metrics, /gateway_risk_scored_total\{band="LOW",source="backfill"\} \d+/);
  });

  it('an insert from plain SQL reaches a subscriber, scored and explained, and Invoice.risk agrees', async () => {
    const client = connect(f.gw.url);
    const sub = subscribe(client, RiskScoredDocument);
    try {
      // Without a cursor a subscription starts "from now": probe until it is listening.
      await eventually(async () => {
        await insert(5, 6, '1.00');
        return sub.events.length > 0;
      }, 'the subscription to start listening');
      const id = await insert(4, 4, '9990.00');
      const score = (await eventually(() => sub.events.find((e) => e.riskScored.invoiceId === id), 'the event')).riskScored;
      assert.deepEqual(score.invoice, { id, amountUsd: '9990.00', issuerId: '4', receiverId: '4' });
      assert.equal(score.modelVersion, 'risk-v2');
      assert.equal(score.band, 'HIGH', 'a self-invoice just below 10,000 is high risk');
      assert.ok(score.score >= 0.7 && score.score <= 1);
      const reasons = Object.fromEntries(score.reasons.map((r) => [r.feature, r]));
      assert.equal(reasons.selfInvoice!.value, 1);
      assert.equal(reasons.justBelowThreshold!.value, 1);
      assert.deepEqual(score.reasons.map((r) => r.contribution), [...score.reasons.map((r) => r.contribution)].sort((a, b) => b - a));
      assert.match(score.scoredAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
      assert.ok(score.cursor);

      const lookup = await f.gw.request(InvoiceRiskDocument, { id });
      assert.deepEqual(lookup.data?.invoice?.risk, {
        invoiceId: id,
        score: score.score,
        band: score.band,
        cursor: score.cursor,
        modelVersion: score.modelVersion,
        reasons: score.reasons,
      });
      const stored = await f.sql.query(`SELECT count(*)::int AS n FROM invoice_risk_scores WHERE invoice_id = $1`, [id]);
      assert.equal(stored.rows[0].n, 1);
    } finally {
      await sub.dispose();
      await client.dispose();
    }
  });

  it('filters by minScore, band, issuer and receiver', async () => {
    const client = connect(f.gw.url, { lazy: false });
    const after = await cursorNow();
    const all = subscribe(client, RiskScoredDocument, { after });
    const high = subscribe(client, RiskScoredDocument, { band: 'HIGH', after });
    const byIssuer = subscribe(client, RiskScoredDocument, { issuerId: '7', minScore: 0.01, after });
    try {
      const ids = [await insert(7, 8, '120.00'), await insert(9, 9, '4990.00'), await insert(7, 7, '49990.00'), await insert(10, 7, '55.10')];
      await all.waitFor(4);
      const scores = new Map(all.events.map((e) => [e.riskScored.invoiceId, e.riskScored]));
      assert.deepEqual([...scores.keys()], ids);
      const expect = (keep: (s: (typeof all.events)[number]['riskScored']) => boolean) => ids.filter((id) => keep(scores.get(id)!));
      await high.waitFor(expect((s) => s.band === 'HIGH').length);
      await byIssuer.waitFor(2);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(high.events.map((e) => e.riskScored.invoiceId), expect((s) => s.band === 'HIGH'));
      assert.deepEqual(byIssuer.events.map((e) => e.riskScored.invoiceId), [ids[0], ids[2]]);
    } finally {
      await client.dispose();
    }
  });

  it('after: replays exactly the missed events, then live ones, with no gap or duplicate at the seam', async () => {
    const client = connect(f.gw.url);
    const first = subscribe(client, RiskScoredIdsDocument, { after: await cursorNow() });
    const seen = [await insert(11, 12, '10.00'), await insert(12, 11, '20.00')];
    await first.waitFor(2);
    assert.deepEqual(first.events.map((e) => e.riskScored.invoiceId), seen);
    const cursor = first.events[1]!.riskScored.cursor!;
    await first.dispose();
    // Missed while away, and a burst still being written while it resubscribes.
    const missed = [await insert(13, 14, '30.00'), await insert(14, 13, '40.00')];
    const writing = (async () => {
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) ids.push(await insert(15 + (i % 5), 20, `${50 + i}.00`));
      return ids;
    })();
    const resumed = subscribe(connect(f.gw.url), RiskScoredIdsDocument, { after: cursor });
    const burst = await writing;
    await resumed.waitFor(missed.length + burst.length);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(resumed.events.map((e) => e.riskScored.invoiceId), [...missed, ...burst]);
    await resumed.dispose();
    await client.dispose();
  });

  it('after: an old cursor is replayed a page at a time, as the subscriber reads', async () => {
    const cursor = await cursorNow();
    const { rows } = await f.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) SELECT 21, 22, 1 + g FROM generate_series(1, 1200) g RETURNING invoice_id::text AS id`);
    await cursorNow();
    // The stream itself, on the real table: 1,200 scores are 3 pages of 500.
    const store = createRiskStore(f.gw.gateway.db);
    let pages = 0;
    const counted = { ...store, replay: (...args: Parameters<typeof store.replay>) => (pages++, store.replay(...args)) };
    const stream = riskScoreStream({ bus: createEventBus({ prefix: 'pages:' }, memoryLogger().logger), store: counted, metrics: new Metrics(), filter: {}, after: decodeSeqCursor('live', cursor), maxQueued: 10 });
    try {
      assert.equal((await stream.next()).value?.invoiceId, rows[0].id);
      assert.equal(pages, 1, 'the first event needed the first page only');
      const rest: string[] = [];
      for (let i = 1; i < rows.length; i++) rest.push((await stream.next()).value!.invoiceId);
      assert.deepEqual(rest, rows.slice(1).map((r) => r.id));
      assert.equal(pages, 3);
    } finally {
      await stream.return!();
    }
    // And over the socket, every one of them in order.
    const client = connect(f.gw.url);
    try {
      const resumed = subscribe(client, RiskScoredIdsDocument, { after: cursor });
      await resumed.waitFor(rows.length);
      assert.deepEqual(resumed.events.map((e) => e.riskScored.invoiceId), rows.map((r) => r.id));
      await resumed.dispose();
    } finally {
      await client.dispose();
    }
  });

  it('heals a gap in the live stream from the table, in order, before the event that showed it', async () => {
    // A bus of the test's own, in process: the gateway's scores never reach it, as if lost.
    const bus = createEventBus({ prefix: 'gap:' }, memoryLogger().logger);
    const store = createRiskStore(f.gw.gateway.db);
    // Started once it has read where the live stream stands: what commits after is its to send.
    let started!: () => void;
    const startedRead = new Promise<void>((resolve) => (started = resolve));
    const observed = { ...store, maxLiveSeq: () => store.maxLiveSeq().finally(started) };
    await cursorNow();
    const stream = riskScoreStream({ bus, store: observed, metrics: new Metrics(), filter: {}, after: null, maxQueued: 10 });
    const first = stream.next();
    await startedRead;
    const ids = [await insert(23, 24, '1.00'), await insert(24, 23, '2.00'), await insert(23, 24, '3.00')];
    await cursorNow();
    const { rows } = await f.sql.query(`SELECT max(live_seq)::text AS seq FROM invoice_risk_scores WHERE invoice_id = ANY($1::bigint[])`, [ids]);
    // Only the third arrives live: the first two are a gap, read from the table.
    const [third] = await store.replay((BigInt(rows[0].seq) - 1n).toString(), null, {}, 1);
    bus.publish(RISK_TOPIC, third);
    const received = [(await first).value, (await stream.next()).value, (await stream.next()).value].map((r) => r?.invoiceId);
    assert.deepEqual(received, ids);
    await stream.return!();
  });

  it('riskScores pages every score newest first, with filters', async () => {
    const page1 = await f.gw.request(RiskScoresDocument, { first: 5 });
    assert.equal(page1.errors, undefined);
    const page2 = await f.gw.request(RiskScoresDocument, { first: 5, after: page1.data!.riskScores.pageInfo.endCursor });
    const { rows } = await f.sql.query(`SELECT invoice_id::text AS id FROM invoice_risk_scores ORDER BY seq DESC LIMIT 10`);
    assert.deepEqual([...page1.data!.riskScores.edges, ...page2.data!.riskScores.edges].map((e) => e.node.invoiceId), rows.map((r) => r.id));
    const high = await f.gw.request(RiskScoresDocument, { first: 500, band: 'HIGH', minScore: 0.75 });
    const expected = await f.sql.query(`SELECT count(*)::int AS n FROM invoice_risk_scores WHERE band = 'HIGH' AND score >= 0.75`);
    assert.equal(high.data!.riskScores.edges.length, Math.min(500, expected.rows[0].n));
    assert.ok(high.data!.riskScores.edges.every((e) => e.node.band === 'HIGH' && e.node.score >= 0.75));
    const bad = await f.gw.request(RiskScoresDocument, { first: 5, after: page1.data!.riskScores.edges[0]!.node.cursor ?? 'bGl2ZTox' });
    assert.equal(bad.errors?.[0]?.extensions?.code, 'BAD_USER_INPUT', 'a riskScored cursor is not a page cursor');
  });

  it('bad arguments are BAD_USER_INPUT on that subscription, and the socket stays usable', async () => {
    const client = connect(f.gw.url, { lazy: false });
    try {
      const cases: [string, Record<string, unknown>][] = [
        ['minScore above 1', { minScore: 2 }],
        ['minScore below 0', { minScore: -0.1 }],
        ['malformed cursor', { after: 'not-a-cursor' }],
        ['a page cursor', { after: Buffer.from('page:1').toString('base64url') }],
        ['malformed issuer id', { issuerId: 'x' }],
        ['unknown band (variable)', { band: 'PURPLE' }],
      ];
      for (const [label, variables] of cases) {
        const sub = subscribe(client, RiskScoredDocument, variables as never);
        await sub.ended;
        assert.equal(sub.errors[0]?.extensions?.code, 'BAD_USER_INPUT', `${label}: ${JSON.stringify(sub.errors)}`);
      }
      const literal = subscribe(client, parse('subscription { riskScored(band: PURPLE) { invoiceId } }') as TypedDocumentNode<unknown, never>);
      await literal.ended;
      assert.equal(literal.errors[0]?.extensions?.code, 'BAD_USER_INPUT', JSON.stringify(literal.errors));

      const good = subscribe(client, RiskScoredIdsDocument, { after: await cursorNow() });
      const id = await insert(21, 22, '12.34');
      await good.waitFor(1);
      assert.equal(good.events[0]!.riskScored.invoiceId, id, 'the same socket still serves');
    } finally {
      await client.dispose();
    }
  });

  it('limits subscriptions per connection', async () => {
    const client = connect(f.gw.url, { lazy: false });
    try {
      const held = [subscribe(client, RiskScoredIdsDocument), subscribe(client, RiskScoredIdsDocument), subscribe(client, RiskScoredIdsDocument)];
      const refused = subscribe(client, RiskScoredIdsDocument);
      await refused.ended;
      assert.equal(refused.errors[0]?.extensions?.code, 'LIMIT_EXCEEDED');
      assert.match(refused.errors[0]!.message, /at most 3 subscriptions/);
      await held[0]!.dispose();
      await new Promise((r) => setTimeout(r, 100));
      const accepted = subscribe(client, RiskScoredIdsDocument, { after: await cursorNow() });
      const id = await insert(23, 24, '1.00');
      await accepted.waitFor(1);
      assert.equal(accepted.events[0]!.riskScored.invoiceId, id);
    } finally {
      await client.dispose();
    }
  });

  it('a subscriber that stops reading is cut off with LIMIT_EXCEEDED; the others keep receiving', async () => {
    // Thirty copies of the reasons make each event about 10 KB, so the socket's kernel buffers
    // fill after a few hundred events and the subscription's own queue starts to grow.
    const heavy = `subscription ($after: String) { riskScored(after: $after) { invoiceId ${Array.from({ length: 30 }, (_, i) => `r${i}: reasons { feature value contribution }`).join(' ')} } }`;
    const stalled = new WebSocket(wsUrl(f.gw.url), 'graphql-transport-ws');
    const frames: { type: string; payload?: unknown }[] = [];
    stalled.on('message', (data) => frames.push(JSON.parse(String(data))));
    await new Promise((resolve) => stalled.once('open', resolve));
    stalled.send(JSON.stringify({ type: 'connection_init' }));
    await eventually(() => frames.some((m) => m.type === 'connection_ack'), 'connection_ack');
    const after = await cursorNow();
    stalled.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: heavy, variables: { after } } }));
    (stalled as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const healthy = subscribe(connect(f.gw.url), RiskScoredIdsDocument, { after });
    const total = 1_200;
    for (let done = 0; done < total; done += 50) {
      await f.sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) SELECT 25, 26, 10 + g FROM generate_series(1, 50) g`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await healthy.waitFor(total, 60_000);
    assert.equal(healthy.errors.length, 0);
    const metrics = await (await fetch(new URL('/metrics', f.gw.url))).text();
    assert.match(metrics, /gateway_subscription_events_total\{outcome="too_slow"\} 1/);

    (stalled as unknown as { _socket: { resume(): void } })._socket.resume();
    const error = await eventually(() => frames.find((m) => m.type === 'error'), 'the error frame once the client reads again');
    assert.deepEqual((error.payload as { extensions: unknown }[])[0]!.extensions, { code: 'LIMIT_EXCEEDED' });
    const received = frames.filter((m) => m.type === 'next').length;
    assert.ok(received < total, `the stalled subscriber received ${received} of ${total} before it was cut off`);
    stalled.terminate();
    await healthy.dispose();
  });
});
