import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createTestDatabase, missingServices, type TestDatabase } from './fixtures/services.js';
import { startTestGateway, type TestGateway } from './fixtures/gateway.js';
import { eventually } from './fixtures/eventually.js';
import { startS3Server, type S3Server } from './fixtures/s3Server.js';
import { InvoiceRiskDocument } from './generated/graphql.js';

const skip = await missingServices('postgres');

/** Day `day` of the UTC month `monthsAgo` before this one, at 10:00. */
const at = (monthsAgo: number, day: number, hour = 10) => {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - monthsAgo, day, hour));
};
const DAY_MS = 86_400_000;
const TERMS_DAYS = 10;
const ISSUER = 1;
const SLOW = 2;
const PROMPT = 3;
const BIG_ISSUER_INVOICES = 12_000;

/**
 * Receivers' payment behaviour in the risk model (risk-v2), from payments and profiles files in a
 * real S3 protocol server: counted as of each invoice's month, refreshed when a file lands.
 */
describe("the risk model reads receivers' payment behaviour from the lake (risk-v2)", { skip }, () => {
  let s3: S3Server;
  let db: TestDatabase;
  let gw: TestGateway;
  let sql: pg.Pool;
  const ids: Record<string, string> = {};

  const insert = async (name: string, receiver: number, issued: Date) => {
    const { rows } = await sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd) VALUES ($1, $2, $3, 100.00) RETURNING invoice_id::text AS id`, [
      issued,
      ISSUER,
      receiver,
    ]);
    ids[name] = rows[0].id;
    return rows[0].id as string;
  };
  const payment = (paymentId: string, invoice: string, paidAt: Date, amount: string) =>
    JSON.stringify({ payment_id: paymentId, invoice_id: Number(ids[invoice]), paid_at: paidAt.toISOString(), amount_usd: amount, method: 'wire' });
  const day = (d: Date) => d.toISOString().slice(0, 10);

  const reasonsOf = async (invoiceId: string) => {
    let risk: { modelVersion: string; reasons: { feature: string; value: number; contribution: number }[] } | null | undefined;
    await eventually(async () => {
      risk = (await gw.request(InvoiceRiskDocument, { id: invoiceId })).data?.invoice?.risk;
      return risk != null;
    }, `invoice ${invoiceId} to be scored`);
    return { version: risk!.modelVersion, reason: (feature: string) => risk!.reasons.find((r) => r.feature === feature)! };
  };

  before(async () => {
    s3 = await startS3Server();
    db = await createTestDatabase('risk_payments');
    // A first gateway without the feed migrates; the invoices and files exist before scoring starts.
    const setup = await startTestGateway({ databaseUrl: db.url, env: { ...s3.env } });
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
    try {
      await sql.query(`INSERT INTO customers (customer_name) SELECT 'Customer ' || g FROM generate_series(1, 4) g`);
      // Four months ago, each due ten days after issue (the profiles' terms).
      for (const name of ['onTime', 'late10', 'split', 'unpaid', 'atDue']) await insert(name, SLOW, at(4, 2));
      for (const name of ['prompt1', 'prompt2']) await insert(name, PROMPT, at(4, 2));
      // Issued late in that month: as of its own month, the receiver has no history yet.
      await insert('asOfMonth4', SLOW, at(4, 20));
      // Two months ago, paid on time: its score sees the invoices that fell due before its month.
      await insert('asOfMonth2', SLOW, at(2, 3));
      // An issuer with more invoices than the backfill reads at a time (it reads whole issuers).
      await sql.query(`INSERT INTO invoices (issue_date, issuer_id, receiver_id, amount_usd)
        SELECT now() - make_interval(secs => g), 4, 4, 100 + g % 500 FROM generate_series(1, ${BIG_ISSUER_INVOICES}) g`);

      const due = (issued: Date) => new Date(issued.getTime() + TERMS_DAYS * DAY_MS);
      const profiles = [SLOW, PROMPT].map((id) => JSON.stringify({ customer_id: id, legal_name: `Customer ${id}`, payment_terms_days: TERMS_DAYS, updated_at: '2026-01-01T00:00:00Z' }));
      await setup.gateway.lake.store.putBytes('sources/customer-profiles/crm.jsonl', profiles.join('\n') + '\n');
      const first = [
        payment('p-on-time', 'onTime', at(4, 5), '100.00'),
        payment('p-late-10', 'late10', at(4, 22), '100.00'),
        // Half on time, half 15 days late: settled late. Its first half arrives twice (at least once delivery).
        payment('p-split-1', 'split', at(4, 5), '50.00'),
        payment('p-split-1', 'split', at(4, 5), '50.00'),
        payment('p-split-2', 'split', at(4, 27), '50.00'),
        // Paid at the very moment it fell due: on time.
        payment('p-at-due', 'atDue', due(at(4, 2)), '100.00'),
        payment('p-prompt-1', 'prompt1', at(4, 3), '100.00'),
        payment('p-prompt-2', 'prompt2', at(4, 4), '100.00'),
        payment('p-month-2', 'asOfMonth2', at(2, 4), '100.00'),
        'not json at all',
      ];
      await setup.gateway.lake.store.putBytes(`sources/payments/date=${day(at(4, 28))}/events.jsonl`, first.join('\n') + '\n');
    } finally {
      await setup.stop();
    }
    gw = await startTestGateway({
      databaseUrl: db.url,
      env: { ...s3.env, CHANGE_FEED: '1', SOURCES_LISTING_TTL_MS: '0', RISK_RECEIVER_PAYMENTS_INTERVAL_MS: '200' },
    });
    await eventually(() => gw.gateway.feed.status().state === 'streaming', 'the feed to stream');
  });

  after(async () => {
    await sql?.end();
    await gw?.stop();
    await db?.drop();
    await s3?.stop();
  });

  it('scores the backfill as of each invoice\u2019s month: no history before the invoices fell due, their verdicts after', async () => {
    const early = await reasonsOf(ids.asOfMonth4!);
    assert.equal(early.version, 'risk-v2');
    assert.equal(early.reason('receiverLateShare').value, 0.2, 'no history: the usual share');
    assert.equal(early.reason('receiverLateShare').contribution, 0);
    assert.equal(early.reason('receiverDaysLate').value, 0);

    // Due before its month: onTime, late10, split, unpaid, atDue and asOfMonth4 (unpaid); late:
    // late10, split (its repeated half counted once), unpaid, asOfMonth4. Settled late: late10 (10
    // days) and split (15 days).
    // All receivers then: those six and the prompt payer's two; four late, so the usual share is a half.
    const later = await reasonsOf(ids.asOfMonth2!);
    assert.equal(later.reason('receiverLateShare').value, Math.round(((4 + 0.5 * 5) / (6 + 5)) * 1e4) / 1e4);
    assert.ok(later.reason('receiverLateShare').contribution > 0);
    assert.equal(later.reason('receiverDaysLate').value, 12.5);
  });

  it('backfills an issuer larger than one read whole: each invoice once, only its first a first pair', async () => {
    await eventually(async () => (await sql.query(`SELECT count(*)::int AS n FROM risk_backfill_issuers`)).rows[0].n === 0, 'the backfill');
    const { rows } = await sql.query(`SELECT count(*)::int AS scores, count(DISTINCT s.invoice_id)::int AS invoices,
        count(*) FILTER (WHERE s.feature_values[array_position(m.features, 'firstPair')] = 1)::int AS first_pairs
      FROM invoice_risk_scores s JOIN risk_models m USING (model_version) WHERE s.issuer_id = 4`);
    assert.deepEqual(rows[0], { scores: BIG_ISSUER_INVOICES, invoices: BIG_ISSUER_INVOICES, first_pairs: 1 });
  });

  it('scores a new invoice with the receiver\u2019s payments up to last month, and a prompt payer adds nothing', async () => {
    const slow = await reasonsOf(await insert('liveSlow', SLOW, new Date()));
    // asOfMonth2 fell due and was paid on time since: 4 late of 9 over all receivers.
    assert.equal(slow.reason('receiverLateShare').value, Math.round(((4 + (4 / 9) * 5) / (7 + 5)) * 1e4) / 1e4);
    assert.equal(slow.reason('receiverDaysLate').value, 12.5);
    const prompt = await reasonsOf(await insert('livePrompt', PROMPT, new Date()));
    assert.equal(prompt.reason('receiverLateShare').contribution, 0);
    assert.equal(prompt.reason('receiverDaysLate').contribution, 0);
    assert.ok(slow.reason('receiverLateShare').contribution > 0);
  });

  it('an unreachable object store leaves scoring alone: scores use the last refresh, one warning, then it refreshes again', async () => {
    const before = await reasonsOf(await insert('beforeOutage', SLOW, new Date()));
    await s3.kill();
    try {
      const warnings = () => gw.logs.filter((l) => l.component === 'receiver-payments' && l.level === 40).length;
      await eventually(() => warnings() > 0, 'the refresh to fail');
      const during = await reasonsOf(await insert('duringOutage', SLOW, new Date()));
      assert.deepEqual(during.reason('receiverLateShare'), before.reason('receiverLateShare'));
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal(warnings(), 1, 'the same failure is logged once');
    } finally {
      await s3.restart();
    }
    const refreshed = gw.logs.length;
    await gw.gateway.lake.store.putBytes('sources/customer-profiles/crm-2.jsonl', JSON.stringify({ customer_id: 4, legal_name: 'Customer 4', updated_at: '2026-01-01T00:00:00Z' }) + '\n');
    await eventually(() => gw.logs.slice(refreshed).some((l) => l.component === 'receiver-payments' && l.level === 30), 'a refresh after the store came back');
  });

  it('a payments file that lands is in the next scores: the unpaid invoice, paid late, counts its days', async () => {
    const paidAt = at(3, 21);
    await gw.gateway.lake.store.putBytes(`sources/payments/date=${day(paidAt)}/late.jsonl`, payment('p-unpaid', 'unpaid', paidAt, '100.00') + '\n');
    const daysLate = (paidAt.getTime() - (at(4, 2).getTime() + TERMS_DAYS * DAY_MS)) / DAY_MS;
    const expected = Math.round(((10 + 15 + daysLate) / 3) * 1e4) / 1e4;
    await eventually(async () => {
      const score = await reasonsOf(await insert(`afterFile${Date.now()}`, SLOW, new Date()));
      return score.reason('receiverDaysLate').value === expected;
    }, 'a score that counts the new file');
    const { rows } = await sql.query(`SELECT fingerprint FROM risk_receiver_payments_state`);
    assert.equal(rows.length, 1);
  });
});
