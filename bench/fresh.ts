import { createFreshInvoices, type FreshRead } from '../sources/lake/freshInvoices.js';
import type { FeedTransaction } from '../sources/postgres/replication.js';
import { parseBenchOptions } from './options.js';
import { median } from './stats.js';
import { seededRandom } from '../test/fixtures/random.js';
import { fmtMs, gitRevision, int, machine } from './reportFormat.js';

/*
 * `npm run bench -- fresh`: what grouping the fresh invoices kept from the change feed costs the
 * gateway's event loop (sources/lake/freshInvoices.ts), without Postgres or HTTP: n invoices
 * inserted since the export, spread over the customers and the last 12 months, grouped as a
 * query of all customers (a top 100) and as a first page in customer order (100 rows) asks.
 * "first" is a question asked for the first time since a change was kept, "again" the same
 * question asked again (the kept answer).
 */

const usage = 'usage: npm run bench -- fresh [--invoices 10000] [--customers 100000] [--repeat 31]';

export async function fresh(argv: string[]): Promise<void> {
  const o = parseBenchOptions(argv, { invoices: '10000', customers: '100000', repeat: '31' }, usage);
  const [invoices, customers, repeat] = [o.whole('invoices', 1), o.whole('customers', 1), o.whole('repeat', 1)];
  const now = Date.UTC(2026, 11, 7);
  // Deterministic: the same invoices every run.
  const next = seededRandom(42);
  const batch: FeedTransaction[] = [
    {
      lsn: 1n,
      xid: 1000,
      commitTime: new Date(now),
      messages: [],
      changes: Array.from({ length: invoices }, (_, i) => ({
        table: 'invoices' as const,
        op: 'insert' as const,
        key: null,
        row: {
          invoice_id: String(10_000_000 + i),
          issue_date: new Date(now - Math.floor(next() * 330 * 86_400_000)),
          issuer_id: 1 + Math.floor(next() * customers),
          receiver_id: 1 + Math.floor(next() * customers),
          amount_usd: (1 + next() * 5000).toFixed(2),
        },
      })),
    },
  ];
  const question = (scope: 'all' | 'page'): FreshRead => ({
    snapshot: '1001:1001:',
    exported: { generation: 1, snapshot: '1000:1000:' },
    maxId: '9999999',
    from: '2026-01-01T00:00:00Z',
    to: '2027-01-01T00:00:00Z',
    scope,
    upTo: scope === 'page' ? Math.ceil(customers / 1000) : undefined,
    query: { role: 'issuer', months: 12, customerIds: null, granularity: 'MONTH', orderBy: scope === 'page' ? 'CUSTOMER_ASC' : 'TOTAL_DESC', limit: 101, after: null },
  });
  console.log(`fresh invoices grouped in memory: ${int(invoices)} invoices over ${int(customers)} customers, median of ${repeat} runs; ${machine()}, ${gitRevision()}\n`);
  console.log('| question | groups sent | first ms | again ms |');
  console.log('|---|--:|--:|--:|');
  for (const scope of ['all', 'page'] as const) {
    const first: number[] = [];
    const again: number[] = [];
    let groups = 0;
    for (let run = 0; run < repeat + 3; run++) {
      // A new store each run: its first answer is grouped, not kept.
      const store = createFreshInvoices(invoices);
      store.begin('1000');
      store.add(batch);
      let started = performance.now();
      groups = store.liveGroups(question(scope))!.groups;
      const firstMs = performance.now() - started;
      started = performance.now();
      store.liveGroups(question(scope));
      // The first three warm the code up.
      if (run >= 3) first.push(firstMs), again.push(performance.now() - started);
    }
    const name = scope === 'all' ? 'all customers (a top 100)' : 'a first page in customer order';
    console.log(`| ${name} | ${int(groups)} | ${fmtMs(median(first))} | ${fmtMs(median(again))} |`);
  }
}
