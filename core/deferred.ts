/** A promise with its resolve and reject at hand, for a result settled elsewhere than where it is awaited. */
export class Deferred<V> {
  resolve!: (value: V) => void;
  reject!: (reason: unknown) => void;
  readonly promise = new Promise<V>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
}
