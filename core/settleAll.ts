/**
 * Like Promise.all, but rejects only once every promise has settled, with the failure that came
 * first in time: work still running when one part fails (uploads from a staging directory about
 * to be removed) is not left behind, and the error reported is the one that stopped the rest.
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  let first: { readonly error: unknown } | undefined;
  const results = await Promise.allSettled(
    promises.map((p) =>
      p.catch((error: unknown) => {
        first ??= { error };
        throw error;
      }),
    ),
  );
  if (first) throw first.error;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
