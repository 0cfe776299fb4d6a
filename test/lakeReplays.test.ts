import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { missingServices } from './fixtures/services.js';
import { exportSettled, startFeedGateway, type FeedGateway } from './fixtures/lakeside.js';
import { directStats } from './fixtures/statsCheck.js';
import { eventually, repeatUntil } from './fixtures/eventually.js';
import { InvoiceStatsDocument } from './generated/graphql.js';
import type { StatsQuery } from '../sources/postgres/statsStore.js';

const skip = await missingServices('postgres');

/**
 * The edges of a lake answer's replay (StatsEngine.keptAgain) that lake.test's replays do not
 * reach: a window that has moved on to another month, and a feed that lags behind the moment a
 * replay must be proven at.
 */
describe('a kept lake answer is replayed only when proven at the new moment', { skip }, () => {
  let side: FeedGateway;
  before(async () => {
    side = await startFeedGateway('lake_replays', { seed: { customers: 30, invoices: 3_000, months: 10, seed: 4 } });
    assert.equal((await side.gw.gateway.lake.exportNow()).kind, 'exported');
  });
  after(() => side?.stop());

  const replays = async () => {
    const { metrics } = side.gw.gateway;
    const [replayed, stale, unproven] = await Promise.all(
      ['replayed', 'stale', 'unproven'].map((outcome) => metrics.total(metrics.analyticsLakeReplays, { outcome })),
    );
    return { replayed: replayed!, stale: stale!, unproven: unproven! };
  };

  it('refuses an answer made for a window ending in another month, as a replay after the month turned would be', async () => {
    await exportSettled(side.gw);
    const { engine } = side.gw.gateway.lake;
    const query: StatsQuery = { role: 'issuer', months: 6, customerIds: null, granularity: 'TOTAL', orderBy: 'TOTAL_DESC', limit: 11, after: null };
    // A basis is given once the snapshot saw every recorded change (the feed may still be settling).
    const basis = await eventually(async () => (await engine.invoiceStats(query)).kept, 'a lake answer with a basis');
    assert.ok(basis.kind === 'lake');
    assert.ok(await engine.keptAgain(basis), 'proven at a new moment while the month is the same');

    // The same answer as it would stand had it been made in the month before this one.
    const [year, month] = basis.thisMonth.split('-').map(Number) as [number, number];
    const monthBefore = month === 1 ? `${year - 1}-12` : `${year}-${String(month - 1).padStart(2, '0')}`;
    const start = await replays();
    assert.equal(await engine.keptAgain({ ...basis, thisMonth: monthBefore }), undefined, 'a window of another month is not replayed');
    const end = await replays();
    assert.deepEqual(end, { ...start, stale: start.stale + 1 }, 'counted as stale');
  });

  it('waits for a lagging feed no longer than a proof may take, then answers the change, never the kept response', async () => {
    await exportSettled(side.gw);
    const variables = { groupBy: 'ISSUER', months: 5, granularity: 'TOTAL', orderBy: 'TOTAL_DESC', first: 10 } as const;
    const expected = async () => (await directStats(side.sql, 'ISSUER', 5, 'TOTAL')).slice(0, 10);
    const ask = async (label: string) => {
      const answer = await side.gw.request(InvoiceStatsDocument, variables);
      assert.equal(answer.errors, undefined, `${label}: ${JSON.stringify(answer.errors)}`);
      return answer.data!.invoiceStats;
    };
    // Asked until replayed; a wrong answer on the way fails at once (repeatUntil).
    const untilReplayed = (label: string) =>
      repeatUntil(async () => {
        const start = await replays();
        assert.deepEqual((await ask(label)).rows, await expected(), label);
        return (await replays()).replayed === start.replayed + 1;
      }, label, 30_000);
    await untilReplayed('asked until replayed');

    // The feed is held: it cannot record a change while another transaction locks lake_changes
    // against writes (reads, the gateway's own, go on). An invoice of the top issuer then changes.
    const holder = await side.sql.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE lake_changes IN EXCLUSIVE MODE');
      const top = (await expected())[0]!.customerId;
      const { rowCount } = await side.sql.query(
        `UPDATE invoices SET amount_usd = amount_usd + 100000
          WHERE invoice_id = (SELECT invoice_id FROM invoices WHERE issuer_id = $1 AND issue_date >= now() - interval '20 days' ORDER BY invoice_id LIMIT 1)`,
        [top],
      );
      assert.equal(rowCount, 1, 'an invoice of the top issuer in the window');

      // The kept response rests on a version the feed has not moved past the change: the proof
      // waits for the feed, gives up, and the query answers, from Postgres since the feed stays behind.
      const start = await replays();
      const answer = await ask('while the feed is held');
      assert.deepEqual(answer.rows, await expected(), 'the change is in the answer');
      assert.equal(answer.freshness.engine, 'POSTGRES');
      assert.deepEqual(answer.warnings.map((w) => w.code), ['LAKE_NOT_CURRENT']);
      assert.deepEqual(await replays(), { ...start, unproven: start.unproven + 1 }, 'the proof counted as unproven, nothing replayed');
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }

    // Once the feed records the change, the lake answers it, and is replayed at its new version.
    await eventually(async () => (await ask('after the feed is released')).freshness.engine === 'LAKE', 'a lake answer again');
    await untilReplayed('asked until replayed at the new version');
  });
});
