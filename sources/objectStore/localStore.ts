import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { assertSafeKey, ObjectNotFoundError, type ObjectStore, type StoredObject } from './objectStore.js';

/**
 * A directory as the lake, for the zero-setting start. Keys are paths below it; the ETag is a
 * hash of the content (computed on write and on first sight), so a replaced file is noticed.
 */
export function createLocalStore(root: string): ObjectStore {
  const base = path.resolve(root);
  const pathOf = (key: string) => {
    assertSafeKey(key);
    return path.join(base, key);
  };
  // The ETag of a file, by path, size and modification time: hashing is done once per version.
  const etags = new Map<string, { size: number; mtimeMs: number; etag: string }>();
  const describe = async (key: string): Promise<StoredObject> => {
    const file = pathOf(key);
    const info = await stat(file);
    let known = etags.get(file);
    if (!known || known.size !== info.size || known.mtimeMs !== info.mtimeMs) {
      known = { size: info.size, mtimeMs: info.mtimeMs, etag: await hashFile(file) };
      etags.set(file, known);
    }
    return { key, etag: known.etag, size: info.size, lastModified: info.mtime };
  };
  const place = async (key: string, write: (staging: string) => Promise<void>) => {
    const target = pathOf(key);
    await mkdir(path.dirname(target), { recursive: true });
    const staging = `${target}.${process.pid}.part`;
    await write(staging);
    // On disk before it is named, and named on disk before the call returns: an export writes its
    // manifest last, so after a power loss the manifest never names a file that was not kept.
    await syncPath(staging, 'r+');
    await rename(staging, target);
    // Where a directory cannot be opened or synced (Windows, some network and FUSE mounts), the
    // rename stands as it is, as Postgres's own fsync_fname allows.
    await syncPath(path.dirname(target), 'r').catch((err: NodeJS.ErrnoException) => {
      if (!['EINVAL', 'EISDIR', 'EPERM', 'EBADF', 'EACCES'].includes(err.code ?? '')) throw err;
    });
    return (await describe(key)).etag;
  };

  return {
    location: base,
    putFile: (key, file) => place(key, (staging) => copyFile(file, staging)),
    putBytes: (key, body) => place(key, (staging) => writeFile(staging, body)),

    async download(key, file) {
      try {
        const object = await describe(key);
        await copyFile(pathOf(key), file);
        return object;
      } catch (err) {
        throw notFound(err);
      }
    },

    async read(key) {
      try {
        return await readFile(pathOf(key));
      } catch (err) {
        throw notFound(err);
      }
    },

    async head(key) {
      try {
        return await describe(key);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },

    async list(prefix) {
      const objects: StoredObject[] = [];
      // Directories and files in parallel: a payments prefix holds a folder per day, a thousand
      // and more, and each costs a readdir and a stat.
      const walk = async (dir: string): Promise<void> => {
        const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
        await Promise.all(
          entries.map(async (entry) => {
            const file = path.join(dir, entry.name);
            if (entry.isDirectory()) return walk(file);
            if (entry.name.endsWith('.part')) return;
            const key = path.relative(base, file).split(path.sep).join('/');
            if (!key.startsWith(prefix)) return;
            const object = await describe(key).catch((err: NodeJS.ErrnoException) => {
              // A file removed between readdir and stat is simply not listed.
              if (err.code !== 'ENOENT') throw err;
            });
            if (object) objects.push(object);
          }),
        );
      };
      // Start from the deepest directory the prefix names, not the whole lake.
      const dir = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
      await walk(path.join(base, dir));
      return objects.sort((a, b) => a.key.localeCompare(b.key));
    },

    async delete(keys) {
      for (const key of keys) {
        await rm(pathOf(key), { force: true });
        // Keys name their generation: every export adds new ones, and the old must go here too.
        etags.delete(pathOf(key));
      }
    },

    localPath: pathOf,
    close: () => undefined,
  };
}

async function syncPath(file: string, flags: 'r' | 'r+'): Promise<void> {
  const handle = await open(file, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('md5');
    createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(`"${hash.digest('hex')}"`))
      .on('error', reject);
  });
}

function notFound(err: unknown): unknown {
  return (err as NodeJS.ErrnoException).code === 'ENOENT' ? new ObjectNotFoundError('no such object', { cause: err }) : err;
}
