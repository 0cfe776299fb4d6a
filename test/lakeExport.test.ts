import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { missingServices, type TestDatabase } from './fixtures/services.js';
import type { TestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { spawnGateway } from './fixtures/process.js';
import { startCuttingProxy, type CuttingProxy } from './fixtures/cuttingProxy.js';
import { exportWritten, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { startS3Server, type S3Server } from './fixtures/s3Server.js';
import { allPages, assertExact } from './fixtures/statsCheck.js';

const skip = await missingServices('postgres');
const EXPORT = fileURLToPath(new URL('../server/commands/export.js', import.meta.url));

describe('npm run export (a real process, an S3 lake)', { skip }, () => {
  let s3: S3Server;
  let lakeside: FeedGateway;
  let db: TestDatabase;
  let gw: TestGateway;
  let sql: pg.Pool;
  let dataDir: string;

  before(async () => {
    s3 = await startS3Server();
    // The gateway streams the feed (it records what the lake lacks) and answers queries; the
    // export command is a process of its own on the same database and bucket.
    lakeside = await startFeedGateway('lake_export', { env: s3.env, seed: { customers: 60, invoices: 30_000, months: 14, seed: 3 }, poolMax: 3 });
    ({ db, gw, sql } = lakeside);
    dataDir = await mkdtemp(path.join(tmpdir(), 'ig-export-'));
  });
  after(async () => {
    await lakeside?.stop();
    await s3?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const runExport = (...args: string[]) =>
    spawnGateway({ DATABASE_URL: db.url, DATA_DIR: dataDir, ...s3.env }, { command: [process.execPath, EXPORT, ...args] });

  it('exports with a report of what it wrote, and the gateway answers from it', async () => {
    const run = runExport('--full');
    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /exported generation 1: 30000 rows in [\d.]+ s \(\d+ rows\/s; \d+ files rewritten, 0 appended\) to s3:\/\//);
    const { freshness } = await allPages(gw, { groupBy: 'ISSUER', months: 12, granularity: 'TOTAL', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
    await assertExact(gw, sql, 'after npm run export', [12]);
    const again = runExport();
    assert.equal(await again.exited, 0, again.output());
    assert.match(again.output(), /nothing changed since the last export/);
  });

  it('killed in the middle of an export, leaves the lake whole, readable and exact', async () => {
    await sql.query(`UPDATE invoices SET amount_usd = amount_usd + 1 WHERE invoice_id % 7 = 0`);
    // Killed once the export has written an object, before its manifest.
    const manifests = async () => (await gw.gateway.lake.store.list('manifests/')).map((o) => `${o.key}@${o.etag}`).sort();
    let killedMidway = false;
    for (let attempt = 0; attempt < 5 && !killedMidway; attempt++) {
      const before = new Map((await gw.gateway.lake.store.list('')).map((o) => [o.key, o.lastModified.getTime()]));
      const manifestsBefore = await manifests();
      const run = runExport('--full');
      let written = 0;
      while (run.child.exitCode === null) {
        const objects = await gw.gateway.lake.store.list('');
        written = objects.filter((o) => o.key.endsWith('.parquet') && (before.get(o.key) ?? -1) < o.lastModified.getTime()).length;
        if (written > 0) {
          run.child.kill('SIGKILL');
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await run.exited;
      killedMidway = written > 0 && (await manifests()).join() === manifestsBefore.join();
    }
    assert.ok(killedMidway, 'an export was killed after writing objects and before its manifest');
    // The previous generation still answers, exactly, with the update read live.
    const { freshness } = await allPages(gw, { groupBy: 'RECEIVER', months: 12, granularity: 'TOTAL', first: 10_000 });
    assert.equal(freshness.engine, 'LAKE');
    assert.ok(freshness.liveRows > 0);
    await assertExact(gw, sql, 'after an export was killed', [3, 12]);
    // The killed export's staging (its copies and Parquet files) is left behind.
    const staging = path.join(dataDir, 'lake-staging');
    assert.ok((await readdir(staging)).some((name) => name.startsWith('export-')), 'the killed export left its staging');
    // The next export completes (the killed one's lock is gone with it) and removes that staging.
    const run = runExport();
    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /exported generation \d+/);
    assert.deepEqual((await readdir(staging)).filter((name) => name.startsWith('export-')), [], 'no staging left');
    await assertExact(gw, sql, 'after the next export', [12]);
  });
});

describe('an export whose uploads fail for good', { skip }, () => {
  let s3: S3Server;
  let proxy: CuttingProxy;
  let lakeside: FeedGateway;
  let failing = true;

  before(async () => {
    s3 = await startS3Server();
    // Every upload of the oldest month's issuer rollup is cut as it begins, while the others
    // pass, slowly: months are still waiting to upload when that one has failed for good.
    const cut = (line: string) => (failing && line.startsWith('PUT ') && line.includes(`rollups/issuer/month%3D${FAILING_MONTH}`) ? 0 : undefined);
    proxy = await startCuttingProxy(s3.endpoint, cut, { delayMs: 300 });
    lakeside = await startFeedGateway('lake_upload_failure', { seed: { customers: 30, invoices: 6_000, months: 14, seed: 4 }, env: { ...s3.env, S3_ENDPOINT: proxy.endpoint } });
  });
  after(async () => {
    await lakeside?.stop();
    await proxy?.close();
    await s3?.stop();
  });

  it('fails once the uploads under way have ended, begins no more, and the next export succeeds', async () => {
    // Past outcomes that upload nothing (a feed still catching up).
    const failure = await eventually(() => lakeside.gw.gateway.lake.exportNow().then(() => undefined, (err: unknown) => err as { code?: string }), 'an export to fail');
    assert.equal(failure.code, 'SERVICE_UNAVAILABLE');
    assert.equal(proxy.responses(), proxy.requests.length - proxy.cuts(), 'every upload under way had ended when the export failed');
    // Months go oldest first, four at a time: the newest was not begun.
    assert.ok(!proxy.requests.some((line) => line.startsWith('PUT ') && line.includes(`month%3D${NEWEST_MONTH}`)), 'no month begun after the failure');
    assert.ok(proxy.cuts() >= 3, `the month's upload was tried again (${proxy.cuts()} cuts)`);
    const uploads = proxy.requests.filter((line) => line.startsWith('PUT ')).length;
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(proxy.requests.filter((line) => line.startsWith('PUT ')).length, uploads, 'no upload after the export failed');
    failing = false;
    const exported = await exportWritten(lakeside.gw);
    assert.equal(exported.rows, 6_000);
    await assertExact(lakeside.gw, lakeside.sql, 'after an export that failed', [12]);
  });
});

/** The oldest month the seeded data has (14 months, the current one included): uploaded first. */
const FAILING_MONTH = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() - 13, 1)).toISOString().slice(0, 7);
const NEWEST_MONTH = new Date().toISOString().slice(0, 7);
