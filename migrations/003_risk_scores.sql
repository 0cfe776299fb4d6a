-- Risk scores and the running aggregates the scorer keeps, so that scoring one invoice never
-- rescans its issuer's history. No foreign key to invoices: the gateway's tables must never stop
-- a user's DELETE of an invoice; the feed removes the score of a deleted invoice instead.

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
  reasons jsonb NOT NULL,
  model_version text NOT NULL,
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
  invoices bigint NOT NULL,
  PRIMARY KEY (issuer_id, receiver_id)
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

-- One row per replication slot: when it was created and from which point the feed holds.
CREATE TABLE gateway_feed_state (
  slot_name text PRIMARY KEY,
  consistent_point pg_lsn NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  backfill_total bigint NOT NULL DEFAULT 0
);
