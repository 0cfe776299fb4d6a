-- What the lake holds, and what it does not hold yet. A query answers from the lake's current
-- generation, minus the invoices listed in lake_changes, plus those invoices read live from
-- Postgres: the answer is that of Postgres itself at the moment the query started.

CREATE TABLE lake_state (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  -- 0: no usable lake (never exported, or invoices truncated since); analytics use Postgres.
  generation bigint NOT NULL DEFAULT 0,
  manifest_key text,
  exported_at timestamptz,
  -- The change feed's position the lake consumer has recorded changes up to.
  position pg_lsn NOT NULL DEFAULT '0/0',
  -- Set when the feed's slot is created: only then are all later changes recorded, so only an
  -- export whose snapshot comes after it can be trusted.
  recording boolean NOT NULL DEFAULT false
);
INSERT INTO lake_state DEFAULT VALUES;

-- Invoices inserted, updated or deleted since the export that has not seen them. changed:
-- false when the invoice cannot be in the lake (inserted since), true when the lake may hold
-- an older version of it. xid: the last change's transaction; an export removes the entries
-- whose transaction its snapshot saw.
CREATE TABLE lake_changes (
  invoice_id bigint PRIMARY KEY,
  changed boolean NOT NULL,
  xid xid8 NOT NULL
);
