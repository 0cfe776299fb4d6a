-- The user's tables, exactly as DESIGN.md gives them. IF NOT EXISTS: an existing table is the
-- user's and is accepted as it is (the gateway checks its columns after migrating).
CREATE TABLE IF NOT EXISTS customers (
  customer_id serial PRIMARY KEY,
  customer_name text NOT NULL
);

CREATE TABLE IF NOT EXISTS invoices (
  invoice_id bigserial PRIMARY KEY,
  issue_date timestamptz NOT NULL DEFAULT now(),
  issuer_id int NOT NULL REFERENCES customers,
  receiver_id int NOT NULL REFERENCES customers,
  amount_usd numeric(14,2) NOT NULL
);
