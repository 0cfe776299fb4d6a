import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { PublicError, serviceUnavailable } from '../../core/errors.js';
import { ObjectNotFoundError, type ObjectStore, type StoredObject } from './objectStore.js';

export interface S3StoreOptions {
  readonly endpoint: string | undefined;
  readonly bucket: string;
  readonly region: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  readonly forcePathStyle: boolean;
  /** Prefix of every key in the bucket ('' or ending with /). */
  readonly prefix: string;
  /**
   * A request whose connection stays silent this long fails (SERVICE_UNAVAILABLE). Without it a
   * store that accepts connections and never answers held every query waiting on its manifest
   * or files, with their transactions and DuckDB slots, for good. Default 30 s.
   */
  readonly silentMs?: number;
}

/** Any S3-compatible store through the AWS SDK (AWS S3, MinIO, R2; s3rver in tests). */
export function createS3Store(options: S3StoreOptions): ObjectStore {
  const client = new S3Client({
    endpoint: options.endpoint,
    region: options.region,
    // A copy: the SDK tags the credentials object it is given, and the config's is frozen.
    credentials: options.credentials && { ...options.credentials },
    forcePathStyle: options.forcePathStyle,
    // Checksums only where the API requires them: the SDK's default streams bodies as
    // aws-chunked, which some S3-compatible servers store verbatim.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 2,
    requestHandler: new NodeHttpHandler({ connectionTimeout: 3_000, requestTimeout: 60_000, socketTimeout: options.silentMs ?? 30_000 }),
  });
  const bucket = options.bucket;
  const full = (key: string) => `${options.prefix}${key}`;
  const relative = (key: string) => key.slice(options.prefix.length);

  return {
    location: `s3://${bucket}/${options.prefix}`,

    async putFile(key, file) {
      const { size } = await stat(file);
      // The SDK cannot retry a request whose body stream it has read (it gives up, "non-retryable
      // streaming request"), so a connection dropped mid-upload is retried here, from a new stream.
      for (let attempt = 1; ; attempt++) {
        // The SDK pipes the body without listening for its errors: a file that cannot be read
        // (removed meanwhile) would be an uncaught exception. Its error ends the request instead.
        const body = createReadStream(file);
        const aborted = new AbortController();
        let unreadable: Error | undefined;
        body.once('error', (err) => {
          unreadable = err;
          aborted.abort(err);
        });
        try {
          const out = await client.send(new PutObjectCommand({ Bucket: bucket, Key: full(key), Body: body, ContentLength: size }), { abortSignal: aborted.signal });
          return out.ETag ?? '';
        } catch (err) {
          if (unreadable) throw unreadable;
          const failure = translate(err);
          if (attempt >= UPLOAD_ATTEMPTS || !isUnavailable(failure)) throw failure;
          await sleep(100 * 2 ** attempt);
        } finally {
          // A request that failed before reading its body to the end leaves the file open.
          body.destroy();
        }
      }
    },

    async putBytes(key, body) {
      const out = await call(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: full(key), Body: body })));
      return out.ETag ?? '';
    },

    async download(key, file) {
      const out = await call(() => client.send(new GetObjectCommand({ Bucket: bucket, Key: full(key) })));
      const staging = `${file}.${process.pid}.part`;
      try {
        await pipeline(out.Body as Readable, createWriteStream(staging));
        await rename(staging, file);
      } catch (err) {
        await rm(staging, { force: true });
        throw translate(err);
      }
      return { key, etag: out.ETag ?? '', size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0) };
    },

    async read(key) {
      // The body too: a connection dropped while it streams is the store's failure, translated.
      return call(async () => {
        const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: full(key) }));
        return Buffer.from(await out.Body!.transformToByteArray());
      });
    },

    async head(key) {
      try {
        const out = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: full(key) }));
        return { key, etag: out.ETag ?? '', size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0) };
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw translate(err);
      }
    },

    async list(prefix) {
      const objects: StoredObject[] = [];
      let token: string | undefined;
      do {
        const page = await call(() => client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: full(prefix), ContinuationToken: token })));
        for (const o of page.Contents ?? []) {
          objects.push({ key: relative(o.Key!), etag: o.ETag ?? '', size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return objects;
    },

    async delete(keys) {
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000).map((key) => ({ Key: full(key) }));
        await call(() => client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } })));
      }
    },

    close: () => client.destroy(),
  };
}

async function call<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw translate(err);
  }
}

/** Tries of one file's upload, each from a new read of the file. */
const UPLOAD_ATTEMPTS = 3;

function isUnavailable(err: unknown): boolean {
  return err instanceof PublicError && err.code === 'SERVICE_UNAVAILABLE';
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}

/**
 * A store that cannot be reached, does not answer (a connection that times out or stays
 * silent), or answers with a server error, is unavailable; a missing object is
 * ObjectNotFoundError; anything else (access denied, a bad bucket) is rethrown as is and masked
 * for clients.
 */
function translate(err: unknown): unknown {
  if (isNotFound(err)) return new ObjectNotFoundError('no such object', { cause: err });
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  const network = ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN', 'EPIPE', 'ETIMEDOUT'].includes(e.code ?? '') || e.name === 'TimeoutError';
  if (network || (err instanceof S3ServiceException && status !== undefined && status >= 500) || e.name === 'ServiceUnavailable') {
    return serviceUnavailable('The object store', err);
  }
  return err;
}
