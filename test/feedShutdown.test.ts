import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Metrics } from '../core/metrics.js';
import { startChangeFeed, type FeedConsumer } from '../pipelines/changeFeed.js';
import { createDatabase } from '../sources/postgres/database.js';
import { migrate } from '../sources/postgres/migrate.js';
import { eventually } from './fixtures/eventually.js';
import { startPostgresCluster } from './fixtures/postgresCluster.js';

const logger = pino({ level: 'silent' });

/**
 * A fast shutdown of Postgres waits until each walsender's client has confirmed everything it
 * sent. The feed confirmed only the commits it handled, never WAL of other tables after them
 * (the shutdown checkpoint is such WAL), so `pg_ctl stop -m fast` waited for as long as the
 * gateway stayed connected (seen by hand on Postgres 15: still waiting after 30 s).
 */
describe('Postgres with a change feed connected', () => {
  it('shuts down at once on a fast shutdown', async () => {
    const cluster = await startPostgresCluster({ wal_level: 'logical', max_replication_slots: '4', max_wal_senders: '4' });
    const db = createDatabase({ url: cluster.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
    let handled = 0;
    const consumer: FeedConsumer = {
      name: 'counting',
      handle: async (batch) => void (handled += batch.length),
    };
    let feed: ReturnType<typeof startChangeFeed> | undefined;
    let stopped: boolean | undefined;
    try {
      await migrate(db, logger);
      feed = startChangeFeed({ url: cluster.url, slot: 'ig_shutdown', publication: 'ig_shutdown', retryMs: 60_000 }, [consumer], db, logger, new Metrics());
      await eventually(() => feed!.status().state === 'streaming', 'the feed streaming', 20_000);
      await db.query({ name: 'customer', text: `INSERT INTO customers (customer_name) VALUES ('a')` });
      // WAL the feed does not carry, after the last commit it handled.
      await db.pool.query('CREATE TABLE elsewhere (id int)');
      await db.pool.query('INSERT INTO elsewhere VALUES (1)');
      await eventually(() => handled >= 1, 'the insert handled', 10_000);
      await db.close();
      stopped = await cluster.stopWithin(15_000);
    } finally {
      await feed?.stop();
      if (stopped === undefined) await cluster.stop().catch(() => undefined);
    }
    assert.equal(stopped, true, 'Postgres was still shutting down after 15 s');
  });
});
