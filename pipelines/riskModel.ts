import { toCents } from '../core/money.js';
import { z } from 'zod';

/**
 * The explainable risk model: a logistic score over a handful of features, each of which a
 * person can check by hand. Pure: features in, score and reasons out; no I/O.
 */

/** What the scorer measures for one invoice, as of its own issue date. */
export interface RiskFeatures {
  readonly invoiceId: string;
  /** numeric(14,2) as text. */
  readonly amountUsd: string;
  readonly selfInvoice: boolean;
  /** The issuer's invoices in the 12 months before (months with data, UTC calendar months). */
  readonly issuerHistory: LogAmountStats;
  /** The same over all issuers: the prior a short history is shrunk towards. */
  readonly globalHistory: LogAmountStats;
  /** No earlier invoice from this issuer to this receiver. */
  readonly firstPair: boolean;
  /** The issuer's invoices in the hour up to and including this one. */
  readonly lastHourInvoices: number;
  /** Hours the issuer's 12-month history spans (from its first month with data), at least 24. */
  readonly historyHours: number;
  /** How the receiver paid in the 12 calendar months before this invoice's month (UTC). */
  readonly receiverPayments: ReceiverPaymentHistory;
  /** The same over all receivers: the usual behaviour the receiver's is compared with. */
  readonly allPayments: ReceiverPaymentHistory;
}

/**
 * A receiver's payments as of an invoice's month: counts whose verdicts were all in before it
 * began, so a score made today of an old invoice sees what was known then.
 */
export interface ReceiverPaymentHistory {
  /** Invoices that fell due. */
  readonly dueInvoices: number;
  /** Of those, not fully paid by their due date. */
  readonly lateInvoices: number;
  /** Invoices fully paid after their due date, and their days past due, summed. */
  readonly settledLate: number;
  readonly daysLate: number;
}

/** Count, sum and sum of squares of ln(amount). */
export interface LogAmountStats {
  readonly n: number;
  readonly sum: number;
  readonly sumSquares: number;
}

export type RiskBand = 'LOW' | 'MEDIUM' | 'HIGH';

export interface RiskReason {
  readonly feature: FeatureName;
  /** The feature's measured value (a z-score, a ratio, or 1/0 for yes/no). */
  readonly value: number;
  /** Its share of the score, in log-odds: positive raises the risk. */
  readonly contribution: number;
}

export interface RiskAssessment {
  /** In [0, 1]. */
  readonly score: number;
  readonly band: RiskBand;
  readonly modelVersion: string;
  /** Every feature, largest contribution first. */
  readonly reasons: readonly RiskReason[];
}

export const FEATURES = [
  'amountZScore',
  'firstPair',
  'hourlyBurst',
  'roundAmount',
  'justBelowThreshold',
  'selfInvoice',
  'receiverLateShare',
  'receiverDaysLate',
] as const;
/** Features added after risk-v1: a model file written for v1 weighs them 0 unless it says otherwise. */
const LATER_FEATURES: ReadonlySet<FeatureName> = new Set(['receiverLateShare', 'receiverDaysLate']);
export type FeatureName = (typeof FEATURES)[number];

const parameters = z
  .object({
    version: z.string().min(1).max(64),
    /** Log-odds of an invoice with no signal at all. */
    bias: z.number(),
    weights: z
      .object(Object.fromEntries(FEATURES.map((f) => [f, LATER_FEATURES.has(f) ? z.number().min(-20).max(20).default(0) : z.number().min(-20).max(20)])) as Record<FeatureName, z.ZodNumber>)
      .strict(),
    /** Score from which an invoice is MEDIUM, and HIGH. */
    thresholds: z.object({ medium: z.number().gt(0).lt(1), high: z.number().gt(0).lt(1) }).strict(),
    /** Pseudo-invoices of the global prior mixed into an issuer's history (shrinkage). */
    priorWeight: z.number().min(0).max(1000).default(10),
  })
  .strict()
  .refine((p) => p.thresholds.medium < p.thresholds.high, { message: 'thresholds.medium must be below thresholds.high', path: ['thresholds'] });

export type RiskModelParameters = z.infer<typeof parameters>;

/**
 * The built-in weights, each with its reason. Log-odds: +1 multiplies the odds by e (2.7).
 * A data team replaces them with trained coefficients through RISK_MODEL_FILE.
 */
export const DEFAULT_MODEL: RiskModelParameters = {
  version: 'risk-v2',
  // Most invoices are ordinary: with no signal the score is about 0.05.
  bias: -3,
  weights: {
    // Per standard deviation above the issuer's usual ln(amount), past one: amounts far beyond an
    // issuer's habit are the classic sign of an inflated or fake invoice.
    amountZScore: 0.9,
    // A pair that never traded before: new counterparties carry most invoice fraud.
    firstPair: 1.2,
    // Per doubling of the issuer's usual hourly rate: bursts are how stolen credentials and
    // scripted fraud look.
    hourlyBurst: 0.7,
    // Whole thousands: fabricated amounts are rounder than real ones (Benford-style checks).
    roundAmount: 0.6,
    // Just under an approval threshold (1k, 5k, 10k, 50k, 100k): splitting to dodge review.
    justBelowThreshold: 1.1,
    // Issuer and receiver are the same customer: no business reason, a known laundering pattern.
    selfInvoice: 2.5,
    // The receiver's share of invoices not paid by their due date, above the usual one: a receiver
    // that does not pay is where a fabricated or disputed invoice ends (the issuer's loss).
    receiverLateShare: 2,
    // Per 30 days the receiver's late payments came past due (at most 3): slow payers are the
    // next defaulters.
    receiverDaysLate: 0.5,
  },
  thresholds: { medium: 0.3, high: 0.7 },
  priorWeight: 10,
};

/** Thresholds that are commonly used as approval limits. */
const APPROVAL_LIMITS = [1_000, 5_000, 10_000, 50_000, 100_000];
/** "Just below": within 2% under a limit. */
const JUST_BELOW = 0.02;
/** The usual late share before any payment history exists. */
const DEFAULT_LATE_SHARE = 0.2;
/** Pseudo-invoices at the usual late share mixed into a receiver's own: one late invoice of one is not 100%. */
const LATE_SHARE_PRIOR = 5;

export class RiskModel {
  constructor(readonly parameters: RiskModelParameters = DEFAULT_MODEL) {}

  get version(): string {
    return this.parameters.version;
  }

  /** Parses and checks a model file's JSON; the error names the first bad field. */
  static fromJson(json: unknown): RiskModel {
    const parsed = parameters.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new Error(`${issue.path.join('.') || 'the model'} ${issue.message}`);
    }
    return new RiskModel(parsed.data);
  }

  score(features: RiskFeatures): RiskAssessment {
    const values = this.featureValues(features);
    const { weights, bias, thresholds } = this.parameters;
    const reasons = FEATURES.map((feature) => ({
      feature,
      value: round(values[feature].value, 4),
      contribution: round(weights[feature] * values[feature].signal, 4),
    })).sort((a, b) => b.contribution - a.contribution || a.feature.localeCompare(b.feature));
    const logit = bias + reasons.reduce((sum, r) => sum + r.contribution, 0);
    const score = round(1 / (1 + Math.exp(-logit)), 4);
    const band: RiskBand = score >= thresholds.high ? 'HIGH' : score >= thresholds.medium ? 'MEDIUM' : 'LOW';
    return { score, band, modelVersion: this.version, reasons };
  }

  /** Each feature's value as reported, and the signal its weight multiplies. */
  private featureValues(f: RiskFeatures): Record<FeatureName, { value: number; signal: number }> {
    const amount = Number(f.amountUsd);
    // A zero or negative amount (a credit note in a user's table) counts as one cent, as the
    // issuers' histories count it (riskSql.lnAmount): its logarithm would make the score NaN.
    const z = amountZScore(Math.log(Math.max(amount, 0.01)), f.issuerHistory, f.globalHistory, this.parameters.priorWeight);
    // An issuer's usual hourly rate; at least one a day, so a quiet issuer's first invoice of the
    // day is not a "burst".
    const usualPerHour = Math.max(f.issuerHistory.n / Math.max(f.historyHours, 24), 1 / 24);
    const burst = f.lastHourInvoices / usualPerHour;
    // Exact, from the decimal text: whole thousands is a property of the digits, not of a float.
    const cents = toCents(f.amountUsd);
    const wholeThousands = cents >= 100_000n && cents % 100_000n === 0n;
    const justBelow = APPROVAL_LIMITS.some((limit) => amount < limit && amount >= limit * (1 - JUST_BELOW));
    return {
      amountZScore: { value: z, signal: Math.min(Math.max(z - 1, 0), 6) },
      firstPair: flag(f.firstPair),
      // Only the hour's invoices beyond the first count: one invoice is never a burst.
      hourlyBurst: { value: burst, signal: f.lastHourInvoices > 1 ? Math.min(Math.max(Math.log2(burst), 0), 8) : 0 },
      roundAmount: flag(wholeThousands),
      justBelowThreshold: flag(justBelow),
      selfInvoice: flag(f.selfInvoice),
      ...receiverSignals(f.receiverPayments, f.allPayments),
    };
  }
}

/**
 * Judged against all receivers over the same months, as amounts are against all issuers: the
 * late share, shrunk towards the usual one by LATE_SHARE_PRIOR pseudo-invoices, counts only above
 * it (scaled to 0..1); average days late count above the usual average, per 30, at most 3
 * months' worth.
 */
function receiverSignals(
  p: ReceiverPaymentHistory,
  all: ReceiverPaymentHistory,
): Pick<Record<FeatureName, { value: number; signal: number }>, 'receiverLateShare' | 'receiverDaysLate'> {
  const usualShare = all.dueInvoices > 0 ? all.lateInvoices / all.dueInvoices : DEFAULT_LATE_SHARE;
  const share = (p.lateInvoices + usualShare * LATE_SHARE_PRIOR) / (p.dueInvoices + LATE_SHARE_PRIOR);
  const usualDays = all.settledLate > 0 ? all.daysLate / all.settledLate : 0;
  const averageDaysLate = p.settledLate > 0 ? p.daysLate / p.settledLate : 0;
  return {
    receiverLateShare: { value: share, signal: usualShare < 1 ? Math.max(share - usualShare, 0) / (1 - usualShare) : 0 },
    receiverDaysLate: { value: averageDaysLate, signal: p.settledLate > 0 ? Math.min(Math.max(averageDaysLate - usualDays, 0) / 30, 3) : 0 },
  };
}

function flag(on: boolean) {
  return { value: on ? 1 : 0, signal: on ? 1 : 0 };
}

/**
 * z-score of ln(amount) against the issuer's history, shrunk towards all issuers' history by
 * `priorWeight` pseudo-invoices: an issuer with two invoices is mostly judged by the population,
 * one with hundreds by itself. Without any history at all, 0.
 */
export function amountZScore(logAmount: number, issuer: LogAmountStats, global: LogAmountStats, priorWeight: number): number {
  const prior = global.n > 1 ? moments(global) : undefined;
  const own = issuer.n > 0 ? moments(issuer) : undefined;
  if (!own && !prior) return 0;
  const k = prior ? priorWeight : 0;
  const n = own ? issuer.n : 0;
  const mean = ((own?.mean ?? 0) * n + (prior?.mean ?? 0) * k) / (n + k);
  const variance = ((own?.variance ?? 0) * n + (prior?.variance ?? 0) * k) / (n + k);
  // A floor on the spread: ten identical amounts must not turn a cent more into a huge z.
  const sd = Math.max(Math.sqrt(variance), 0.1);
  return (logAmount - mean) / sd;
}

function moments(stats: LogAmountStats): { mean: number; variance: number } {
  const mean = stats.sum / stats.n;
  return { mean, variance: Math.max(stats.sumSquares / stats.n - mean * mean, 0) };
}

function round(value: number, digits: number): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
