/** What closing needs of an ioredis client (kept structural: core depends on no store's driver). */
interface RedisClient {
  readonly status: string;
  quit(): Promise<unknown>;
  disconnect(): void;
}

/**
 * Closes Redis clients without waiting on a Redis that is away: QUIT on a client that is not
 * connected waits behind its queued commands for as long as Redis stays away, so only a ready
 * client is asked to QUIT; every one is then dropped.
 */
export async function closeRedis(...clients: RedisClient[]): Promise<void> {
  await Promise.allSettled(clients.map((client) => (client.status === 'ready' ? client.quit() : client.disconnect())));
  for (const client of clients) client.disconnect();
}
