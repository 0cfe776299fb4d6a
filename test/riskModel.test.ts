import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { amountZScore, DEFAULT_MODEL, FEATURES, RiskModel, type RiskFeatures } from '../pipelines/riskModel.js';

/** ln(amount) statistics of `n` invoices all near `amount`, spread `sd` (in ln units). */
function history(n: number, amount: number, sd = 0.5) {
  const mean = Math.log(amount);
  return { n, sum: n * mean, sumSquares: n * (sd * sd + mean * mean) };
}

const ordinary: RiskFeatures = {
  invoiceId: '1',
  amountUsd: '480.00',
  selfInvoice: false,
  issuerHistory: history(200, 450),
  globalHistory: history(100_000, 450, 1.1),
  firstPair: false,
  lastHourInvoices: 1,
  historyHours: 365 * 24,
  // A receiver that paid 1 of 40 invoices late, 3 days past due.
  receiverPayments: { dueInvoices: 40, lateInvoices: 1, settledLate: 1, daysLate: 3 },
  // All receivers: a fifth paid late, 5 days past due on average.
  allPayments: { dueInvoices: 10_000, lateInvoices: 2_000, settledLate: 1_000, daysLate: 5_000 },
};
const noPaymentHistory = { dueInvoices: 0, lateInvoices: 0, settledLate: 0, daysLate: 0 };

const model = new RiskModel();
const reason = (features: RiskFeatures, name: string) => model.score(features).reasons.find((r) => r.feature === name)!;

describe('risk model', () => {
  it('scores an ordinary invoice LOW, with every feature as a reason, largest contribution first', () => {
    const result = model.score(ordinary);
    assert.equal(result.band, 'LOW');
    assert.equal(result.modelVersion, 'risk-v2');
    assert.ok(result.score > 0 && result.score < DEFAULT_MODEL.thresholds.medium);
    assert.deepEqual(new Set(result.reasons.map((r) => r.feature)), new Set(FEATURES));
    const contributions = result.reasons.map((r) => r.contribution);
    assert.deepEqual(contributions, [...contributions].sort((a, b) => b - a));
    // The score is exactly the logistic of bias plus the contributions: the reasons explain it fully.
    const logit = DEFAULT_MODEL.bias + contributions.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(result.score - 1 / (1 + Math.exp(-logit))) < 1e-3);
  });

  it('scores a zero or negative amount (a credit note) as one cent, as the histories count it', () => {
    const cent = model.score({ ...ordinary, amountUsd: '0.01' });
    for (const amountUsd of ['0.00', '-5.10', '-999999999999.99']) {
      const result = model.score({ ...ordinary, amountUsd });
      assert.ok(Number.isFinite(result.score) && result.score >= 0 && result.score <= 1, `${amountUsd}: ${result.score}`);
      assert.deepEqual(result.reasons.find((r) => r.feature === 'amountZScore'), cent.reasons.find((r) => r.feature === 'amountZScore'), amountUsd);
    }
  });

  it('an amount far above the issuer\'s habit raises the score through amountZScore', () => {
    const big = { ...ordinary, amountUsd: '45000.00' };
    const z = reason(big, 'amountZScore');
    assert.ok(z.value > 5, `z = ${z.value}`);
    assert.ok(z.contribution > 3);
    assert.ok(model.score(big).score > model.score(ordinary).score);
    assert.equal(reason(ordinary, 'amountZScore').contribution, 0, 'an amount within one sd adds nothing');
  });

  it('shrinks a short history towards all issuers: two invoices do not make a habit', () => {
    const global = history(100_000, 450, 1.1);
    const longHabit = amountZScore(Math.log(5000), history(500, 100, 0.2), global, 10);
    const shortHabit = amountZScore(Math.log(5000), history(2, 100, 0.2), global, 10);
    const noHistory = amountZScore(Math.log(5000), { n: 0, sum: 0, sumSquares: 0 }, global, 10);
    assert.ok(longHabit > shortHabit && shortHabit > noHistory, `${longHabit} > ${shortHabit} > ${noHistory}`);
    assert.ok(Math.abs(noHistory - (Math.log(5000) - Math.log(450)) / 1.1) < 1e-9, 'no history: judged by the population alone');
    assert.equal(amountZScore(Math.log(5000), { n: 0, sum: 0, sumSquares: 0 }, { n: 0, sum: 0, sumSquares: 0 }, 10), 0);
  });

  it('flags self-invoices, new pairs, round amounts and amounts just under approval limits', () => {
    assert.equal(reason({ ...ordinary, selfInvoice: true }, 'selfInvoice').contribution, DEFAULT_MODEL.weights.selfInvoice);
    assert.equal(reason({ ...ordinary, firstPair: true }, 'firstPair').value, 1);
    for (const [amount, round, below] of [
      ['5000.00', true, false],
      ['5000.01', false, false],
      ['999.00', false, true],
      ['9950.00', false, true],
      ['9799.99', false, false],
      ['10000.00', true, false],
      ['49999.99', false, true],
      ['480.00', false, false],
    ] as const) {
      const features = { ...ordinary, amountUsd: amount };
      assert.equal(reason(features, 'roundAmount').value, round ? 1 : 0, `${amount} round`);
      assert.equal(reason(features, 'justBelowThreshold').value, below ? 1 : 0, `${amount} just below`);
    }
    const everything = { ...ordinary, amountUsd: '9990.00', selfInvoice: true, firstPair: true };
    assert.equal(model.score(everything).band, 'HIGH');
  });

  it('counts a burst against the issuer\'s usual hourly rate, never a single invoice', () => {
    // 200 invoices a year is about one every two days: 20 in an hour is a burst.
    const burst = reason({ ...ordinary, lastHourInvoices: 20 }, 'hourlyBurst');
    assert.ok(burst.value > 400 && burst.contribution > 0);
    assert.equal(reason({ ...ordinary, lastHourInvoices: 1 }, 'hourlyBurst').contribution, 0);
    // A busy issuer (100,000 a year, about 11 an hour): 12 in an hour is its normal pace.
    const busy = { ...ordinary, issuerHistory: history(100_000, 450), lastHourInvoices: 12 };
    assert.ok(reason(busy, 'hourlyBurst').contribution < 0.2);
  });

  it("raises the score of an invoice to a receiver that pays late, by late share and days late, as reasons", () => {
    const slow = { ...ordinary, receiverPayments: { dueInvoices: 40, lateInvoices: 30, settledLate: 20, daysLate: 20 * 45 } };
    const share = reason(slow, 'receiverLateShare');
    // Shrunk towards the usual 20% by 5 pseudo-invoices: (30 + 1) / (40 + 5).
    assert.ok(Math.abs(share.value - 31 / 45) < 1e-4, `share ${share.value}`);
    assert.ok(Math.abs(share.contribution - DEFAULT_MODEL.weights.receiverLateShare * (31 / 45 - 0.2) / 0.8) < 1e-3);
    const days = reason(slow, 'receiverDaysLate');
    assert.equal(days.value, 45);
    // 40 days beyond the usual 5.
    assert.ok(Math.abs(days.contribution - (DEFAULT_MODEL.weights.receiverDaysLate * 40) / 30) < 1e-4);
    assert.ok(model.score(slow).score > model.score(ordinary).score);
    assert.equal(model.score({ ...slow, amountUsd: '9990.00', firstPair: true }).band, 'HIGH');
    // Days late are capped at three months' worth.
    const never = reason({ ...ordinary, receiverPayments: { dueInvoices: 10, lateInvoices: 10, settledLate: 1, daysLate: 400 } }, 'receiverDaysLate');
    assert.ok(Math.abs(never.contribution - DEFAULT_MODEL.weights.receiverDaysLate * 3) < 1e-4);
  });

  it('does not hold a short or missing payment history against a receiver', () => {
    assert.equal(reason({ ...ordinary, receiverPayments: noPaymentHistory }, 'receiverLateShare').contribution, 0);
    assert.equal(reason({ ...ordinary, receiverPayments: noPaymentHistory }, 'receiverDaysLate').contribution, 0);
    const nobody = { ...ordinary, receiverPayments: noPaymentHistory, allPayments: noPaymentHistory };
    assert.equal(reason(nobody, 'receiverLateShare').value, 0.2, 'before any history: the default usual share');
    assert.equal(reason(nobody, 'receiverLateShare').contribution, 0);
    assert.equal(reason(ordinary, 'receiverLateShare').contribution, 0, 'a usual late share adds nothing');
    // One late invoice out of one is not a 100% late payer: (1 + 1) / (1 + 5).
    const once = reason({ ...ordinary, receiverPayments: { dueInvoices: 1, lateInvoices: 1, settledLate: 0, daysLate: 0 } }, 'receiverLateShare');
    assert.ok(Math.abs(once.value - 2 / 6) < 1e-4);
    const always = reason({ ...ordinary, receiverPayments: { dueInvoices: 50, lateInvoices: 50, settledLate: 0, daysLate: 0 } }, 'receiverLateShare');
    assert.ok(always.contribution > 4 * once.contribution);
  });

  it('judges a receiver against all receivers: late where everybody is late is ordinary', () => {
    const slow = { dueInvoices: 40, lateInvoices: 24, settledLate: 20, daysLate: 20 * 30 };
    const latePopulation = { dueInvoices: 10_000, lateInvoices: 6_000, settledLate: 5_000, daysLate: 5_000 * 30 };
    assert.ok(reason({ ...ordinary, receiverPayments: slow }, 'receiverLateShare').contribution > 0);
    assert.equal(reason({ ...ordinary, receiverPayments: slow, allPayments: latePopulation }, 'receiverLateShare').contribution, 0);
    assert.equal(reason({ ...ordinary, receiverPayments: slow, allPayments: latePopulation }, 'receiverDaysLate').contribution, 0);
  });

  it('reads a risk-v1 model file: the payment features it does not name weigh nothing', () => {
    const { receiverLateShare: _share, receiverDaysLate: _days, ...v1Weights } = DEFAULT_MODEL.weights;
    const v1 = RiskModel.fromJson({ ...DEFAULT_MODEL, version: 'trained-v1', weights: v1Weights });
    const slow = { ...ordinary, receiverPayments: { dueInvoices: 40, lateInvoices: 40, settledLate: 40, daysLate: 40 * 60 } };
    assert.equal(v1.score(slow).score, v1.score(ordinary).score);
    assert.equal(v1.score(slow).reasons.find((r) => r.feature === 'receiverLateShare')!.contribution, 0);
  });

  it('reads another set of weights from JSON, naming the first bad field', () => {
    const custom = RiskModel.fromJson({ ...DEFAULT_MODEL, version: 'trained-2026-11', bias: -2 });
    assert.equal(custom.score(ordinary).modelVersion, 'trained-2026-11');
    assert.ok(custom.score(ordinary).score > model.score(ordinary).score);
    const bad: [unknown, RegExp][] = [
      [{ ...DEFAULT_MODEL, weights: { ...DEFAULT_MODEL.weights, firstPair: 'high' } }, / weights\.firstPair /],
      [{ ...DEFAULT_MODEL, weights: { ...DEFAULT_MODEL.weights, colour: 1 } }, /weights/],
      [{ ...DEFAULT_MODEL, thresholds: { medium: 0.8, high: 0.5 } }, /thresholds.medium must be below thresholds.high/],
      [{ ...DEFAULT_MODEL, version: '' }, / version /],
      ['not an object', /the model/],
    ];
    for (const [json, message] of bad) assert.throws(() => RiskModel.fromJson(json), message);
  });
});
