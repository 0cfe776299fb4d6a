import { randomInt } from 'node:crypto';
import { print } from 'graphql';
import pg from 'pg';
import type { Redis } from 'ioredis';
import { BenchInvoiceDocument, BenchInvoicesWithPartiesDocument, type BenchInvoiceQuery, type BenchInvoicesWithPartiesQuery } from '../test/generated/graphql.js';
import type { BenchData } from './benchDatabase.js';
import { WARM_BATCH } from './lookupSettings.js';
import { scrapeMetrics } from './metricsScrape.js';

/** The lookup benchmark's operations and its reads and writes outside the servers under test. */

export const GATEWAY_ONE = print(BenchInvoiceDocument);
export const GATEWAY_LIST = print(BenchInvoicesWithPartiesDocument);
/**
 * The same fields as BenchInvoice. PostGraphile names a primary-key lookup <table>By<Pk>, v4 and
 * v5 alike (v5's Amber preset without simplify-inflection).
 */
export const PEER_ONE = 'query PeerInvoice($id: BigInt!) { invoiceByInvoiceId(invoiceId: $id) { invoiceId issueDate amountUsd issuerId receiverId } }';
export type PeerInvoiceQuery = { invoiceByInvoiceId: { amountUsd: string; issuerId: number; receiverId: number } | null };

// Not test/fixtures/gateway.ts's postGraphQL: importing that module loads the server in this
// process, and the peer's query is plain text, not a typed document of our schema.
export async function graphql<T>(url: string, query: string, variables?: Record<string, unknown>): Promise<{ data?: T; errors?: unknown[] }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(30_000),
  });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${await response.text()}`);
  return (await response.json()) as { data?: T; errors?: unknown[] };
}

/** Every server must read the same rows, or the comparison compares nothing. */
export async function checkSameRow(gatewayUrl: string, peer: { label: string; url: string }, data: BenchData): Promise<void> {
  const id = String(randomInt(data.minId, data.maxId + 1));
  const ours = await graphql<BenchInvoiceQuery>(gatewayUrl, GATEWAY_ONE, { id });
  const theirs = await graphql<PeerInvoiceQuery>(peer.url, PEER_ONE, { id });
  const a = ours.data?.invoice;
  const b = theirs.data?.invoiceByInvoiceId;
  if (!a || !b || a.amountUsd !== b.amountUsd || a.issuerId !== String(b.issuerId) || a.receiverId !== String(b.receiverId)) {
    throw new Error(`gateway and ${peer.label} disagree on invoice ${id}: ${JSON.stringify(ours)} vs ${JSON.stringify(theirs)}`);
  }
}

/** Loads `count` distinct random invoices (and their parties) into the cache; returns their ids. */
export async function warmCache(url: string, data: BenchData, count: number): Promise<number[]> {
  const ids = new Set<number>();
  const wanted = Math.min(count, data.invoices);
  while (ids.size < wanted) ids.add(randomInt(data.minId, data.maxId + 1));
  const all = [...ids];
  await warmList(url, all);
  return all;
}

/**
 * Loads the given invoices and their parties into the cache through a gateway: twice, because
 * the gateway caches a row from its second read (CACHE_ADMISSION=second-read).
 */
export async function warmList(url: string, ids: readonly number[]): Promise<void> {
  for (let start = 0; start < 2 * ids.length; start += WARM_BATCH) {
    const from = start % ids.length;
    const result = await graphql<BenchInvoicesWithPartiesQuery>(url, GATEWAY_LIST, { ids: ids.slice(from, from + WARM_BATCH).map(String) });
    if (result.errors || result.data?.invoices.some((i) => i === null) !== false) {
      throw new Error(`warming the cache failed: ${JSON.stringify(result).slice(0, 300)}`);
    }
  }
}

/** The customer party to the most invoices (at most 2,000 of them, all returned). */
export async function busiestCustomer(databaseUrl: string): Promise<{ id: number; invoiceIds: number[] }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: number }>('SELECT issuer_id AS id FROM invoices GROUP BY issuer_id ORDER BY count(*) DESC LIMIT 1');
    const id = rows[0]!.id;
    const invoices = await client.query<{ id: string }>('SELECT invoice_id::text AS id FROM invoices WHERE issuer_id = $1 OR receiver_id = $1 LIMIT 2000', [id]);
    return { id, invoiceIds: invoices.rows.map((r) => Number(r.id)) };
  } finally {
    await client.end();
  }
}

/**
 * Lookups answered from a cache, and those that read Postgres, from the gateway's Prometheus
 * endpoint: a whole answer from the response cache counts as one hit, each row read through the
 * row cache (in process or Redis) as one hit or miss.
 */
export async function cacheCounts(graphqlUrl: string): Promise<{ hits: number; misses: number }> {
  const total = await scrapeMetrics(graphqlUrl);
  return {
    hits: total('gateway_cache_hits_total') + total('gateway_response_cache_total{outcome="hit"}'),
    misses: total('gateway_cache_misses_total'),
  };
}

/** Removes this run's keys only: the Redis is shared with tests and other runs (no FLUSHALL). */
// Not test/fixtures/services.ts's deleteRedisKeys: that one only reaches the tests' REDIS_URL.
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  for await (const keys of redis.scanStream({ match: `${prefix}*`, count: 1000 }) as AsyncIterable<string[]>) {
    if (keys.length) await redis.unlink(...keys);
  }
}
