import pg from 'pg';
import WebSocket from 'ws';
import { percentile } from './stats.js';

/** Invoices inserted as psql would: one autocommit INSERT each, from several connections. */
export interface Writers {
  /** When each inserted invoice's INSERT returned (its commit, seen by the writer), by id. */
  readonly committedAt: Map<string, number>;
  /** Inserts at `perSecond` for `seconds`, spread over the connections; returns the rate reached. */
  atRate(perSecond: number, seconds: number): Promise<number>;
  /** Inserts as fast as the connections can for `seconds`; returns inserts per second. */
  flatOut(seconds: number): Promise<number>;
  close(): Promise<void>;
}

/** Skewed like the seeder: a few issuers send most invoices (u^3 puts a fifth on the top 1%). */
const INSERT = {
  name: 'bench_insert',
  text: `INSERT INTO invoices (issuer_id, receiver_id, amount_usd)
    VALUES (1 + floor($1 * power(random(), 3))::int, 1 + floor($1 * power(random(), 2))::int, round((exp(ln(450) + random() * 2))::numeric, 2))
    RETURNING invoice_id::text AS id`,
};

export async function startWriters(url: string, connections: number, customers: number, record: boolean): Promise<Writers> {
  const clients = await Promise.all(
    Array.from({ length: connections }, async () => {
      const client = new pg.Client({ connectionString: url, application_name: 'bench-writer' });
      await client.connect();
      return client;
    }),
  );
  const committedAt = new Map<string, number>();
  const insert = async (client: pg.Client) => {
    const { rows } = await client.query<{ id: string }>({ ...INSERT, values: [customers] });
    if (record) committedAt.set(rows[0]!.id, performance.now());
  };

  return {
    committedAt,
    async atRate(perSecond, seconds) {
      const total = Math.round(perSecond * seconds);
      const started = performance.now();
      const idle = [...clients];
      const busy = new Set<Promise<void>>();
      for (let i = 0; i < total; i++) {
        // Paced by the schedule, not by the previous insert: a slow commit does not slow the rate.
        const due = started + (i * 1000) / perSecond;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
        while (idle.length === 0) await Promise.race(busy);
        const client = idle.pop()!;
        const work: Promise<void> = insert(client).finally(() => {
          busy.delete(work);
          idle.push(client);
        });
        busy.add(work);
      }
      await Promise.all(busy);
      return total / ((performance.now() - started) / 1000);
    },
    async flatOut(seconds) {
      const until = performance.now() + seconds * 1000;
      let count = 0;
      const started = performance.now();
      await Promise.all(
        clients.map(async (client) => {
          while (performance.now() < until) {
            await insert(client);
            count++;
          }
        }),
      );
      return count / ((performance.now() - started) / 1000);
    },
    async close() {
      await Promise.all(clients.map((c) => c.end()));
    },
  };
}

const SUBSCRIPTION = `subscription ($after: String) {
  riskScored(after: $after) { invoiceId score band cursor reasons { feature contribution } }
}`;

/** Subscribers on their own sockets, recording when each event arrived. */
export interface Subscribers {
  /** Arrival times (performance.now()) by invoice id, one list per subscriber. */
  readonly received: Map<string, number>[];
  /** Resolves once every subscriber has received `ids`. */
  waitFor(ids: Iterable<string>, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Subscribers as raw graphql-transport-ws sockets that read only the invoice id out of each
 * frame: a hundred graphql-ws clients parsing every message in the benchmark's own process
 * were the bottleneck, not the gateway.
 */
export async function startSubscribers(url: string, count: number, after: string): Promise<Subscribers> {
  const received: Map<string, number>[] = [];
  const sockets: WebSocket[] = [];
  await Promise.all(
    Array.from({ length: count }, async () => {
      const socket = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
      const seen = new Map<string, number>();
      received.push(seen);
      sockets.push(socket);
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.once('open', () => socket.send(JSON.stringify({ type: 'connection_init' })));
        socket.on('message', (data: Buffer) => {
          const at = performance.now();
          const text = data.toString('latin1');
          const marker = text.indexOf('"invoiceId":"');
          if (marker !== -1) {
            const start = marker + 13;
            seen.set(text.slice(start, text.indexOf('"', start)), at);
          } else if (text.includes('"connection_ack"')) {
            socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { after } } }));
            resolve();
          } else if (text.includes('"error"')) {
            console.error(`subscriber error: ${text}`);
          }
        });
      });
    }),
  );
  return {
    received,
    async waitFor(ids, timeoutMs) {
      const wanted = [...ids];
      const deadline = Date.now() + timeoutMs;
      while (received.some((seen) => wanted.some((id) => !seen.has(id)))) {
        if (Date.now() > deadline) {
          const missing = received.reduce((n, seen) => n + wanted.filter((id) => !seen.has(id)).length, 0);
          throw new Error(`subscribers still miss ${missing} events after ${timeoutMs} ms`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async close() {
      for (const socket of sockets) socket.close();
    },
  };
}

/** Latency percentiles (ms) from commit (the writer's INSERT returning) to each subscriber's receipt. */
export function latencies(committedAt: Map<string, number>, received: Map<string, number>[]): { p50: number; p95: number; p99: number; max: number; count: number } {
  const values: number[] = [];
  for (const seen of received) {
    for (const [id, at] of seen) {
      const committed = committedAt.get(id);
      if (committed !== undefined) values.push(at - committed);
    }
  }
  return { p50: percentile(values, 0.5), p95: percentile(values, 0.95), p99: percentile(values, 0.99), max: percentile(values, 1), count: values.length };
}
