/**
 * Maps each value and skips those `map` turns into SKIP; return() and throw() reach the source
 * at once, so a subscription's listener is released when its client leaves, not at the next event.
 */
export const SKIP: unique symbol = Symbol('skip');

export function transformIterator<T>(source: AsyncIterator<unknown>, map: (value: unknown) => T | typeof SKIP | Promise<T>): AsyncIterableIterator<T> {
  const iterator: AsyncIterableIterator<T> = {
    async next() {
      for (;;) {
        const step = await source.next();
        if (step.done) return { value: undefined, done: true };
        const value = await map(step.value);
        if (value !== SKIP) return { value, done: false };
      }
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
