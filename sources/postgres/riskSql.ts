/** SQL fragments shared by the live scorer's and the backfill's statements. */
export const riskSql = {
  /** The UTC calendar month of a timestamptz, as a date. */
  month: (column: string) => `date_trunc('month', ${column} AT TIME ZONE 'UTC')::date`,
  /** ln(amount); a zero or negative amount in a user's table counts as one cent, not an error. */
  lnAmount: (column: string) => `ln(greatest(${column}, 0.01))`,
  /** How long per-minute counts are kept: an hour of "last hour" plus room for late invoices. */
  MINUTES_KEPT: `interval '2 hours'`,
  /** What scoring derives from invoices (aggregates and the backfill's work), scores aside. */
  DERIVED_TABLES: 'risk_customer_months, risk_global_months, risk_customer_pairs, risk_issuer_minutes, risk_backfill_queue, risk_backfill_issuers',
};
