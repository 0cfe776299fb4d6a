/**
 * Maps each value; return() and throw() reach the source at once, so a subscription's listener
 * is released when its client leaves, not at the next event.
 */
export function transformIterator<T>(source: AsyncIterator<unknown>, map: (value: unknown) => T | Promise<T>): AsyncIterableIterator<T> {
  const iterator: AsyncIterableIterator<T> = {
    async next() {
      const step = await source.next();
      if (step.done) return { value: undefined, done: true };
      return { value: await map(step.value), done: false };
    },
    async return() {
      await source.return?.();
      return { value: undefined, done: true };
    },
    async throw(err: unknown) {
      if (source.throw) await source.throw(err);
      throw err;
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
