import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import { Metrics } from '../core/metrics.js';
import { startChangeFeed, type FeedConsumer } from '../pipelines/changeFeed.js';
import { migrate } from '../sources/postgres/migrate.js';
import {
  createSlot,
  dropFeed,
  ensurePublication,
  openReplicationStream,
  parseLsn,
  type FeedTransaction,
  type ReplicationStream,
  type StreamOptions,
} from '../sources/postgres/replication.js';
import { createTestDatabase, missingServices } from './fixtures/services.js';
import { eventually } from './fixtures/eventually.js';
import { startTcpProxy } from './fixtures/network.js';

const skip = await missingServices('postgres');
const logger = pino({ level: 'silent' });

interface FeedSlot {
  /** The database's URL, to change (options, a proxy's port) before `open`. */
  readonly url: URL;
  readonly database: Database;
  /** The slot's name (the publication's is the test's `name`). */
  readonly slot: string;
  /** A stream of the slot through `url`, reporting every 200 ms. */
  open(options: Pick<StreamOptions, 'silentMs' | 'onTransaction' | 'onCaughtUp'>): ReplicationStream;
}

/** A fresh database with a feed's publication and slot (`name` both), dropped after `work`. */
async function withFeedSlot(name: string, work: (feed: FeedSlot) => Promise<void>): Promise<void> {
  const db = await createTestDatabase(`feed_${name}`);
  const database = createDatabase({ url: db.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
  const slot = `ig_${name}_${db.name.slice(-8)}`;
  try {
    await migrate(database, logger);
    await ensurePublication(database, `ig_${name}`);
    await createSlot(db.url, database, slot, async () => undefined);
    const url = new URL(db.url);
    const open = (options: Pick<StreamOptions, 'silentMs' | 'onTransaction' | 'onCaughtUp'>) =>
      openReplicationStream({ url: url.toString(), slot, publication: `ig_${name}`, logger, statusIntervalMs: 200, ...options });
    await work({ url, database, slot, open });
  } finally {
    await dropFeed(database, slot, `ig_${name}`).catch(() => undefined);
    await database.close();
    await db.drop();
  }
}

/**
 * Regression: during a 10M-invoice backfill the walsender cut the feed every 60 s ("terminating
 * walsender process due to replication timeout"), because flow control pauses the socket while a
 * transaction is handled and keepalives go unread. Here wal_sender_timeout is 1 s and a handler
 * takes 4 s.
 */
describe('the change feed stream outlives a handler slower than wal_sender_timeout', { skip }, () => {
  it('reports its position unasked, so the walsender keeps the stream', async () => {
    await withFeedSlot('keepalive', async ({ url, database, open }) => {
      url.searchParams.set('options', '-c wal_sender_timeout=1000');
      const received: FeedTransaction[] = [];
      const stream = open({
        // Silence while a transaction is handled is not the server's: this handler takes 4 s.
        silentMs: 2_000,
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
    });
  });
});

/**
 * Analytics wait for the feed to have decoded the WAL past their snapshot (the walsender's
 * keepalives say how far) instead of writing a barrier. A keepalive the library emits while
 * transactions before it are still queued behind a handler must not be passed on before them.
 */
describe('the change feed stream reports where the server has caught up', { skip }, () => {
  it('only after every transaction received before it, and past WAL of other tables', async () => {
    await withFeedSlot('caught_up', async ({ database, open }) => {
      const events: string[] = [];
      const caughtUp: bigint[] = [];
      let handled: bigint = 0n;
      /** Each position passed on, with the last transaction handled by then. */
      const passed: { walEnd: bigint; handled: bigint }[] = [];
      const stream = open({
        onTransaction: async (tx) => {
          events.push(`tx ${tx.lsn}`);
          invoiceEnd = tx.lsn;
          await sleep(1_000);
          handled = tx.lsn;
        },
        onCaughtUp: (walEnd) => {
          caughtUp.push(walEnd);
          passed.push({ walEnd, handled });
        },
      });
      let invoiceEnd = 1n << 62n;
      const insertLsn = async () => parseLsn((await database.query<{ lsn: string }>({ name: 'insert_lsn', text: 'SELECT pg_current_wal_insert_lsn()::text AS lsn' }))[0]!.lsn);
      try {
        await stream.started;
        await database.query({ name: 'customers', text: `INSERT INTO customers (customer_name) VALUES ('a'), ('b')` });
        await eventually(() => events.length === 1 && handled === invoiceEnd, 'the customers\u2019 transaction handled', 10_000);
        await eventually(() => caughtUp.some((at) => at >= invoiceEnd), 'the server caught up past it', 10_000);
        const early = passed.filter((at) => at.walEnd >= invoiceEnd && at.handled < invoiceEnd);
        assert.deepEqual(early, [], 'a position past the transaction was passed on before it was handled');
        // WAL of a table outside the publication: no transaction, and the position moves on.
        await database.pool.query('CREATE TABLE elsewhere (id int)');
        await database.pool.query('INSERT INTO elsewhere VALUES (1)');
        const end = await insertLsn();
        const transactions = events.length;
        await eventually(() => caughtUp.some((at) => at >= end), 'the server caught up past WAL of other tables', 10_000);
        assert.equal(events.length, transactions, 'no transaction for another table');
      } finally {
        await stream.stop();
      }
    });
  });
});

describe('the change feed passes a caught-up position on', { skip }, () => {
  it('to a consumer only once it has handled every transaction delivered before it', async () => {
    await withFeedSlot('feed_gate', async ({ url, database, slot }) => {
      let handledUpTo = 0n;
      const delivered: bigint[] = [];
      const passed: { position: bigint; handledUpTo: bigint }[] = [];
      const slow: FeedConsumer = {
        name: 'slow',
        async handle(batch) {
          delivered.push(...batch.map((tx) => tx.lsn));
          await sleep(1_000);
          handledUpTo = batch.at(-1)!.lsn;
        },
        caughtUp: (position) => void passed.push({ position, handledUpTo }),
      };
      const feed = startChangeFeed({ url: url.toString(), slot, publication: 'ig_feed_gate', retryMs: 200 }, [slow], database, logger, new Metrics());
      try {
        await eventually(() => feed.status().state === 'streaming', 'the feed streaming', 10_000);
        await database.query({ name: 'customers', text: `INSERT INTO customers (customer_name) VALUES ('a')` });
        await eventually(() => handledUpTo > 0n, 'the transaction handled', 10_000);
        const tx = delivered[0]!;
        // The walsender reads every database's WAL: under other test files' bulk loads its caught-up report can take seconds.
        await eventually(() => passed.some((at) => at.position >= tx), 'a position past it passed on', 30_000);
        assert.deepEqual(passed.filter((at) => at.position >= tx && at.handledUpTo < tx), [], 'passed on while the consumer was still handling the transaction');
      } finally {
        await feed.stop();
      }
    });
  });
});

/**
 * The library reports a position plus one (a standby's "last byte + 1"); a logical slot starts
 * decoding again at the confirmed position and skips a commit whose record begins before it.
 * Confirming a commit's end plus one skipped the next transaction when its commit record began
 * right there (two transactions committed back to back).
 */
describe('the change feed stream confirms a handled commit\u2019s end exactly', { skip }, () => {
  it('so the next stream delivers a transaction committed right after it', async () => {
    await withFeedSlot('confirm', async ({ database, slot, open }) => {
      const confirmed = async () =>
        parseLsn((await database.query<{ lsn: string }>({ name: 'confirmed', text: 'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1' }, [slot]))[0]!.lsn);
      // Two transactions whose commit records are adjacent: both insert, then both commit in a row.
      const [first, second] = [await database.pool.connect(), await database.pool.connect()];
      try {
        for (const [client, name] of [[first, 'first'], [second, 'second']] as const) {
          await client.query('BEGIN');
          await client.query(`INSERT INTO customers (customer_name) VALUES ($1)`, [name]);
        }
        await first.query('COMMIT');
        await second.query('COMMIT');
      } finally {
        first.release();
        second.release();
      }
      const received: FeedTransaction[] = [];
      let stream = open({ onTransaction: async (tx) => void received.push(tx) });
      await stream.started;
      await eventually(() => received.length >= 2, 'both transactions', 10_000);
      const [one] = received;
      stream.acknowledge(one!.lsn);
      await eventually(async () => (await confirmed()) >= one!.lsn, 'the first confirmed', 10_000);
      await stream.stop();
      assert.equal(await confirmed(), one!.lsn, 'the slot confirms the commit\u2019s end, not one byte past it');
      // The walsender lets go of the slot a moment after the socket closes.
      await eventually(
        async () => !(await database.query<{ active: boolean }>({ name: 'slot_active', text: 'SELECT active FROM pg_replication_slots WHERE slot_name = $1' }, [slot]))[0]!.active,
        'the slot released',
        10_000,
      );

      const again: FeedTransaction[] = [];
      stream = open({ onTransaction: async (tx) => void again.push(tx) });
      try {
        await stream.started;
        await eventually(() => again.length >= 1, 'the second transaction again', 10_000);
        assert.equal(again[0]!.lsn, received[1]!.lsn);
      } finally {
        await stream.stop();
      }
    });
  });
});

/** A stream stopped while transactions are queued drops them: a keepalive that came behind them says nothing. */
describe('the change feed stream stopped with transactions queued', { skip }, () => {
  it('passes no caught-up position on', async () => {
    await withFeedSlot('stopped_queue', async ({ database, open }) => {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const received: FeedTransaction[] = [];
      const caughtUp: bigint[] = [];
      const stream = open({
        onTransaction: async (tx) => {
          received.push(tx);
          if (received.length === 1) await held;
        },
        onCaughtUp: (walEnd) => void caughtUp.push(walEnd),
      });
      await stream.started;
      for (let i = 0; i < 5; i++) await database.query({ name: 'customer', text: `INSERT INTO customers (customer_name) VALUES ('c')` });
      await eventually(() => received.length === 1, 'the first transaction held', 10_000);
      // The others, and the keepalive the walsender sends once it has sent them, arrive meanwhile.
      await sleep(500);
      const stopped = stream.stop();
      release();
      await stopped;
      await sleep(200);
      assert.equal(received.length, 1, 'the others were queued, and dropped');
      assert.deepEqual(caughtUp.filter((at) => at >= received[0]!.lsn), [], 'a position past the held transaction was passed on after the queue was dropped');
    });
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
      logger,
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

/**
 * A server gone silent mid-stream (a partition, a frozen host) sends nothing, not even a close:
 * the stream used to wait for TCP to give up (minutes), the feed stopped and lake answers fell
 * back to Postgres after a barrier timeout each. Its position reports ask for an answer; none for
 * `silentMs` ends the stream, and the feed then reconnects.
 */
describe('the change feed stream behind a server gone silent', { skip }, () => {
  it('keeps a quiet stream whose server answers, ends one that hears nothing, and stops', async () => {
    await withFeedSlot('silent', async ({ url, database, open }) => {
      const proxy = await startTcpProxy(Number(url.port || 5432), url.hostname);
      url.port = String(proxy.port);
      const received: FeedTransaction[] = [];
      const stream = open({ silentMs: 2_500, onTransaction: async (tx) => void received.push(tx) });
      try {
        await stream.started;
        let ended: string | undefined;
        void stream.ended.then((reason) => (ended = reason.message));
        await database.query({ name: 'customers', text: `INSERT INTO customers (customer_name) VALUES ('a'), ('b')` });
        await eventually(() => received.length >= 1, 'the insert, through the proxy', 10_000);
        // Nothing to send for twice the limit: the answers to its reports keep it.
        await sleep(5_000);
        assert.equal(ended, undefined, 'a quiet stream was taken for lost');
        proxy.freeze();
        const outcome = await Promise.race([stream.ended.then((reason) => reason.message), sleep(10_000, 'still streaming')]);
        assert.match(outcome, /heard nothing from the server/);
        assert.equal(await Promise.race([stream.stop().then(() => 'stopped'), sleep(10_000, 'still stopping')]), 'stopped');
      } finally {
        await stream.stop();
        // Closes the walsender's side too, so the slot can be dropped.
        await proxy.cut();
      }
    });
  });

  it('fails a start whose server freezes after the login, before streaming begins', async () => {
    await withFeedSlot('frozen_start', async ({ url, open }) => {
      const proxy = await startTcpProxy(Number(url.port || 5432), url.hostname, { freezeOn: 'START_REPLICATION' });
      url.port = String(proxy.port);
      const stream = open({ silentMs: 1_500, onTransaction: async () => undefined });
      try {
        const outcome = await Promise.race([stream.started.then(() => 'started', (err: Error) => err.message), sleep(10_000, 'still starting')]);
        assert.match(outcome, /did not begin streaming/);
      } finally {
        await stream.stop();
        await proxy.cut();
      }
    });
  });
});
