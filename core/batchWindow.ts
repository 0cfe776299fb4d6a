/**
 * One batch window for the whole process, beneath the per-request DataLoaders: the keys every
 * request asks for until the event loop next turns (setImmediate: after the I/O callbacks of this
 * turn, so requests that arrived together are merged, and a lone request waits for nothing) go
 * to `fetch` as one call, each key once. A key already being fetched joins that fetch: concurrent
 * requests for one row read it once.
 *
 * Joining is safe for freshness because the fetch was issued while the joining request was
 * already running: its answer is one the request could have got by itself.
 */
export function createBatchWindow<V>(
  fetch: (keys: readonly string[]) => Promise<readonly V[]>,
  { maxBatchSize, onJoined }: { maxBatchSize: number; onJoined?: (keys: number) => void },
): (keys: readonly string[]) => Promise<V[]> {
  const inFlight = new Map<string, Promise<V>>();
  let queued: Map<string, Deferred<V>> | undefined;

  function flush(batch: Map<string, Deferred<V>>) {
    const keys = [...batch.keys()];
    for (let start = 0; start < keys.length; start += maxBatchSize) {
      const chunk = keys.slice(start, start + maxBatchSize);
      fetch(chunk).then(
        (values) => {
          chunk.forEach((key, i) => {
            inFlight.delete(key);
            batch.get(key)!.resolve(values[i]!);
          });
        },
        (err: unknown) => {
          for (const key of chunk) {
            inFlight.delete(key);
            batch.get(key)!.reject(err);
          }
        },
      );
    }
  }

  return (keys) => {
    let joined = 0;
    const promises = keys.map((key) => {
      const running = inFlight.get(key);
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
}

class Deferred<V> {
  resolve!: (value: V) => void;
  reject!: (reason: unknown) => void;
  readonly promise = new Promise<V>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
}
