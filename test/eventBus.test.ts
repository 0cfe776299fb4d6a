import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createEventBus, type EventBus } from '../sources/pubsub/eventBus.js';
import { memoryLogger } from './fixtures/gateway.js';
import { startTcpProxy, type TcpProxy } from './fixtures/network.js';
import { missingServices, TEST_REDIS_URL } from './fixtures/services.js';

const skip = await missingServices('redis');

/** The event bus over a real Redis, reached through a proxy the test can cut. */
describe('the event bus over Redis, when Redis misbehaves', { skip }, () => {
  const prefix = `ig_test_bus_${process.pid}:`;
  const { logger } = memoryLogger();
  let proxy: TcpProxy;
  let url: string;

  before(async () => {
    const target = new URL(TEST_REDIS_URL);
    proxy = await startTcpProxy(Number(target.port || 6379), target.hostname);
    url = `redis://127.0.0.1:${proxy.port}`;
  });
  after(async () => {
    await proxy?.cut();
  });

  it('skips a message that is not JSON, and delivers the next event', async () => {
    const bus = createEventBus({ redisUrl: url, prefix }, logger);
    const admin = new Redis(TEST_REDIS_URL);
    try {
      const events = bus.subscribe<{ n: number }>('scores', { maxQueued: 10 });
      await events.ready;
      await admin.publish(`${prefix}events:scores`, 'not json');
      bus.publish('scores', { n: 1 });
      assert.deepEqual((await events.next()).value, { n: 1 });
      await events.return!();
    } finally {
      admin.disconnect();
      await bus.close();
    }
  });

  it('closes at once while Redis is away, with subscribes and unsubscribes still queued', async () => {
    let bus: EventBus | undefined = createEventBus({ redisUrl: url, prefix }, logger);
    try {
      const first = bus.subscribe('a', { maxQueued: 10 });
      await first.ready;
      await proxy.cut();
      await sleep(300);
      // Queued until Redis is back: a SUBSCRIBE and an UNSUBSCRIBE.
      const second = bus.subscribe('b', { maxQueued: 10 });
      await first.return!();
      const closing = bus.close();
      bus = undefined;
      assert.equal(await Promise.race([closing.then(() => 'closed'), sleep(5_000, 'stuck')]), 'closed');
      assert.deepEqual(await second.return!(), { value: undefined, done: true });
    } finally {
      await bus?.close();
      await proxy.restore();
    }
  });
});
