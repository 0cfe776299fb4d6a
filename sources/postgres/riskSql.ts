/** SQL fragments shared by the live scorer's and the backfill's statements. */
export const riskSql = {
  /** The UTC calendar month of a timestamptz, as a date. */
  month: (column: string) => `date_trunc('month', ${column} AT TIME ZONE 'UTC')::date`,
  /** ln(amount); a zero or negative amount in a user's table counts as one cent, not an error. */
  lnAmount: (column: string) => `ln(greatest(${column}, 0.01))`,
  /** How long per-minute counts are kept: an hour of "last hour" plus room for late invoices. */
  MINUTES_KEPT: `interval '2 hours'`,
  /**
   * A receiver's payment behaviour as of `month` (a date, the first of a UTC month): the 12
   * months before it in risk_receiver_payment_months (at most 12 rows), joined as \`rp\`, and
   * all receivers' over the same months (risk_payment_months), as \`ap\`.
   */
  receiverPaymentsJoin: (receiver: string, month: string) => `LEFT JOIN LATERAL (
      SELECT sum(r.due_invoices) AS due, sum(r.late_invoices) AS late, sum(r.settled_late) AS settled_late, sum(r.days_late) AS days_late
      FROM risk_receiver_payment_months r
      WHERE r.receiver_id = ${receiver} AND r.month BETWEEN (${month} - interval '12 months')::date AND (${month} - interval '1 month')::date
    ) rp ON true
    LEFT JOIN LATERAL (
      SELECT sum(a.due_invoices) AS due, sum(a.late_invoices) AS late, sum(a.settled_late) AS settled_late, sum(a.days_late) AS days_late
      FROM risk_payment_months a
      WHERE a.month BETWEEN (${month} - interval '12 months')::date AND (${month} - interval '1 month')::date
    ) ap ON true`,
  /** The FeatureRow columns of receiverPaymentsJoin. */
  RECEIVER_PAYMENT_COLUMNS: `coalesce(rp.due, 0)::float8 AS "receiverDueInvoices", coalesce(rp.late, 0)::float8 AS "receiverLateInvoices",
      coalesce(rp.settled_late, 0)::float8 AS "receiverSettledLate", coalesce(rp.days_late, 0)::float8 AS "receiverDaysLate",
      coalesce(ap.due, 0)::float8 AS "allDueInvoices", coalesce(ap.late, 0)::float8 AS "allLateInvoices",
      coalesce(ap.settled_late, 0)::float8 AS "allSettledLate", coalesce(ap.days_late, 0)::float8 AS "allDaysLate"`,
  /** What scoring derives from invoices (aggregates and the backfill's work), scores aside. */
  DERIVED_TABLES: 'risk_customer_months, risk_global_months, risk_customer_pairs, risk_issuer_minutes, risk_backfill_queue, risk_backfill_issuers',
};
