import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { createDatabase } from '../sources/postgres/database.js';
import { migrate } from '../sources/postgres/migrate.js';
import { createSlot, dropFeed, ensurePublication, openReplicationStream, type FeedTransaction } from '../sources/postgres/replication.js';
import { createTestDatabase, missingServices } from './fixtures/services.js';
import { eventually } from './fixtures/eventually.js';

const skip = await missingServices('postgres');

/**
 * Regression: during a 10M-invoice backfill the walsender cut the feed every 60 s ("terminating
 * walsender process due to replication timeout"), because flow control pauses the socket while a
 * transaction is handled and keepalives go unread. Here wal_sender_timeout is 1 s and a handler
 * takes 4 s.
 */
describe('the change feed stream outlives a handler slower than wal_sender_timeout', { skip }, () => {
  it('reports its position unasked, so the walsender keeps the stream', async () => {
    const logger = pino({ level: 'silent' });
    const db = await createTestDatabase('feed_keepalive');
    const database = createDatabase({ url: db.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
    const slot = `ig_keepalive_${db.name.slice(-8)}`;
    try {
      await migrate(database, logger);
      await ensurePublication(database, 'ig_keepalive');
      await createSlot(db.url, database, slot, async () => undefined);
      const url = new URL(db.url);
      url.searchParams.set('options', '-c wal_sender_timeout=1000');
      const received: FeedTransaction[] = [];
      const stream = openReplicationStream({
        url: url.toString(),
        slot,
        publication: 'ig_keepalive',
        logger,
        statusIntervalMs: 200,
        onTransaction: async (tx) => {
          received.push(tx);
          if (received.length === 1) await sleep(4_000);
        },
      });
      try {
        await stream.started;
        await database.query({ name: 'customers', text: `INSERT INTO customers (customer_name) VALUES ('a'), ('b')` });
        for (let i = 0; i < 3; i++) await database.query({ name: 'invoice', text: `INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (1, 2, 10)` });
        let cut: string | undefined;
        void stream.ended.then((reason) => (cut = reason.message));
        await eventually(() => received.length >= 4 || cut !== undefined, 'every transaction, or the stream cut', 15_000);
        await sleep(1_500);
        assert.equal(cut, undefined, 'the stream was cut');
        assert.equal(received.length, 4);
      } finally {
        await stream.stop();
      }
    } finally {
      await dropFeed(database, slot, 'ig_keepalive').catch(() => undefined);
      await database.close();
      await db.drop();
    }
  });
});

describe('the change feed stream against a server that never answers', () => {
  it('fails its start after its connect timeout, and stops', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const stream = openReplicationStream({
      url: `postgres://postgres@127.0.0.1:${port}/none`,
      slot: 'never',
      publication: 'never',
      logger: pino({ level: 'silent' }),
      connectTimeoutMs: 300,
      onTransaction: async () => undefined,
    });
    try {
      const outcome = await Promise.race([stream.started.then(() => 'started', (err: Error) => err.message), sleep(5_000, 'still starting')]);
      assert.match(outcome, /timeout/i);
      assert.equal(await Promise.race([stream.stop().then(() => 'stopped'), sleep(5_000, 'still stopping')]), 'stopped');
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
