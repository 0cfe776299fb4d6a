import assert from 'node:assert/strict';
import { utimes } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { exportWritten, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { assertExact } from './fixtures/statsCheck.js';

const skip = await missingServices('postgres');

/**
 * An export removes objects no recent generation names, once they are 10 minutes old. A
 * generation replaced a moment ago is still being read (by a query that began on it, or a Spark
 * job handed its manifest), however many exports ran since: its objects stay for 10 minutes
 * after it was replaced, not after they were written.
 */
describe('old lake objects', { skip }, () => {
  let side: FeedGateway;

  before(async () => {
    side = await startFeedGateway('lake_orphans', { seed: { customers: 10, invoices: 400, months: 4, seed: 8 } });
  });
  after(() => side?.stop());

  const exportNow = () => exportWritten(side.gw);
  /** Every object of the local lake, as written `ms` ago. */
  const age = async (ms: number) => {
    const { store } = side.gw.gateway.lake;
    const then = new Date(Date.now() - ms);
    for (const o of await store.list('')) await utimes(store.localPath!(o.key), then, then);
  };
  const present = async (keys: readonly string[]) => {
    const stored = new Set((await side.gw.gateway.lake.store.list('')).map((o) => o.key));
    return keys.filter((key) => stored.has(key));
  };

  it('stay 10 minutes after their generation was replaced, however many exports ran since', async () => {
    await exportNow();
    // A lake that has not changed for a week.
    await age(7 * 24 * 3_600_000);
    const files = (await side.gw.gateway.lake.store.list('invoices/')).map((o) => o.key);
    assert.ok(files.length > 0);
    // Every month rewritten, then three exports more: the week-old files are named by a
    // generation replaced a moment ago, and by none of the last three.
    for (let i = 0; i < 4; i++) {
      await side.sql.query(`UPDATE invoices SET amount_usd = amount_usd + 1`);
      await exportNow();
    }
    assert.deepEqual(await present(files), files, 'a generation replaced a moment ago keeps its files');

    // An hour on, the next export removes them; the last generations' files stay.
    await age(3_600_000);
    await side.sql.query(`UPDATE invoices SET amount_usd = amount_usd + 1`);
    await exportNow();
    assert.deepEqual(await present(files), [], 'replaced an hour ago: removed');
    await assertExact(side.gw, side.sql, 'after old objects were removed', [12]);
  });
});
