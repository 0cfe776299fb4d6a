-- Receivers' payment behaviour for the risk model (risk-v2), derived from the payments dataset in
-- the lake and replaced whole by each refresh. Per receiver and UTC calendar month, two counts
-- that never depend on when they are read, so a score "as of" month M sums months M-12 .. M-1:
--   by due month:        invoices that fell due, and those not settled (fully paid) by their due
--                        date: once the due date has passed, that verdict never changes;
--   by settlement month: invoices settled after their due date, and their days past due summed.
-- A receiver's late payments, as of an invoice's issue date, are thus read from at most 12 rows.
CREATE TABLE risk_receiver_payment_months (
  receiver_id int NOT NULL,
  month date NOT NULL,
  due_invoices bigint NOT NULL,
  late_invoices bigint NOT NULL,
  settled_late bigint NOT NULL,
  days_late double precision NOT NULL,
  PRIMARY KEY (receiver_id, month)
);

-- The same over all receivers: the usual behaviour a receiver is compared with.
CREATE TABLE risk_payment_months (
  month date PRIMARY KEY,
  due_invoices bigint NOT NULL,
  late_invoices bigint NOT NULL,
  settled_late bigint NOT NULL,
  days_late double precision NOT NULL
);

-- What the tables were made from: the dataset versions and the cut-off month, so a refresh is
-- skipped when nothing it reads has changed.
CREATE TABLE risk_receiver_payments_state (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  fingerprint text NOT NULL,
  refreshed_at timestamptz NOT NULL,
  receiver_months bigint NOT NULL
);
