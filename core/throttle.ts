/**
 * A gate that opens at most once per `intervalMs`: for log lines a flapping dependency would
 * otherwise repeat on every failed call.
 */
export function atMostEvery(intervalMs: number): () => boolean {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < intervalMs) return false;
    last = now;
    return true;
  };
}
