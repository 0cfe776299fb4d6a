/** An object in the store: its key (without the store's prefix) and its content's version. */
export interface StoredObject {
  readonly key: string;
  /** Changes whenever the content does (S3's ETag; a content hash for the local store). */
  readonly etag: string;
  readonly size: number;
  readonly lastModified: Date;
}

/**
 * The lake's object store: any S3-compatible endpoint, or a local directory. Keys are relative
 * to the store's prefix. Failures to reach the store are SERVICE_UNAVAILABLE errors.
 */
export interface ObjectStore {
  /** For logs: s3://bucket/prefix or a directory. Never shown to clients. */
  readonly location: string;
  /** Uploads a local file; returns its ETag. */
  putFile(key: string, file: string): Promise<string>;
  /** Uploads bytes; returns their ETag. */
  putBytes(key: string, body: Buffer | string): Promise<string>;
  /** Downloads an object to `file` (written beside it first, then renamed). */
  download(key: string, file: string): Promise<StoredObject>;
  /** The object's bytes (for small objects: manifests). */
  read(key: string): Promise<Buffer>;
  head(key: string): Promise<StoredObject | undefined>;
  /** Every object under a prefix, all pages. */
  list(prefix: string): Promise<StoredObject[]>;
  delete(keys: readonly string[]): Promise<void>;
  /** A path DuckDB can read directly, when the store is a local directory. */
  localPath?(key: string): string;
  close(): void;
}

/** Object keys must never become DuckDB glob patterns or escape their directory. */
export function assertSafeKey(key: string): void {
  if (!/^[A-Za-z0-9._=/-]+$/.test(key) || key.split('/').some((part) => part === '..' || part === '')) {
    throw new Error(`unsafe object key: ${JSON.stringify(key)}`);
  }
}

/** The object does not exist (a key no longer listed, or never written). */
export class ObjectNotFoundError extends Error {
  override name = 'ObjectNotFoundError';
}
