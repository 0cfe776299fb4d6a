import { createHash } from 'node:crypto';
import { access, mkdir, readdir, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { processGone } from '../../core/processes.js';
import { ObjectNotFoundError, type ObjectStore } from './objectStore.js';

/**
 * Local copies of objects, for DuckDB to read (it cannot reach S3 here: no httpfs). A copy is
 * named after bucket, key and ETag, so a replaced object is fetched again and never served
 * stale; concurrent requests for one copy share one download; the directory is kept under
 * `maxBytes`, least recently used first, except copies used within `inUseMs` (a query that
 * fetched them may still be about to open them): past the limit for a while rather than a
 * query failing on a file deleted under it. A local store's files are read in place.
 */
export interface ObjectCache {
  /** A local path holding the object's content at `etag` (fetched if needed). */
  fetch(store: ObjectStore, key: string, etag: string): Promise<string>;
  /** Bytes held now. */
  size(): number;
}

interface Entry {
  readonly file: string;
  size: number;
  usedAt: number;
}

export async function createObjectCache(options: { dir: string; maxBytes: number; inUseMs: number }): Promise<ObjectCache> {
  await mkdir(options.dir, { recursive: true });
  const entries = new Map<string, Entry>();
  let total = 0;
  // What an earlier process left: kept, counted, evicted like anything else. A partial download
  // is removed only if its process is gone: another gateway on this DATA_DIR may be writing it.
  for (const name of await readdir(options.dir)) {
    const file = path.join(options.dir, name);
    const partial = /\.(\d+)\.part$/.exec(name);
    if (partial) {
      if (processGone(Number(partial[1]))) await rm(file, { force: true });
      continue;
    }
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) continue;
    entries.set(file, { file, size: info.size, usedAt: info.atimeMs });
    total += info.size;
  }
  const downloads = new Map<string, Promise<string>>();

  async function evict() {
    if (total <= options.maxBytes) return;
    const inUseSince = Date.now() - options.inUseMs;
    for (const entry of [...entries.values()].sort((a, b) => a.usedAt - b.usedAt)) {
      if (total <= options.maxBytes || entry.usedAt >= inUseSince) break;
      // Removed by another eviction while this one awaited, or fetched again since: not this entry's to count.
      if (entries.get(entry.file) !== entry) continue;
      entries.delete(entry.file);
      total -= entry.size;
      // A reader that has the file open keeps reading it: unlinking does not cut it off.
      await rm(entry.file, { force: true });
    }
  }

  return {
    async fetch(store, key, etag) {
      if (store.localPath) {
        const local = store.localPath(key);
        // As a download of a missing object fails: DuckDB's own error on a missing file says nothing the engine can act on.
        await access(local).catch((err: unknown) => {
          throw new ObjectNotFoundError('no such object', { cause: err });
        });
        return local;
      }
      const name = createHash('sha256').update(`${store.location}\u0000${key}\u0000${etag}`).digest('hex').slice(0, 40);
      const file = path.join(options.dir, `${name}${path.extname(key) || '.bin'}`);
      const known = entries.get(file);
      if (known) {
        known.usedAt = Date.now();
        // Also proves the copy is there: another process sharing the directory may have evicted it.
        const there = await utimes(file, new Date(), new Date()).then(
          () => true,
          () => false,
        );
        if (there) return file;
        if (entries.get(file) === known) {
          entries.delete(file);
          total -= known.size;
        }
      }
      let pending = downloads.get(file);
      if (!pending) {
        pending = (async () => {
          const object = await store.download(key, file);
          entries.set(file, { file, size: object.size, usedAt: Date.now() });
          total += object.size;
          await evict();
          return file;
        })().finally(() => downloads.delete(file));
        downloads.set(file, pending);
      }
      return pending;
    },
    size: () => total,
  };
}
