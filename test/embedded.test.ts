import assert from 'node:assert/strict';
import { encodeSeqCursor } from '../resolvers/cursor.js';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { postGraphQL } from './fixtures/gateway.js';
import { copyCheckout, removeEmbeddedData } from './fixtures/checkout.js';
import { freePorts } from './fixtures/network.js';
import { spawnGateway, type GatewayProcess } from './fixtures/process.js';
import { CreateInvoiceDocument, InvoiceByIdDocument, RiskScoredIdsDocument, InvoiceStatsDocument } from './generated/graphql.js';
import { eventually } from './fixtures/eventually.js';
import { connect, subscribe } from './fixtures/subscriber.js';
import pg from 'pg';

const asRoot = process.getuid?.() === 0;
const STARTED = 120_000;

async function ports() {
  const [pgPort, port] = await freePorts(2);
  return { EMBEDDED_PG_PORT: String(pgPort), PORT: String(port), HOST: '127.0.0.1' };
}

/** Whether anything still accepts connections on the embedded Postgres's port. */
function listening(port: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid the gateway logged (pino puts it on every JSON line). */
function gatewayPid(gateway: GatewayProcess): number {
  const line = gateway.output().split('\n').find((l) => l.includes('"gateway listening"'));
  assert.ok(line, `no listening line in:\n${gateway.output()}`);
  return (JSON.parse(line) as { pid: number }).pid;
}

/** The one line a failed start ends with (stderr; it may interleave with stdout's log lines). */
function failureLine(gateway: GatewayProcess): string | undefined {
  const lines = gateway.output().split('\n').filter((l) => l.startsWith('gateway failed to start:'));
  assert.equal(lines.length, 1, gateway.output());
  return lines[0];
}

async function stopped(gateway: GatewayProcess, signal: NodeJS.Signals = 'SIGTERM') {
  if (gateway.child.exitCode === null && gateway.child.signalCode === null) gateway.child.kill(signal);
  await gateway.exited;
}

describe('npm start on embedded defaults', () => {
  let dataRoot: string;
  const dataDirs: string[] = [];
  const dataDir = (name: string) => {
    const dir = path.join(dataRoot, name);
    dataDirs.push(dir);
    return dir;
  };

  before(async () => {
    dataRoot = await mkdtemp(path.join(tmpdir(), 'ig-embedded-'));
  });

  after(async () => {
    for (const dir of dataDirs) await removeEmbeddedData(dir);
    await rm(dataRoot, { recursive: true, force: true });
  });

  it('stops the embedded Postgres it started when a signal arrives during start-up', async () => {
    const env = { DATA_DIR: dataDir('interrupted'), ...(await ports()) };
    const gateway = spawnGateway(env);
    try {
      await gateway.waitFor(/embedded Postgres started/, STARTED);
      gateway.child.kill('SIGTERM');
      assert.equal(await gateway.exited, 0);
      assert.match(gateway.output(), /shutdown complete/);
      assert.equal(await listening(env.EMBEDDED_PG_PORT), false, 'the embedded Postgres is stopped');
    } finally {
      // SIGTERM, not SIGKILL: the gateway must stop its Postgres before the data is removed.
      await stopped(gateway);
    }
  });

  it('starts embedded Postgres, seeds demo data once, and reuses it on the next start', async () => {
    const dir = dataDir('reuse');
    const firstEnv = { DATA_DIR: dir, ...(await ports()) };
    const first = spawnGateway(firstEnv);
    let createdId: string;
    try {
      await first.waitFor(/gateway listening/, STARTED);
      assert.match(first.output(), /seeding demo data/);
      const url1 = `http://127.0.0.1:${firstEnv.PORT}/graphql`;
      const last = await postGraphQL(url1, InvoiceByIdDocument, { id: '100000' });
      assert.equal(last.data?.invoice?.id, '100000', 'the demo data has 100,000 invoices');
      const created = await postGraphQL(url1, CreateInvoiceDocument, { input: { issuerId: '1', receiverId: '2', amountUsd: '1.23' } });
      createdId = created.data!.createInvoice.id;

      // The README's psql line, through node-postgres: scored and pushed to a subscriber.
      await eventually(async () => ((await (await fetch(new URL('/readyz', url1))).json()) as { feed: { state: string } }).feed.state === 'streaming', 'the feed');
      const client = connect(url1);
      const sub = subscribe(client, RiskScoredIdsDocument, { after: encodeSeqCursor('live', '0') });
      const psql = new pg.Client({ connectionString: `postgres://postgres:gateway@127.0.0.1:${firstEnv.EMBEDDED_PG_PORT}/invoices` });
      await psql.connect();
      const { rows } = await psql.query('insert into invoices (issuer_id, receiver_id, amount_usd) values (1, 2, 999.90) returning invoice_id::text AS id');
      await psql.end();
      await eventually(() => sub.events.some((e) => e.riskScored.invoiceId === rows[0].id), 'the score of the psql insert', 30_000);
      await client.dispose();
    } finally {
      await stopped(first);
    }
    assert.equal(first.child.exitCode, 0, first.output());

    const secondEnv = { DATA_DIR: dir, ...(await ports()) };
    const second = spawnGateway(secondEnv);
    try {
      await second.waitFor(/gateway listening/, STARTED);
      assert.doesNotMatch(second.output(), /seeding demo data|initialising embedded Postgres/);
      const kept = await postGraphQL(`http://127.0.0.1:${secondEnv.PORT}/graphql`, InvoiceByIdDocument, { id: createdId });
      assert.equal(kept.data?.invoice?.amountUsd, '1.23');
      // The lake under DATA_DIR, exported on the first start: invoiceStats answers from it.
      await eventually(
        async () => {
          const stats = await postGraphQL(`http://127.0.0.1:${secondEnv.PORT}/graphql`, InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, first: 5 });
          return stats.data?.invoiceStats.freshness.engine === 'LAKE' && stats.data.invoiceStats.rows.length === 5;
        },
        'invoiceStats from the embedded lake',
        30_000,
      );
    } finally {
      await stopped(second);
    }
    assert.equal(second.child.exitCode, 0, second.output());
  });

  it('serves with an object store that is down at start: lookups, and analytics from Postgres until a first export', async () => {
    const [deadPort] = await freePorts(1);
    const env = {
      DATA_DIR: dataDir('store-down'),
      ...(await ports()),
      S3_ENDPOINT: `http://127.0.0.1:${deadPort}`, S3_BUCKET: 'lake', S3_REGION: 'us-east-1', S3_ACCESS_KEY_ID: 'x', S3_SECRET_ACCESS_KEY: 'y',
    };
    const gateway = spawnGateway(env);
    try {
      await gateway.waitFor(/writing the sample datasets failed/, STARTED);
      const url = `http://127.0.0.1:${env.PORT}/graphql`;
      assert.equal((await postGraphQL(url, InvoiceByIdDocument, { id: '7' })).data?.invoice?.id, '7');
      const stats = await postGraphQL(url, InvoiceStatsDocument, { groupBy: 'ISSUER', months: 12, first: 5 });
      assert.equal(stats.data?.invoiceStats.freshness.engine, 'POSTGRES', JSON.stringify(stats));
      assert.deepEqual(stats.data.invoiceStats.warnings.map((w) => w.code), ['LAKE_NOT_READY']);
    } finally {
      await stopped(gateway);
    }
    assert.equal(gateway.child.exitCode, 0, gateway.output());
  });

  it('names a taken port in one line, with the setting that changes it', async () => {
    const env = { DATA_DIR: dataDir('port-taken'), ...(await ports()) };
    const squatter = net.createServer();
    await new Promise<void>((resolve) => squatter.listen(Number(env.EMBEDDED_PG_PORT), '127.0.0.1', resolve));
    try {
      const gateway = spawnGateway(env);
      assert.equal(await gateway.exited, 1);
      assert.equal(failureLine(gateway), `gateway failed to start: port ${env.EMBEDDED_PG_PORT} is in use; set EMBEDDED_PG_PORT to a free port`);
      assert.doesNotMatch(gateway.output(), /TypeError|at .*\.js:\d+/);
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });

  it('names the other gateway using the same DATA_DIR, with its pid', async () => {
    const dir = dataDir('shared');
    const first = spawnGateway({ DATA_DIR: dir, ...(await ports()) });
    try {
      await first.waitFor(/gateway listening/, STARTED);
      const second = spawnGateway({ DATA_DIR: dir, ...(await ports()) });
      assert.equal(await second.exited, 1);
      const location = existsSync(path.join(dir, 'pg.location')) ? (await readFile(path.join(dir, 'pg.location'), 'utf8')).trim() : path.join(dir, 'pg');
      assert.equal(
        failureLine(second),
        `gateway failed to start: another gateway (pid ${first.child.pid}) is using ${location}; stop it, or set DATA_DIR to another directory`,
      );
      const still = await postGraphQL(`http://127.0.0.1:${(first.output().match(/"url":"http:\/\/127\.0\.0\.1:(\d+)/) ?? [])[1]}/graphql`, InvoiceByIdDocument, { id: '1' });
      assert.equal(still.data?.invoice?.id, '1', 'the first gateway is unaffected');
    } finally {
      await stopped(first);
    }
  });
});

/**
 * The README's two commands in a clone the postgres user cannot enter (a mode-700 directory, as
 * root's home usually is), with `npm start` signalled the way process managers do it.
 */
describe('npm start from a mode-700 checkout, stopped by signals to npm', () => {
  let home: string;
  let checkout: string;

  before(async () => {
    home = await mkdtemp(path.join(tmpdir(), 'ig-home-'));
    await chmod(home, 0o700);
    checkout = await copyCheckout(path.join(home, 'invoice-gateway'));
  });

  after(async () => {
    await removeEmbeddedData(path.join(checkout, '.data'));
    await rm(home, { recursive: true, force: true });
  });

  const npmStart = async () => {
    const env = await ports();
    const gateway = spawnGateway(env, { cwd: checkout, command: ['npm', 'start'] });
    await gateway.waitFor(/gateway listening/, STARTED);
    return { gateway, env, url: `http://127.0.0.1:${env.PORT}/graphql` };
  };

  it('serves, keeps its data across restarts, and SIGTERM or SIGINT to npm stops everything', async () => {
    const first = await npmStart();
    let createdId: string;
    let pid: number;
    try {
      if (asRoot) {
        const moved = /the postgres user cannot enter (\S+); the embedded Postgres keeps its binaries and data in (\S+)"/.exec(first.gateway.output());
        assert.ok(moved, `the new location is logged:\n${first.gateway.output()}`);
        assert.ok(moved[2]!.startsWith('/var/lib/invoice-gateway/'));
      }
      const created = await postGraphQL(first.url, CreateInvoiceDocument, { input: { issuerId: '3', receiverId: '4', amountUsd: '42.00' } });
      createdId = created.data!.createInvoice.id;
      pid = gatewayPid(first.gateway);
      first.gateway.child.kill('SIGTERM');
      await first.gateway.exited;
    } finally {
      await stopped(first.gateway, 'SIGKILL');
    }
    assert.match(first.gateway.output(), /"msg":"shutdown complete"/);
    assert.equal(alive(pid), false, 'the gateway process is gone');
    assert.equal(await listening(first.env.EMBEDDED_PG_PORT), false, 'its Postgres is gone');

    const second = await npmStart();
    try {
      assert.doesNotMatch(second.gateway.output(), /seeding demo data|initialising embedded Postgres/);
      const kept = await postGraphQL(second.url, InvoiceByIdDocument, { id: createdId });
      assert.equal(kept.data?.invoice?.amountUsd, '42.00');
      pid = gatewayPid(second.gateway);
      second.gateway.child.kill('SIGINT');
      await second.gateway.exited;
    } finally {
      await stopped(second.gateway, 'SIGKILL');
    }
    assert.match(second.gateway.output(), /"msg":"shutdown complete"/);
    assert.equal(alive(pid), false);
    assert.equal(await listening(second.env.EMBEDDED_PG_PORT), false);
  });

  it('when npm itself is killed (SIGKILL), the gateway notices and stops with its Postgres', async () => {
    const { gateway, env } = await npmStart();
    const pid = gatewayPid(gateway);
    gateway.child.kill('SIGKILL');
    // The gateway holds the pipe npm handed it, so the pipe closes when the gateway is gone, and
    // everything it wrote has been read by then (polling its pid alone could stop before that).
    await Promise.race([gateway.closed, new Promise((r) => setTimeout(r, 15_000))]);
    for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(gateway.output(), /"signal":"parent exited".*"msg":"shutdown complete"/);
    assert.equal(alive(pid), false, 'the orphaned gateway stopped');
    assert.equal(await listening(env.EMBEDDED_PG_PORT), false, 'and stopped its Postgres');
  });
});
