import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { Metrics } from '../core/metrics.js';
import { createBatchWindow } from '../core/batchWindow.js';
import { createAdmission } from '../sources/cache/admission.js';
import type { Cache } from '../sources/cache/cache.js';
import { createInvalidationChannel, type Invalidation, type InvalidationChannel } from '../sources/cache/invalidationChannel.js';
import { createMemoryCache } from '../sources/cache/memoryCache.js';
import { createRedisCache } from '../sources/cache/redisCache.js';
import { createTieredCache } from '../sources/cache/tieredCache.js';
import { eventually } from './fixtures/eventually.js';
import { memoryLogger } from './fixtures/gateway.js';
import { hasRedisServer, startRedisServer } from './fixtures/redisServer.js';
import { deleteRedisKeys, missingServices, TEST_REDIS_URL } from './fixtures/services.js';

const skip = await missingServices('redis');

/**
 * Two gateway processes, as far as the cache can tell: each its own in-process tier and channel
 * over the same Redis and key prefix.
 */
describe('two-tier cache: an in-process tier kept coherent over Redis pub/sub', { skip }, () => {
  const keyPrefix = `ig_test_tiers_${process.pid}:`;
  const { logger } = memoryLogger();
  /** Holds each shared read until released, to stage an invalidation in the middle of one. */
  let holdSharedReads: Promise<void> | undefined;
  const processes: { cache: Cache; channel: InvalidationChannel; metrics: Metrics }[] = [];
  const open = (delayed = false) => {
    const metrics = new Metrics();
    const channel = createInvalidationChannel({ url: TEST_REDIS_URL, keyPrefix }, logger);
    const redis = createRedisCache(
      { url: TEST_REDIS_URL, ttlSeconds: 60, tombstoneSeconds: 60, timeoutMs: 1000, keyPrefix, onInvalidated: (invalidation) => channel.publish(invalidation) },
      logger,
      metrics,
    );
    const shared: Cache = delayed
      ? {
          ...redis,
          async getMany(keys) {
            const values = await redis.getMany(keys);
            await holdSharedReads;
            return values;
          },
        }
      : redis;
    const cache = createTieredCache(createMemoryCache({ maxEntries: 100, ttlSeconds: 60, tombstoneSeconds: 60 }), shared, channel, metrics);
    processes.push({ cache, channel, metrics });
    return { cache, channel, metrics };
  };
  let a: ReturnType<typeof open>;
  let b: ReturnType<typeof open>;

  before(async () => {
    a = open();
    b = open(true);
    await eventually(() => a.channel.live() && b.channel.live(), 'both channels to subscribe');
  });
  after(async () => {
    for (const p of processes) await Promise.all([p.cache.close(), p.channel.close()]);
    await deleteRedisKeys(`${keyPrefix}*`);
  });

  const localHits = (p: { metrics: Metrics }) => p.metrics.total(p.metrics.cacheLocalHits);

  it('answers a repeated read from the process, then drops it in every process when one invalidates', async () => {
    await a.cache.fill([['inv:v1:1', 'old']]);
    assert.deepEqual(await b.cache.getMany(['inv:v1:1']), ['old'], 'from Redis');
    const hits = await localHits(b);
    assert.deepEqual(await b.cache.getMany(['inv:v1:1']), ['old']);
    assert.equal(await localHits(b), hits + 1, 'the second read is answered in process');

    await a.cache.invalidate(['inv:v1:1']);
    await eventually(async () => (await b.cache.getMany(['inv:v1:1']))[0] === null, 'the other process to drop the entry', 2000);
    // Once invalidated, the value is gone from Redis too: a fill afresh is read again by both.
    await a.cache.fill([['inv:v1:2', 'x']]);
    assert.deepEqual(await b.cache.getMany(['inv:v1:2']), ['x']);
  });

  /**
   * The feed's consumer publishes once it has applied an invalidation; this process's response
   * cache and in-process tier listen to the channel. They used to hear it only through Redis's
   * echo, so the next lookup right after could be answered stale (a CI failure of
   * cacheInvalidation.test with Redis).
   */
  it('tells its own process at once when it publishes, and the others through Redis', async () => {
    const heard = { a: [] as Invalidation[], b: [] as Invalidation[] };
    a.channel.onMessage((invalidation) => heard.a.push(invalidation));
    b.channel.onMessage((invalidation) => heard.b.push(invalidation));
    a.channel.publish({ keys: ['inv:v1:own'] });
    assert.deepEqual(heard.a, [{ keys: ['inv:v1:own'] }], 'before any I/O');
    await eventually(() => heard.b.length === 1, 'the other process to hear it', 2000);
    assert.deepEqual(heard.b.map((invalidation) => invalidation.keys), [['inv:v1:own']]);
  });

  it('does not keep a value read from Redis before an invalidation that arrived during the read', async () => {
    await a.cache.fill([['inv:v1:3', 'old']]);
    let release!: () => void;
    holdSharedReads = new Promise((resolve) => (release = resolve));
    const read = b.cache.getMany(['inv:v1:3']);
    // The read has its answer from Redis ("old") but has not returned; meanwhile the row changes.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await a.cache.invalidate(['inv:v1:3']);
    await eventually(async () => (await a.cache.getMany(['inv:v1:3']))[0] === null, 'the invalidation');
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    holdSharedReads = undefined;
    assert.deepEqual(await read, ['old'], 'the read that began before the change may answer the old row');
    assert.deepEqual(await b.cache.getMany(['inv:v1:3']), [null], 'but the process did not keep it');
  });

  it('while its subscription is down, a process reads Redis only; back, it has forgotten everything', async () => {
    await a.cache.fill([['inv:v1:4', 'old']]);
    for (let i = 0; i < 2; i++) await b.cache.getMany(['inv:v1:4']);
    const before = await localHits(b);
    await b.cache.getMany(['inv:v1:4']);
    assert.equal(await localHits(b), before + 1, 'held in process');

    const admin = new Redis(TEST_REDIS_URL);
    try {
      // Every pub/sub connection: both processes lose their subscription (and any message meanwhile).
      await admin.client('KILL', 'TYPE', 'pubsub');
    } finally {
      admin.disconnect();
    }
    const epoch = b.channel.epoch();
    // The change lands in Redis while b may not be subscribed; its message may be lost.
    await a.cache.invalidate(['inv:v1:4']);
    await eventually(() => b.channel.live() && b.channel.epoch() !== epoch, 'b to subscribe again');
    assert.deepEqual(await b.cache.getMany(['inv:v1:4']), [null], 'the old value is not served after the outage');
  });

  it('a message it cannot read drops everything in every process, and fails nothing', async () => {
    const publisher = new Redis(TEST_REDIS_URL);
    try {
      for (const message of ['null', '{"keys":"inv:v1:5"}', '{"prefix":7}', '{}', '[]', 'not json']) {
        // A key of its own each time: a dropped key keeps a tombstone that refuses it a while.
        const key = `inv:v1:unreadable:${message}`;
        await a.cache.fill([[key, 'kept']]);
        for (let i = 0; i < 2; i++) await b.cache.getMany([key]);
        const held = await localHits(b);
        await b.cache.getMany([key]);
        assert.equal(await localHits(b), held + 1, 'held in process');
        await publisher.publish(`${keyPrefix}cache-invalidations`, message);
        await eventually(async () => {
          const before = await localHits(b);
          assert.deepEqual(await b.cache.getMany([key]), ['kept'], 'still answered, from Redis');
          return (await localHits(b)) === before;
        }, `the process to drop what it held, on ${message}`);
      }
    } finally {
      publisher.disconnect();
    }
  });
});

describe('invalidations are published only once their tombstones are in Redis', { skip: skip || (hasRedisServer() ? false : 'redis-server not installed') }, () => {
  it('tells nobody while Redis refuses the tombstones, and tells everybody once they land', async () => {
    const { logger } = memoryLogger();
    const server = await startRedisServer();
    const told: Invalidation[] = [];
    const cache = createRedisCache(
      { url: server.url, ttlSeconds: 60, tombstoneSeconds: 60, timeoutMs: 200, keyPrefix: 'ig:', onInvalidated: (invalidation) => told.push(invalidation) },
      logger,
    );
    try {
      await cache.ready(2000);
      await cache.fill([['inv:v1:1', 'old']]);
      await server.kill();
      await cache.invalidate(['inv:v1:1']);
      await cache.invalidatePrefix('cust:v1:');
      assert.deepEqual(told, [], 'another process told now could read the old row from Redis again');
      await server.restart();
      await eventually(() => told.length === 2, 'the kept invalidations to land and be told');
      assert.deepEqual(told, [{ prefix: 'cust:v1:' }, { keys: ['inv:v1:1'] }]);
      assert.deepEqual(await cache.getMany(['inv:v1:1']), [null]);
    } finally {
      await cache.close();
      await server.kill();
    }
  });
});

describe('one batch window per process', () => {
  it('merges concurrent callers into one fetch, each key once, and joins keys already in flight', async () => {
    const fetched: string[][] = [];
    let joined = 0;
    const read = createBatchWindow(
      async (keys) => {
        fetched.push([...keys]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        return keys.map((k) => `row ${k}`);
      },
      { maxBatchSize: 3, onJoined: (n) => (joined += n) },
    );
    const [first, second] = await Promise.all([read(['1', '2']), read(['2', '3', '4'])]);
    assert.deepEqual(first, ['row 1', 'row 2']);
    assert.deepEqual(second, ['row 2', 'row 3', 'row 4']);
    assert.deepEqual(fetched, [['1', '2', '3'], ['4']], 'one window, split at maxBatchSize, "2" fetched once');
    assert.equal(joined, 1);

    // A caller of the next turn joins a fetch still running.
    const running = read(['5']);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(await Promise.all([running, read(['5'])]), [['row 5'], ['row 5']]);
    assert.equal(fetched.filter((keys) => keys.includes('5')).length, 1);
  });

  it('does not join a fetch in flight for a key forgotten (changed) since it began', async () => {
    let version = 'old';
    const fetched: string[][] = [];
    const read = createBatchWindow(
      async (keys) => {
        const value = version;
        fetched.push([...keys]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        return keys.map(() => value);
      },
      { maxBatchSize: 10 },
    );
    const before = read(['7']);
    await new Promise((resolve) => setImmediate(resolve));
    version = 'new';
    read.forget(['7']);
    assert.deepEqual(await Promise.all([before, read(['7'])]), [['old'], ['new']]);
    assert.equal(fetched.length, 2);
  });

  it('fails every caller of a failed fetch, and the next call fetches again', async () => {
    let calls = 0;
    const read = createBatchWindow(
      async (keys) => {
        if (calls++ === 0) throw new Error('Postgres went away');
        return keys.map(() => 'ok');
      },
      { maxBatchSize: 10 },
    );
    const results = await Promise.allSettled([read(['1']), read(['1', '2'])]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    assert.deepEqual(await read(['1']), ['ok']);
  });
});

describe('cache admission', () => {
  it('second-read admits a key from its second miss within the window; always admits all', async () => {
    const secondRead = createAdmission('second-read', { windowSeconds: 60, maxTracked: 10 });
    assert.equal(secondRead.admit('a'), false);
    assert.equal(secondRead.admit('b'), false);
    assert.equal(secondRead.admit('a'), true);
    // Once admitted, a key that misses again (invalidated by an update) is cached again at once.
    assert.equal(secondRead.admit('a'), true);
    const always = createAdmission('always', { windowSeconds: 60, maxTracked: 10 });
    assert.equal(always.admit('a'), true);
  });

  it('admits every key on its second miss and few on their first, over many keys', () => {
    const admission = createAdmission('second-read', { windowSeconds: 600, maxTracked: 200_000 });
    let refused = 0;
    let falsePositives = 0;
    for (let i = 0; i < 100_000; i++) {
      if (admission.admit(`inv:v1:${i}`)) falsePositives++;
      if (!admission.admit(`inv:v1:${i}`)) refused++;
    }
    assert.equal(refused, 0);
    assert.ok(falsePositives < 1000, `${falsePositives} first misses admitted`);
  });

  it('forgets a first miss after two windows, of time or of keys', async () => {
    // Each check of a first miss records it again: a fresh filter per question.
    const remembers = async (key: string, steps: (admission: ReturnType<typeof createAdmission>) => Promise<void> | void) => {
      const admission = createAdmission('second-read', { windowSeconds: 1, maxTracked: 2 });
      admission.admit(key);
      await steps(admission);
      return admission.admit(key);
    };
    const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
    assert.equal(await remembers('a', () => sleep(1100)), true, 'one window passed: still remembered');
    assert.equal(await remembers('a', () => sleep(2200)), false, 'two windows passed');
    assert.equal(await remembers('a', (admission) => void ['b', 'c', 'd', 'e'].forEach((k) => admission.admit(k))), false, 'two windows of two keys passed');
    assert.equal(await remembers('a', (admission) => void admission.admit('b')), true, 'within its window');
  });
});
