/**
 * Like Promise.all, but rejects only once every promise has settled, with the first failure:
 * work still running when one part fails (uploads from a staging directory about to be
 * removed) is not left behind.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
