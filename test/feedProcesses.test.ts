import assert from 'node:assert/strict';
import { encodeSeqCursor } from '../resolvers/cursor.js';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createTestDatabase, deleteRedisKeys, missingServices, TEST_REDIS_URL, type TestDatabase } from './fixtures/services.js';
import { startTestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { freePort } from './fixtures/network.js';
import { spawnGateway, type GatewayProcess } from './fixtures/process.js';
import { connect, subscribe, type Subscriber } from './fixtures/subscriber.js';
import { RiskScoredIdsDocument, type RiskScoredIdsSubscription } from './generated/graphql.js';

const skip = await missingServices('postgres', 'redis');
const FEED_COMMAND = fileURLToPath(new URL('../server/commands/feed.js', import.meta.url));

/**
 * Two real gateway processes on one Postgres and one Redis: one holds the slot and scores, the
 * other waits; subscribers on either see every event. The holder is killed (SIGKILL) in the
 * middle of a burst of inserts: the other takes over, every invoice ends with exactly one score,
 * the aggregates count each invoice once, and no subscriber sees an event twice.
 */
describe('two gateway processes sharing Postgres and Redis', { skip }, () => {
  let db: TestDatabase;
  let sql: pg.Pool;
  const processes: GatewayProcess[] = [];
  const subscribers: { dispose(): Promise<void> }[] = [];
  let prefix: string;

  const start = async (name: string) => {
    const port = await freePort();
    const gateway = spawnGateway({
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      CACHE_KEY_PREFIX: prefix,
      PORT: String(port),
      HOST: '127.0.0.1',
      FEED_RETRY_MS: '300',
      LOG_LEVEL: 'info',
    });
    processes.push(gateway);
    await gateway.waitFor(/gateway listening/);
    return { name, gateway, url: `http://127.0.0.1:${port}/graphql` };
  };

  const watch = (url: string) => {
    const client = connect(url, { lazy: false });
    const sub = subscribe(client, RiskScoredIdsDocument, { after: encodeSeqCursor('live', '0') });
    subscribers.push({ dispose: async () => void (await client.dispose()) });
    return sub;
  };

  const insertMany = async (count: number, parallel = 1) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (next++ < count) {
          await sql.query(`INSERT INTO invoices (issuer_id, receiver_id, amount_usd) VALUES (1 + floor(random() * 40), 1 + floor(random() * 40), round((random() * 5000)::numeric, 2) + 1)`);
        }
      }),
    );
  };

  const allScored = () =>
    eventually(async () => {
      const { rows } = await sql.query(`SELECT NOT EXISTS (SELECT 1 FROM invoices i WHERE NOT EXISTS (SELECT 1 FROM invoice_risk_scores s WHERE s.invoice_id = i.invoice_id)) AS done`);
      return rows[0].done;
    }, 'every invoice to be scored', 60_000);

  const ids = (sub: Subscriber<RiskScoredIdsSubscription>) => sub.events.map((e) => e.riskScored.invoiceId);

  before(async () => {
    db = await createTestDatabase('feed_processes');
    prefix = `${db.name}:`;
    const setup = await startTestGateway({ databaseUrl: db.url, seed: { customers: 40, invoices: 1_000, months: 6, seed: 5 } });
    await setup.stop();
    sql = new pg.Pool({ connectionString: db.url, max: 4 });
  });

  after(async () => {
    for (const s of subscribers) await s.dispose();
    for (const p of processes) p.child.kill('SIGKILL');
    await Promise.all(processes.map((p) => p.exited));
    await sql?.end();
    await deleteRedisKeys(`${prefix}*`);
    await db?.drop();
  });

  it('one holds the slot, the other waits; a kill -9 mid-burst moves scoring over with every invoice scored once', async () => {
    const a = await start('a');
    await a.gateway.waitFor(/change feed streaming/);
    const b = await start('b');
    await b.gateway.waitFor(/change feed on standby/);
    const onA = watch(a.url);
    const onB = watch(b.url);

    await insertMany(100);
    await onA.waitFor(100);
    await onB.waitFor(100);
    assert.deepEqual(ids(onA), ids(onB), 'subscribers on both processes receive every event, in the same order');

    const burst = insertMany(600, 2);
    await eventually(async () => (await sql.query(`SELECT count(*)::int AS n FROM invoices`)).rows[0].n >= 1_250, 'the burst to be under way');
    a.gateway.child.kill('SIGKILL');
    await burst;
    await b.gateway.waitFor(/change feed streaming/, 15_000);
    await allScored();

    const { rows } = await sql.query(`SELECT
        (SELECT count(*) FROM invoices)::int AS invoices,
        (SELECT count(*) FROM invoice_risk_scores)::int AS scores,
        (SELECT count(*) FROM invoice_risk_scores WHERE live_seq IS NOT NULL)::int AS live,
        (SELECT max(live_seq) FROM invoice_risk_scores)::int AS max_live`);
    assert.deepEqual(rows[0], { invoices: 1_700, scores: 1_700, live: 700, max_live: 700 }, 'one score each; live cursors without gaps');

    // Every live invoice reached the subscriber on B exactly once, in cursor order.
    await onB.waitFor(700, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    const live = await sql.query(`SELECT invoice_id::text AS id FROM invoice_risk_scores WHERE live_seq IS NOT NULL ORDER BY live_seq`);
    assert.deepEqual(ids(onB), live.rows.map((r) => r.id));

    // The running aggregates count each invoice once, crash or not.
    const drift = await sql.query(`SELECT count(*)::int AS n FROM (
        SELECT issuer_id AS customer_id, date_trunc('month', issue_date AT TIME ZONE 'UTC')::date AS month, count(*) AS invoices FROM invoices GROUP BY 1, 2
      ) direct FULL JOIN risk_customer_months m USING (customer_id, month)
      WHERE direct.invoices IS DISTINCT FROM m.invoices`);
    assert.equal(drift.rows[0].n, 0);
  });

  it('a restarted process waits; SIGTERM to the holder closes its sockets with 1001 and the other takes over', async () => {
    const b = processes[1]!;
    const a = await start('a2');
    await a.gateway.waitFor(/change feed on standby/);
    const bUrl = `http://127.0.0.1:${/"url":"http:\/\/127\.0\.0\.1:(\d+)/.exec(b.output())![1]}/graphql`;
    const onB = watch(bUrl);
    await onB.waitFor(700);
    b.child.kill('SIGTERM');
    await onB.ended;
    assert.equal(onB.errors[0]?.extensions?.closeCode, 1001, JSON.stringify(onB.errors));
    assert.equal(await b.exited, 0);
    await a.gateway.waitFor(/change feed streaming/, 15_000);
    const onA = watch(a.url);
    await onA.waitFor(700);
    await insertMany(5);
    await onA.waitFor(705);
    await allScored();
  });

  it('npm run feed -- --status shows the slot, --drop removes it and the publication', async () => {
    for (const p of processes) p.child.kill('SIGTERM');
    await Promise.all(processes.map((p) => p.exited));
    const run = (flag: string) => spawnSync(process.execPath, [FEED_COMMAND, flag], { env: { PATH: process.env.PATH ?? '', DATABASE_URL: db.url }, encoding: 'utf8' });
    const status = run('--status');
    assert.equal(status.status, 0, status.stderr);
    const shown = JSON.parse(status.stdout) as { slot: string; exists: boolean; active: boolean; lagBytes: number };
    assert.equal(shown.slot, `ig_feed_${db.name}`);
    assert.equal(shown.exists, true);
    assert.equal(shown.active, false);
    const dropped = run('--drop');
    assert.equal(dropped.status, 0, dropped.stderr);
    assert.match(dropped.stdout, new RegExp(`dropped replication slot ig_feed_${db.name}; dropped publication invoice_gateway`));
    const { rows } = await sql.query(`SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())::int AS slots,
      (SELECT count(*) FROM pg_publication)::int AS publications`);
    assert.deepEqual(rows[0], { slots: 0, publications: 0 });
  });
});
