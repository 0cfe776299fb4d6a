import type { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';

const { to: copyTo } = copyStreams;

/**
 * Streams `COPY ... TO STDOUT` through `stages` into `destination`. Should they fail (a full disk),
 * the connection is closed: pg-copy-streams' stream, once destroyed, stops reading the socket, so
 * the connection would never be ready again and the transaction's ROLLBACK, its locks and the
 * pool's close would wait for good. `end()` with a statement active destroys the socket; the
 * pool then drops the client (`_ending`).
 */
export async function copyOut(client: pg.PoolClient, sql: string, destination: Writable, ...stages: Transform[]): Promise<void> {
  try {
    await pipeline([client.query(copyTo(sql)), ...stages, destination]);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}
