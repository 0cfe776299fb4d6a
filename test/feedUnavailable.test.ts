import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ADMIN_DATABASE_URL, createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { startPostgresCluster, type PostgresCluster } from './fixtures/postgresCluster.js';
import { connect, subscribe } from './fixtures/subscriber.js';
import { InvoiceByIdDocument, RiskScoredIdsDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

/** What a gateway whose Postgres cannot run the feed must still do, and say. */
async function expectFeedOff(gw: TestGateway, reason: RegExp) {
  const status = await eventually(() => {
    const s = gw.gateway.feed.status();
    return s.state === 'off' ? s : undefined;
  }, 'the feed to turn off');
  assert.match(status.reason, reason);
  const offLines = gw.logs.filter((l) => /change feed off/.test(String(l.msg)));
  assert.equal(offLines.length, 1, 'one clear log line');
  assert.match(String(offLines[0]!.msg), reason);

  assert.equal((await gw.request(InvoiceByIdDocument, { id: '1' })).data?.invoice?.id, '1', 'lookups still work');
  const ready = (await (await fetch(new URL('/readyz', gw.url))).json()) as { status: string; feed: { state: string; reason: string } };
  assert.equal(ready.status, 'ready');
  assert.equal(ready.feed.state, 'off');
  assert.match(ready.feed.reason, reason);

  const client = connect(gw.url);
  const sub = subscribe(client, RiskScoredIdsDocument);
  await sub.ended;
  await client.dispose();
  assert.equal(sub.errors[0]?.extensions?.code, 'SERVICE_UNAVAILABLE');
  assert.match(sub.errors[0]!.message, reason);
}

describe('a Postgres with wal_level=replica', { skip }, () => {
  let cluster: PostgresCluster;
  let gw: TestGateway;

  before(async () => {
    cluster = await startPostgresCluster({ wal_level: 'replica' });
    gw = await startTestGateway({ databaseUrl: cluster.url, env: { CHANGE_FEED: '1' }, seed: { customers: 3, invoices: 5, months: 1, seed: 1 } });
  });

  after(async () => {
    await gw?.stop();
    await cluster?.stop();
  });

  it('serves lookups; the feed is off and says to set wal_level=logical', async () => {
    await expectFeedOff(gw, /wal_level=replica; the change feed needs wal_level=logical/);
  });
});

describe('a role without the REPLICATION attribute', { skip }, () => {
  const role = `ig_norepl_${randomBytes(3).toString('hex')}`;
  let db: TestDatabase;
  let gw: TestGateway;
  const admin = () => new pg.Client({ connectionString: ADMIN_DATABASE_URL });

  before(async () => {
    db = await createTestDatabase('norepl');
    const client = admin();
    await client.connect();
    await client.query(`CREATE ROLE ${role} LOGIN NOREPLICATION`);
    await client.query(`ALTER DATABASE ${db.name} OWNER TO ${role}`);
    await client.end();
    const url = new URL(db.url);
    url.username = role;
    gw = await startTestGateway({ databaseUrl: url.toString(), env: { CHANGE_FEED: '1' }, seed: { customers: 3, invoices: 5, months: 1, seed: 1 } });
  });

  after(async () => {
    await gw?.stop();
    await db?.drop();
    const client = admin();
    await client.connect();
    await client.query(`DROP ROLE IF EXISTS ${role}`);
    await client.end();
  });

  it('serves lookups; the feed is off and names the attribute to grant', async () => {
    await expectFeedOff(gw, new RegExp(`the role ${role} lacks the REPLICATION attribute`));
  });
});
