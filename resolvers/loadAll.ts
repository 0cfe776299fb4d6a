/** loadMany, but a failed batch fails the field (DataLoader puts the Error in each slot). */
export async function loadAll<T>(loader: { loadMany(keys: readonly string[]): Promise<(T | Error)[]> }, keys: string[]): Promise<T[]> {
  const values = await loader.loadMany(keys);
  const failed = values.find((v): v is Error => v instanceof Error);
  if (failed) throw failed;
  return values as T[];
}
