import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { memoryLogger } from './fixtures/gateway.js';
import { createDatabase, type Database } from '../sources/postgres/database.js';
import type { LakeMisses } from '../sources/postgres/lakeStore.js';
import { migrate } from '../sources/postgres/migrate.js';
import { seedDatabase } from '../sources/postgres/seeder.js';
import { createStatsStore, type LiveGroups, type StatsGranularity, type StatsQuery, type StatsRole, type StatsSnapshot } from '../sources/postgres/statsStore.js';
import { deadlineIn } from '../core/deadline.js';

const skip = await missingServices('postgres');

/** One live group as the records carry it, and the page key it belongs to ('' month in TOTAL). */
interface Group {
  readonly record: string;
  readonly customer: number;
  readonly keyMonth: string;
}

const keyOf = (g: Group) => `${String(g.customer).padStart(10, '0')} ${g.keyMonth}`;

function groupsOf(live: LiveGroups, granularity: StatsGranularity): Group[] {
  if (live.records === '') return [];
  return live.records.split(',').map((record) => {
    const [month, customer] = record.split(' ') as [string, string];
    return { record, customer: Number(customer), keyMonth: granularity === 'MONTH' ? month : '' };
  });
}

/**
 * The live groups of a page in customer order (LiveScope 'page'): the groups of the first
 * `limit` keys past the cursor, from each read, must be exactly those the whole read has for the
 * keys the page can show, and the invoice count must stay the whole read's.
 */
describe('live groups of a page in customer order', { skip }, () => {
  const { logger } = memoryLogger();
  let database: TestDatabase;
  let db: Database;
  let listed: string[];
  let highest: string;

  before(async () => {
    database = await createTestDatabase('live_groups');
    db = createDatabase({ url: database.url, poolMax: 2, statementTimeoutMs: 0 }, logger);
    await migrate(db, logger);
    await seedDatabase(db, { customers: 25, invoices: 2_000, months: 14, seed: 3 }, logger);
    const [range] = await db.query<{ highest: string }>({ name: 'test_highest', text: `SELECT (max(invoice_id) - 600)::text AS highest FROM invoices` });
    highest = range!.highest;
    // Invoices at or below the highest id, as changes to exported invoices would list them.
    const rows = await db.query<{ id: string }>({ name: 'test_listed', text: `SELECT invoice_id::text AS id FROM invoices WHERE invoice_id <= $1 AND invoice_id % 7 = 0` }, [highest]);
    listed = rows.map((r) => r.id);
  });
  after(async () => {
    await db?.close();
    await database?.drop();
  });

  const inSnapshot = (work: (snapshot: StatsSnapshot) => Promise<void>) => createStatsStore(db, logger).withSnapshot(12, work, deadlineIn(60_000));
  const query = (role: StatsRole, granularity: StatsGranularity, limit: number, after: StatsQuery['after'], customerIds: number[] | null = null): StatsQuery => ({
    role, months: 12, customerIds, granularity, orderBy: 'CUSTOMER_ASC', limit, after,
  });

  for (const misses of [
    { name: 'fresh inserts above the highest id', value: (): LakeMisses => ({ above: highest, ids: [] }) },
    { name: 'listed changes and fresh inserts, read apart', value: (): LakeMisses => ({ above: highest, ids: listed }) },
  ]) {
    it(`keeps every group the page can show and counts every invoice: ${misses.name}`, async () => {
      let checked = 0;
      for (const role of ['issuer', 'receiver'] as const) {
        for (const granularity of ['MONTH', 'TOTAL'] as const) {
          // Every customer, and some of them (a customerIds filter).
          for (const customerIds of [null, [2, 3, 5, 8, 13, 21]]) {
            await inSnapshot(async (snapshot) => {
              const whole = await snapshot.liveGroups(misses.value(), query(role, granularity, 1_000_000, null, customerIds), 'all');
              assert.equal(whole.partial, false);
              const all = groupsOf(whole, granularity);
              const keys = [...new Set(all.map(keyOf))].sort();
              assert.ok(keys.length > (customerIds ? 5 : 20), `${keys.length} keys`);
              const keyAt = (i: number) => all.find((g) => keyOf(g) === keys[i])!;
              // Cursors are positions in the whole answer, mostly not live keys: at a live key,
              // between two customers' keys, after a customer's last month, before the first key,
              // past the last; and none.
              const cursors: { label: string; customer: number; month: string | null }[] = [];
              for (const i of [0, 3, Math.floor(keys.length / 2), keys.length - 2, keys.length - 1]) {
                const { customer, keyMonth } = keyAt(i);
                cursors.push({ label: `at key ${i}`, customer, month: granularity === 'MONTH' ? keyMonth : null });
                if (granularity === 'MONTH') cursors.push({ label: `after the months of key ${i}`, customer, month: '2099-12' });
                else cursors.push({ label: `between key ${i} and the next customer`, customer: customer + 1, month: null });
              }
              cursors.push({ label: 'before every key', customer: 0, month: granularity === 'MONTH' ? '2000-01' : null });
              for (const cursor of [null, ...cursors]) {
                for (const limit of [1, 4, 11]) {
                  const after = cursor && { sortValue: null, customerId: cursor.customer, month: cursor.month };
                  const cursorKey = cursor ? keyOf({ record: '', customer: cursor.customer, keyMonth: cursor.month ?? '' }) : '';
                  const label = `${role} ${granularity}${customerIds ? ', some customers' : ''}, ${cursor?.label ?? 'first page'}, limit ${limit}`;
                  const page = await snapshot.liveGroups(misses.value(), query(role, granularity, limit, after, customerIds), 'page');
                  assert.equal(page.partial, true, label);
                  assert.equal(page.invoices, whole.invoices, `${label}: every live invoice counted`);
                  const sent = groupsOf(page, granularity);
                  assert.equal(page.groups, sent.length, label);
                  const past = keys.filter((k) => k > cursorKey);
                  const shown = new Set(past.slice(0, limit));
                  const byKey = (groups: Group[]) => groups.filter((g) => shown.has(keyOf(g))).map((g) => g.record).sort();
                  assert.deepEqual(byKey(sent), byKey(all), `${label}: the groups of the keys the page can show`);
                  assert.ok(sent.every((g) => keyOf(g) > cursorKey), `${label}: nothing at or before the cursor`);
                  assert.ok(sent.length < all.length || past.length <= limit, `${label}: fewer groups than the whole read`);
                  // Bounded at a customer (a page bound, see PageBounds): the shown keys up to it are as before.
                  const upTo = [...shown].sort().at(-1);
                  if (upTo !== undefined) {
                    const customer = Number(upTo.split(' ')[0]);
                    const bounded = await snapshot.liveGroups(misses.value(), query(role, granularity, limit, after, customerIds), 'page', customer);
                    assert.equal(bounded.invoices, whole.invoices, `${label}, up to ${customer}: every live invoice counted`);
                    const boundedGroups = groupsOf(bounded, granularity);
                    assert.ok(boundedGroups.every((g) => g.customer <= customer), `${label}, up to ${customer}: no later customer`);
                    assert.deepEqual(byKey(boundedGroups), byKey(all), `${label}, up to ${customer}: the groups of the keys the page can show`);
                  }
                  checked++;
                }
              }
            });
          }
        }
      }
      assert.equal(checked, 2 * 2 * 2 * 12 * 3);
    });
  }

  it('reads the fresh groups apart as liveGroups reads them, and takes that read as its fresh groups', async () => {
    await inSnapshot(async (snapshot) => {
      for (const scope of ['all', 'page'] as const) {
        for (const upTo of scope === 'page' ? [undefined, 9] : [undefined]) {
          const q = query('issuer', 'MONTH', 6, null);
          const label = `${scope}${upTo === undefined ? '' : `, up to ${upTo}`}`;
          const early = snapshot.freshGroups(highest, q, scope, upTo);
          assert.deepEqual(unordered(await early), unordered(await snapshot.liveGroups({ above: highest, ids: [] }, q, scope, upTo)), label);
          assert.ok((await early).invoices > 0, `${label}: fresh invoices`);
          const withListed = await snapshot.liveGroups({ above: highest, ids: listed }, q, scope, upTo, early);
          assert.deepEqual(unordered(withListed), unordered(await snapshot.liveGroups({ above: highest, ids: listed }, q, scope, upTo)), `${label}, with listed changes`);
        }
      }
    });
  });

  it('is refused for an order by a measure, where a later key can overtake the page', async () => {
    await inSnapshot(async (snapshot) => {
      await assert.rejects(snapshot.liveGroups({ above: highest, ids: [] }, { ...query('issuer', 'MONTH', 5, null), orderBy: 'TOTAL_DESC' }, 'page'), /customer order/);
    });
  });
});

/**
 * Live groups with their records in one order: a read of all groups aggregates them in the
 * order its plan gives (DuckDB and mergePage merge them by key), and a plan can change between two reads.
 */
const unordered = (groups: LiveGroups): LiveGroups => ({ ...groups, records: groups.records.split(',').sort().join(',') });
