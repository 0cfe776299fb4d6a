import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, readlink, rm, utimes, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { createDuck, type Duck } from '../sources/duckdb/duckdb.js';
import { createObjectCache } from '../sources/objectStore/objectCache.js';
import type { ObjectStore } from '../sources/objectStore/objectStore.js';
import { createS3Store } from '../sources/objectStore/s3Store.js';
import { startCuttingProxy, type CuttingProxy } from './fixtures/cuttingProxy.js';
import { s3StoreOf, startS3Server, type S3Server } from './fixtures/s3Server.js';

describe('the object store and its local cache (a real S3 protocol server)', () => {
  let s3: S3Server;
  let store: ObjectStore;
  let dir: string;

  before(async () => {
    s3 = await startS3Server();
    store = s3StoreOf(s3, 'p/');
    dir = await mkdtemp(path.join(tmpdir(), 'ig-cache-'));
  });
  after(async () => {
    store?.close();
    await s3?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists, reads and deletes under its prefix', async () => {
    await store.putBytes('a/one.txt', 'one');
    await store.putBytes('a/two.txt', 'two');
    assert.deepEqual((await store.list('a/')).map((o) => o.key).sort(), ['a/one.txt', 'a/two.txt']);
    assert.equal(String(await store.read('a/two.txt')), 'two');
    assert.equal(await store.head('a/none.txt'), undefined);
    await store.delete(['a/one.txt', 'a/two.txt']);
    assert.deepEqual(await store.list('a/'), []);
  });

  it('keys the cache on ETag (a replaced object is fetched again) and shares one download', async () => {
    const cache = await createObjectCache({ dir, maxBytes: 1 << 20, inUseMs: 30_000 });
    const first = await store.putBytes('b/obj.txt', 'first version');
    let downloads = 0;
    const counted: ObjectStore = { ...store, download: (key, file) => (downloads++, store.download(key, file)) };
    const [x, y] = await Promise.all([cache.fetch(counted, 'b/obj.txt', first), cache.fetch(counted, 'b/obj.txt', first)]);
    assert.equal(x, y);
    assert.equal(downloads, 1, 'concurrent fetches of one object share one download');
    await cache.fetch(counted, 'b/obj.txt', first);
    assert.equal(downloads, 1, 'a cached object is not fetched again');
    assert.equal(await readFile(x, 'utf8'), 'first version');
    const second = await store.putBytes('b/obj.txt', 'second version');
    assert.notEqual(second, first);
    assert.equal(await readFile(await cache.fetch(store, 'b/obj.txt', second), 'utf8'), 'second version');
  });

  it('shares its directory with other processes: their downloads in progress and their evictions', async () => {
    const shared = await mkdtemp(path.join(tmpdir(), 'ig-cache-'));
    try {
      const etag = await store.putBytes('d/obj.txt', 'shared');
      const first = await createObjectCache({ dir: shared, maxBytes: 1 << 20, inUseMs: 30_000 });
      const file = await first.fetch(store, 'd/obj.txt', etag);
      // Another process on the directory evicts the copy: it is fetched again, not handed out missing.
      await rm(file);
      assert.equal(await readFile(await first.fetch(store, 'd/obj.txt', etag), 'utf8'), 'shared');
      // A process starting on the directory removes partial downloads of processes that are gone,
      // not those of a live one (this process stands for it).
      const ended = spawnSync(process.execPath, ['-e', '']).pid;
      const gone = path.join(shared, `a.parquet.${ended}.part`);
      const live = path.join(shared, `b.parquet.${process.pid}.part`);
      for (const partial of [gone, live]) await writeFile(partial, 'partial');
      await createObjectCache({ dir: shared, maxBytes: 1 << 20, inUseMs: 30_000 });
      assert.deepEqual([existsSync(gone), existsSync(live)], [false, true]);
    } finally {
      await rm(shared, { recursive: true, force: true });
    }
  });

  it('evicts the least recently used copies past maxBytes, but none a query may still be opening', async () => {
    const small = await mkdtemp(path.join(tmpdir(), 'ig-cache-'));
    try {
      const kb = 'x'.repeat(1024);
      const etags = [];
      for (const name of ['c1', 'c2', 'c3']) etags.push(await store.putBytes(`c/${name}.txt`, kb));
      // All three just used: kept although they exceed the limit.
      const busy = await createObjectCache({ dir: small, maxBytes: 2048, inUseMs: 60_000 });
      const files = [];
      for (const [i, name] of ['c1', 'c2', 'c3'].entries()) files.push(await busy.fetch(store, `c/${name}.txt`, etags[i]!));
      assert.equal(busy.size(), 3072);
      for (const file of files) await readFile(file);
      // Use times a second apart, c1 the oldest: copies fetched in one millisecond would tie.
      const now = Date.now() / 1000;
      for (const [i, file] of files.entries()) await utimes(file, now - 10 + i, now - 10 + i);
      // Nothing in use: the oldest goes.
      const idle = await createObjectCache({ dir: small, maxBytes: 2048, inUseMs: 0 });
      const c4 = await store.putBytes('c/c4.txt', kb).then((etag) => idle.fetch(store, 'c/c4.txt', etag));
      assert.ok(idle.size() <= 2048, `held ${idle.size()} bytes`);
      assert.equal(await readFile(c4, 'utf8'), kb, 'the copy just fetched is kept');
      assert.equal(existsSync(files[0]!), false, 'the least recently used copy (c1) is gone');
    } finally {
      await rm(small, { recursive: true, force: true });
    }
  });

  it('a store that accepts connections and never answers is SERVICE_UNAVAILABLE once silent too long', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const store = createS3Store({
      endpoint: `http://127.0.0.1:${port}`, bucket: 'silent', region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' },
      forcePathStyle: true, prefix: '', silentMs: 300,
    });
    try {
      const started = performance.now();
      await assert.rejects(store.read('manifests/latest.json'), (err: { code?: string }) => err.code === 'SERVICE_UNAVAILABLE');
      await assert.rejects(store.download('invoices/a.parquet', path.join(tmpdir(), `ig-silent-${process.pid}.parquet`)), (err: { code?: string }) => err.code === 'SERVICE_UNAVAILABLE');
      // Two requests, each tried twice (maxAttempts), each given up after 300 ms of silence.
      assert.ok(performance.now() - started < 10_000, 'given up, not waited for');
    } finally {
      store.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  const flakyStore = (proxy: CuttingProxy) =>
    createS3Store({
      endpoint: proxy.endpoint, bucket: s3.bucket, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      forcePathStyle: true, prefix: 'p/', silentMs: 5_000,
    });
  const firstUploadCut = (requestLine: string, cuts: () => number) => (requestLine.startsWith('PUT ') && cuts() === 0 ? 200_000 : undefined);

  it('uploads a file again, from its start, when the connection drops in the middle of its body', async () => {
    const proxy: CuttingProxy = await startCuttingProxy(s3.endpoint, (line) => firstUploadCut(line, () => proxy.cuts()));
    const flaky = flakyStore(proxy);
    const file = path.join(dir, 'upload.bin');
    const body = randomBytes(1 << 20);
    await writeFile(file, body);
    try {
      await flaky.putFile('c/upload.bin', file);
      assert.equal(proxy.cuts(), 1, 'the first upload was cut');
      assert.ok((await store.read('c/upload.bin')).equals(body), 'the stored object is the whole file');
      assert.equal(await openedTimes(file), 0, 'the cut attempt closed its file');
    } finally {
      flaky.close();
      await proxy.close();
    }
  });

  it('fails an upload whose file is gone before it is tried again, without an uncaught error', async () => {
    const file = path.join(dir, 'removed.bin');
    await writeFile(file, randomBytes(1 << 20));
    // Cut, then the file removed (as an export's staging is when another upload failed).
    const proxy: CuttingProxy = await startCuttingProxy(s3.endpoint, (line) => firstUploadCut(line, () => proxy.cuts()), { onCut: () => void rm(file, { force: true }) });
    const flaky = flakyStore(proxy);
    try {
      await assert.rejects(flaky.putFile('c/removed.bin', file), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
      assert.equal(proxy.cuts(), 1);
      assert.equal(await openedTimes(file), 0, 'the cut attempt closed its file');
    } finally {
      flaky.close();
      await proxy.close();
    }
  });

  it('an unreachable store is SERVICE_UNAVAILABLE, not a stack trace', async () => {
    const dead = createS3Store({ endpoint: 'http://127.0.0.1:1', bucket: 'nope', region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'y' }, forcePathStyle: true, prefix: '' });
    try {
      await assert.rejects(dead.list(''), (err: { code?: string }) => err.code === 'SERVICE_UNAVAILABLE');
    } finally {
      dead.close();
    }
  });
});

describe('DuckDB time limit', () => {
  let duck: Duck;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'ig-duck-'));
    duck = await createDuck({ memoryLimit: '256MB', threads: 1, tempDir: dir }, pino({ level: 'silent' }));
  });
  after(async () => {
    duck?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a statement begun after the limit passed while nothing ran (an interrupt then stops nothing)', async () => {
    await assert.rejects(
      duck.session(
        async (s) => {
          // Waiting on something else (a download, a table another query makes) past the limit.
          await new Promise((resolve) => setTimeout(resolve, 300));
          return s.all('SELECT 42 AS answer');
        },
        { timeoutMs: 100, label: 'late' },
      ),
      (err: { code?: string }) => err.code === 'UPSTREAM_TIMEOUT',
    );
    assert.deepEqual(await duck.session((s) => s.all<{ answer: number }>('SELECT 42 AS answer'), { timeoutMs: 1_000, label: 'next' }), [{ answer: 42 }]);
  });

  it('interrupts a query past its limit with UPSTREAM_TIMEOUT, and serves the next one', async () => {
    const started = performance.now();
    await assert.rejects(
      duck.session((s) => s.all('SELECT count(*) FROM range(1000000000000) t(a) WHERE a % 7 = 3'), { timeoutMs: 200, label: 'endless' }),
      (err: { code?: string }) => err.code === 'UPSTREAM_TIMEOUT',
    );
    assert.ok(performance.now() - started < 10_000, 'interrupted, not run to the end');
    const [row] = await duck.session((s) => s.all<{ n: string }>('SELECT 41 + 1 AS n'), { timeoutMs: 5_000, label: 'next' });
    assert.equal(Number(row!.n), 42);
  });

  it('counts the wait for a connection in the time limit', async () => {
    // Two slots (threads: 1 gives the minimum of 2), both held by long queries.
    const long = (label: string) => duck.session((s) => s.all('SELECT count(*) FROM range(1000000000000) t(a) WHERE a % 7 = 3'), { timeoutMs: 1_500, label });
    const holders = [long('a'), long('b')];
    const started = performance.now();
    await assert.rejects(
      duck.session((s) => s.all('SELECT 1'), { timeoutMs: 200, label: 'queued' }),
      (err: { code?: string }) => err.code === 'UPSTREAM_TIMEOUT',
    );
    assert.ok(performance.now() - started < 1_400, 'refused at its own limit, not when a slot came free');
    await Promise.allSettled(holders);
  });
});

/** How many of this process's file descriptors are open on `file` (Linux: /proc/self/fd). */
async function openedTimes(file: string): Promise<number> {
  const links = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return links.filter((link) => link === file || link === `${file} (deleted)`).length;
}
