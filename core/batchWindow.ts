import { Deferred } from './deferred.js';

/**
 * One batch window for the whole process, beneath the per-request DataLoaders: the keys every
 * request asks for until the event loop next turns (setImmediate: after the I/O callbacks of this
 * turn, so requests that arrived together are merged, and a lone request waits for nothing) go
 * to `fetch` as one call, each key once. A key already being fetched joins that fetch: concurrent
 * requests for one row read it once.
 *
 * A key whose row changed (`forget`) is not joined any more: a request that begins after the
 * change must not be handed a read that began before it.
 */
export interface BatchWindow<V> {
  (keys: readonly string[]): Promise<V[]>;
  /** Later callers of these keys (all keys: `undefined`) fetch afresh instead of joining a fetch in flight. */
  forget(keys?: readonly string[]): void;
}

export function createBatchWindow<V>(
  fetch: (keys: readonly string[]) => Promise<readonly V[]>,
  { maxBatchSize, onJoined }: { maxBatchSize: number; onJoined?: (keys: number) => void },
): BatchWindow<V> {
  const inFlight = new Map<string, Promise<V>>();
  let queued: Map<string, Deferred<V>> | undefined;

  function flush(batch: Map<string, Deferred<V>>) {
    const keys = [...batch.keys()];
    for (let start = 0; start < keys.length; start += maxBatchSize) {
      const chunk = keys.slice(start, start + maxBatchSize);
      // Through a promise, so that a fetch throwing at once still settles its callers.
      Promise.resolve(chunk).then(fetch).then(
        (values) => {
          chunk.forEach((key, i) => {
            const deferred = batch.get(key)!;
            if (inFlight.get(key) === deferred.promise) inFlight.delete(key);
            deferred.resolve(values[i]!);
          });
        },
        (err: unknown) => {
          for (const key of chunk) {
            const deferred = batch.get(key)!;
            if (inFlight.get(key) === deferred.promise) inFlight.delete(key);
            deferred.reject(err);
          }
        },
      );
    }
  }

  const load = (keys: readonly string[]) => {
    let joined = 0;
    const promises = keys.map((key) => {
      // A queued key has not been fetched yet, so joining it is fresh even after forget().
      const running = queued?.get(key)?.promise ?? inFlight.get(key);
      if (running) {
        joined++;
        return running;
      }
      if (!queued) {
        const batch = (queued = new Map());
        setImmediate(() => {
          queued = undefined;
          flush(batch);
        });
      }
      const deferred = new Deferred<V>();
      queued.set(key, deferred);
      inFlight.set(key, deferred.promise);
      return deferred.promise;
    });
    if (joined > 0) onJoined?.(joined);
    return Promise.all(promises);
  };
  return Object.assign(load, {
    forget(keys?: readonly string[]) {
      if (keys === undefined) inFlight.clear();
      else for (const key of keys) inFlight.delete(key);
    },
  });
}
