import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { hasRedisServer, startRedisServer, type RedisServer } from './fixtures/redisServer.js';
import { InvoiceByIdDocument, InvoicesWithPartiesDocument } from './generated/graphql.js';
import { startTcpProxy, type TcpProxy } from './fixtures/network.js';
import { eventually } from './fixtures/eventually.js';
import { Redis } from 'ioredis';
import pg from 'pg';

const skip = (await missingServices('postgres')) || (!hasRedisServer() && 'redis-server is not on PATH (apt-get install redis-server)');
if (skip && process.env.REQUIRE_SERVICES === '1') throw new Error(String(skip));

describe('Redis outage: requests are answered from Postgres', { skip }, () => {
  let db: TestDatabase;
  let redis: RedisServer;
  let gw: TestGateway;

  before(async () => {
    db = await createTestDatabase('cache_outage');
    redis = await startRedisServer();
    gw = await startTestGateway({
      databaseUrl: db.url,
      env: { REDIS_URL: redis.url, CACHE_TIMEOUT_MS: '200' },
      seed: { customers: 20, invoices: 500, months: 3, seed: 11 },
    });
  });

  after(async () => {
    await gw?.stop();
    await redis?.kill();
    await db?.drop();
  });

  const ids = (from: number) => Array.from({ length: 20 }, (_, i) => String(from + i));
  const outageWarnings = () => gw.logs.filter((l) => /Redis cache unavailable/.test(String(l.msg))).length;

  it('caches while Redis is up', async () => {
    // Twice: the admission policy caches a row on its second read.
    for (let i = 0; i < 2; i++) await gw.request(InvoicesWithPartiesDocument, { ids: ids(1) });
    assert.equal(await gw.countSql(() => gw.request(InvoicesWithPartiesDocument, { ids: ids(1) })), 0);
  });

  it('answers every request from Postgres while Redis is down, logging the outage once and counting failures', async () => {
    await redis.kill();
    const errorsBefore = await gw.gateway.metrics.total(gw.gateway.metrics.cacheErrors);
    for (let round = 0; round < 5; round++) {
      for (const from of [1, 100, 200]) {
        const res = await gw.request(InvoicesWithPartiesDocument, { ids: ids(from) });
        assert.equal(res.errors, undefined, JSON.stringify(res.errors));
        assert.deepEqual(res.data!.invoices.map((i) => i?.id), ids(from));
        assert.ok(res.data!.invoices.every((i) => i?.issuer.name && i.receiver.name));
      }
    }
    assert.ok((await gw.gateway.metrics.total(gw.gateway.metrics.cacheErrors)) > errorsBefore, 'failures are counted');
    assert.equal(outageWarnings(), 1, 'the outage is logged once');
  });

  async function cacheServesAgain(from: number): Promise<boolean> {
    for (let i = 0; i < 50; i++) {
      await gw.request(InvoicesWithPartiesDocument, { ids: ids(from) });
      if ((await gw.countSql(() => gw.request(InvoicesWithPartiesDocument, { ids: ids(from) }))) === 0) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  }

  it('uses the cache again once Redis is back, without a restart', async () => {
    await redis.restart();
    assert.ok(await cacheServesAgain(300), 'the cache was not used again after Redis came back');
  });

  it('logs the next outage too', async () => {
    await redis.kill();
    const res = await gw.request(InvoicesWithPartiesDocument, { ids: ids(400) });
    assert.equal(res.errors, undefined);
    assert.equal(outageWarnings(), 2);
    await redis.restart();
    assert.ok(await cacheServesAgain(420));
  });
});

/**
 * Redis unreachable (the connection cut, its data intact) while a row changes: the invalidation
 * cannot land then, so it is kept and applied when Redis is back; the old entry is never served.
 */
describe('Redis partitioned away while the feed invalidates', { skip }, () => {
  let db: TestDatabase;
  let redis: RedisServer;
  let proxy: TcpProxy;
  let gw: TestGateway;
  let sql: pg.Pool;

  before(async () => {
    db = await createTestDatabase('cache_partition');
    redis = await startRedisServer();
    proxy = await startTcpProxy(Number(new URL(redis.url).port));
    gw = await startTestGateway({
      databaseUrl: db.url,
      env: { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, CACHE_TIMEOUT_MS: '200', CHANGE_FEED: '1' },
      seed: { customers: 5, invoices: 50, months: 1, seed: 2 },
    });
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
    await eventually(() => gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
  });

  after(async () => {
    await sql?.end();
    await gw?.stop();
    await proxy?.cut();
    await redis?.kill();
    await db?.drop();
  });

  it('keeps the invalidation and applies it when Redis returns: the old row is never served', async () => {
    for (let i = 0; i < 2; i++) await gw.request(InvoiceByIdDocument, { id: '5' });
    const misses = await gw.gateway.metrics.total(gw.gateway.metrics.cacheMisses);
    await gw.request(InvoiceByIdDocument, { id: '5' });
    assert.equal(await gw.gateway.metrics.total(gw.gateway.metrics.cacheMisses), misses, 'cached');
    await proxy.cut();
    const before = await gw.gateway.metrics.total(gw.gateway.metrics.cacheInvalidations);
    await sql.query(`UPDATE invoices SET amount_usd = 777.77 WHERE invoice_id = 5`);
    await eventually(async () => (await gw.gateway.metrics.total(gw.gateway.metrics.cacheInvalidations)) > before, 'the feed to handle the update');
    assert.equal((await gw.request(InvoiceByIdDocument, { id: '5' })).data!.invoice!.amountUsd, '777.77', 'from Postgres while Redis is away');
    await proxy.restore();
    // Each lookup right after the return must be fresh, whether the kept tombstone has landed yet or not.
    for (let i = 0; i < 20; i++) {
      assert.equal((await gw.request(InvoiceByIdDocument, { id: '5' })).data!.invoice!.amountUsd, '777.77');
      await new Promise((r) => setTimeout(r, 50));
    }
    await eventually(() => gw.logs.some((l) => /invalidations kept during the Redis outage applied/.test(String(l.msg))), 'the kept invalidation to land');
    const direct = new Redis(redis.url);
    try {
      const keys = await direct.keys('*inv:v1:5');
      assert.equal(keys.length, 1);
      assert.doesNotMatch((await direct.get(keys[0]!)) ?? '', /"amountUsd":"(?!777\.77)/);
    } finally {
      direct.disconnect();
    }
  });
});
