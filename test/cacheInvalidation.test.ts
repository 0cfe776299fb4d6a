import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';
import { memoryLogger } from './fixtures/gateway.js';
import { useTestGateway } from './fixtures/perFile.js';
import { eventually } from './fixtures/eventually.js';
import { CustomerByIdDocument, InvoiceByIdDocument } from './generated/graphql.js';
import { createMemoryCache } from '../sources/cache/memoryCache.js';
import { createRedisCache } from '../sources/cache/redisCache.js';
import type { Cache } from '../sources/cache/cache.js';

const skip = await missingServices('postgres', 'redis');

for (const [label, redis] of [
  ['Redis cache', true],
  ['in-process cache', false],
] as const) {
  describe(`cache invalidation by the change feed (${label})`, { skip }, () => {
    const f = useTestGateway(`invalidate_${redis ? 'redis' : 'memory'}`, {
      env: (db) => ({ CHANGE_FEED: '1', ...(redis ? { REDIS_URL: TEST_REDIS_URL, CACHE_KEY_PREFIX: `${db.name}:` } : {}) }),
      seed: { customers: 10, invoices: 200, months: 2, seed: 3 },
    });
    if (redis) after(() => deleteRedisKeys(`${f.db.name}:*`));

    before(async () => {
      await eventually(() => f.gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
    });

    /** Reads an entity twice, so that the admission policy caches it. */
    const readTwice = async (document: typeof InvoiceByIdDocument | typeof CustomerByIdDocument, id: string) => {
      for (let i = 0; i < 2; i++) await f.gw.request(document as typeof InvoiceByIdDocument, { id });
    };

    /** Invalidations the gateway has applied so far. */
    const invalidations = async () => f.gw.gateway.metrics.total(f.gw.gateway.metrics.cacheInvalidations);

    it('an UPDATE from psql is seen by the next lookup, though the old row was cached', async () => {
      // Twice: the admission policy caches a row on its second read.
      const cached = await f.gw.request(InvoiceByIdDocument, { id: '17' });
      await f.gw.request(InvoiceByIdDocument, { id: '17' });
      // Misses, not SQL statements: the feed runs statements of its own meanwhile.
      const misses = () => f.gw.gateway.metrics.total(f.gw.gateway.metrics.cacheMisses);
      const missesBefore = await misses();
      await f.gw.request(InvoiceByIdDocument, { id: '17' });
      assert.equal(await misses(), missesBefore, 'the second lookup is answered from the cache');
      const before = await invalidations();
      await f.sql.query(`UPDATE invoices SET amount_usd = 12345.67, receiver_id = 3 WHERE invoice_id = 17`);
      await eventually(async () => (await invalidations()) > before, 'the feed to invalidate the entry');
      const fresh = await f.gw.request(InvoiceByIdDocument, { id: '17' });
      assert.notEqual(cached.data!.invoice!.amountUsd, '12345.67');
      assert.equal(fresh.data!.invoice!.amountUsd, '12345.67');
      assert.equal(fresh.data!.invoice!.receiverId, '3');
    });

    it('a DELETE from psql makes the next lookup null', async () => {
      await readTwice(InvoiceByIdDocument, '18');
      const before = await invalidations();
      await f.sql.query(`DELETE FROM invoices WHERE invoice_id = 18`);
      await eventually(async () => (await invalidations()) > before, 'the feed to invalidate the entry');
      assert.equal((await f.gw.request(InvoiceByIdDocument, { id: '18' })).data!.invoice, null);
    });

    it('a customer renamed from psql is seen by the next lookup', async () => {
      await readTwice(CustomerByIdDocument, '4');
      const before = await invalidations();
      await f.sql.query(`UPDATE customers SET customer_name = 'Renamed Ltd' WHERE customer_id = 4`);
      await eventually(async () => (await invalidations()) > before, 'the feed to invalidate the entry');
      assert.equal((await f.gw.request(CustomerByIdDocument, { id: '4' })).data!.customer!.name, 'Renamed Ltd');
    });

    it('an UPDATE that changes the id invalidates the old id too', async () => {
      await readTwice(InvoiceByIdDocument, '19');
      const before = await invalidations();
      await f.sql.query(`UPDATE invoices SET invoice_id = 1000019 WHERE invoice_id = 19`);
      await eventually(async () => (await invalidations()) >= before + 2, 'both entries to be invalidated');
      assert.equal((await f.gw.request(InvoiceByIdDocument, { id: '19' })).data!.invoice, null);
      assert.equal((await f.gw.request(InvoiceByIdDocument, { id: '1000019' })).data!.invoice!.id, '1000019');
    });
  });
}

/**
 * The race the tombstones exist for: a read that missed, read the old row from Postgres, and
 * fills the cache only after the feed invalidated the key, must not put the old row back.
 */
describe('a fill racing an invalidation', { skip }, () => {
  const prefix = `ig_test_race_${process.pid}:`;
  const { logger } = memoryLogger();
  const caches: [string, Cache][] = [
    ['Redis', createRedisCache({ url: TEST_REDIS_URL, ttlSeconds: 60, tombstoneSeconds: 60, timeoutMs: 1000, keyPrefix: prefix }, logger)],
    ['in-process', createMemoryCache({ maxEntries: 100, ttlSeconds: 60, tombstoneSeconds: 60 })],
  ];
  after(async () => {
    for (const [, cache] of caches) await cache.close();
    await deleteRedisKeys(`${prefix}*`);
  });

  for (const [label, cache] of caches) {
    it(`${label}: the late fill of the old row is refused, a later read misses, then fills afresh`, async () => {
      await cache.ready(2000);
      assert.deepEqual(await cache.getMany(['inv:v1:1']), [null], 'the read misses');
      // ... reads the old row from Postgres; meanwhile the row changes and the feed invalidates:
      await cache.invalidate(['inv:v1:1']);
      await cache.fill([['inv:v1:1', '{"amountUsd":"old"}']]);
      assert.deepEqual(await cache.getMany(['inv:v1:1']), [null], 'the old row was not put back');
      // An ordinary fill of a key with nothing in it still works.
      await cache.fill([['inv:v1:2', '{"amountUsd":"x"}']]);
      assert.deepEqual(await cache.getMany(['inv:v1:2']), ['{"amountUsd":"x"}']);
      // A prefix invalidation (TRUNCATE) covers every key of the entity.
      await cache.invalidatePrefix('inv:v1:');
      assert.deepEqual(await cache.getMany(['inv:v1:2']), [null]);
    });
  }
});
