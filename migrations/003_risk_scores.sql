-- Risk scores and the running aggregates the scorer keeps, so that scoring one invoice never
-- rescans its issuer's history. No foreign key to invoices: the gateway's tables must never stop
-- a user's DELETE of an invoice; the feed removes the score of a deleted invoice instead.

-- The features of each model version, in the order scores store their values.
CREATE TABLE risk_models (
  model_version text PRIMARY KEY,
  features text[] NOT NULL
);

CREATE TABLE invoice_risk_scores (
  invoice_id bigint PRIMARY KEY,
  -- Order of all scores (riskScores pages).
  seq bigint GENERATED ALWAYS AS IDENTITY,
  -- The riskScored cursor: 1, 2, 3, ... over live scores, assigned under one advisory lock, so
  -- its order is commit order and it has no gaps: `live_seq > cursor` never skips a row that
  -- committed late, and a subscriber that sees 7 after 5 knows to read 6 from here.
  -- NULL for scores made by the backfill, which are never pushed.
  live_seq bigint UNIQUE,
  issuer_id int NOT NULL,
  receiver_id int NOT NULL,
  score double precision NOT NULL CHECK (score >= 0 AND score <= 1),
  band text NOT NULL CHECK (band IN ('LOW', 'MEDIUM', 'HIGH')),
  model_version text NOT NULL,
  -- Each feature's value and contribution, in risk_models.features order: about 150 bytes where
  -- the same reasons as JSON took 400, on a table that grows with every invoice.
  feature_values double precision[] NOT NULL,
  contributions double precision[] NOT NULL,
  scored_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX invoice_risk_scores_seq_idx ON invoice_risk_scores (seq);

-- Per issuer and calendar month (UTC): count, sum and sum of squares of ln(amount). The last 12
-- months of an issuer are at most 13 rows.
CREATE TABLE risk_customer_months (
  customer_id int NOT NULL,
  month date NOT NULL,
  invoices bigint NOT NULL,
  sum_log double precision NOT NULL,
  sumsq_log double precision NOT NULL,
  PRIMARY KEY (customer_id, month)
);

-- The same over all issuers: the prior an issuer with a short history is shrunk towards.
CREATE TABLE risk_global_months (
  month date PRIMARY KEY,
  invoices bigint NOT NULL,
  sum_log double precision NOT NULL,
  sumsq_log double precision NOT NULL
);

-- Every issuer -> receiver pair seen, with its first issue date ("a first invoice between them").
CREATE TABLE risk_customer_pairs (
  issuer_id int NOT NULL,
  receiver_id int NOT NULL,
  first_issue_date timestamptz NOT NULL,
  PRIMARY KEY (issuer_id, receiver_id)
);

-- Per issuer and UTC minute, for the last two hours: a busy issuer's last hour is at most 60
-- rows here, where counting its invoices would read hundreds of thousands of index entries.
CREATE TABLE risk_issuer_minutes (
  issuer_id int NOT NULL,
  minute timestamptz NOT NULL,
  invoices bigint NOT NULL,
  PRIMARY KEY (issuer_id, minute)
);

-- Invoices that existed when the feed's slot was created, to be scored by the backfill, by
-- issuer (a batch takes whole issuers, since features look at an issuer's own history).
CREATE TABLE risk_backfill_queue (
  issuer_id int NOT NULL,
  invoice_id bigint NOT NULL,
  PRIMARY KEY (issuer_id, invoice_id)
);
CREATE TABLE risk_backfill_issuers (
  issuer_id int PRIMARY KEY,
  invoices bigint NOT NULL
);
