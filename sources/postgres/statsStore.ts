import type pg from 'pg';
import type { Database, Statement } from './database.js';
import { translate } from './database.js';
import type { Logger } from 'pino';

/** Who a customer is in an invoice, for grouping. */
export type StatsRole = 'issuer' | 'receiver';
export type StatsGranularity = 'MONTH' | 'TOTAL';
export type StatsOrder = 'TOTAL_DESC' | 'COUNT_DESC' | 'CUSTOMER_ASC';

/** Where a page starts: after this row of the order. */
export interface StatsPosition {
  readonly sortValue: string | null;
  readonly customerId: number;
  readonly month: string | null;
}

export interface StatsQuery {
  readonly role: StatsRole;
  readonly months: number;
  readonly customerIds: readonly number[] | null;
  readonly granularity: StatsGranularity;
  readonly orderBy: StatsOrder;
  /** Rows wanted plus one (to know whether another page follows). */
  readonly limit: number;
  readonly after: StatsPosition | null;
}

/** One group: a customer, or a customer and month; money as exact decimal text. */
export interface StatsGroup {
  readonly customerId: number;
  readonly month: string | null;
  readonly invoices: string;
  readonly totalUsd: string;
  readonly minUsd: string;
  readonly maxUsd: string;
  /** Invoices over every group of the answer (not only this page). */
  readonly allInvoices: string;
}

/** The query's window, in Postgres's clock: the last n calendar months in UTC, this one included. */
export interface StatsWindow {
  /** YYYY-MM of each month, oldest first. */
  readonly months: string[];
  readonly from: string;
  readonly to: string;
  /** When the snapshot was taken (ISO 8601 UTC). */
  readonly asOf: string;
  /** The lake generation current in the snapshot (0: none usable). */
  readonly lakeGeneration: number;
}

/**
 * Live invoices grouped by (month, customer) in Postgres, as one text of records (one parameter
 * for DuckDB, which splits text far faster than it binds long lists); money as exact decimals.
 */
export interface LiveGroups {
  readonly groups: number;
  /** Invoices over all groups. */
  readonly invoices: number;
  /** Every total is under 10^15 (fits DECIMAL(18,2), which DuckDB parses far faster than DECIMAL(38,2)). */
  readonly small: boolean;
  /** `month customer invoices total min max` per group, groups separated by commas. */
  readonly records: string;
}

/** Allow-lists: the only identifiers and expressions statements are made of. */
const PARTY: Record<StatsRole, string> = { issuer: 'issuer_id', receiver: 'receiver_id' };
/** The measure each order sorts by, descending; CUSTOMER_ASC sorts by customer (and month) only. */
const SORT_COLUMN: Record<StatsOrder, string | null> = { TOTAL_DESC: 'total', COUNT_DESC: 'invoices', CUSTOMER_ASC: null };

/**
 * The keyset condition and ORDER BY for a sort, over a relation named `ranked`. `p` gives the placeholders, cast, of the
 * position: sort value, customer id, month ('' for TOTAL rows); a null customer: the first page.
 */
export function keysetSql(order: StatsOrder, p: { value: string; customer: string; month: string }): { where: string; orderBy: string } {
  const sort = SORT_COLUMN[order];
  const tail = `(customer_id, coalesce(month, '')) > (${p.customer}, ${p.month})`;
  // ORDER BY names the input columns of `ranked`: a bare name would mean the output column of
  // that name, which is text (and sorts "9" above "442").
  if (!sort) return { where: `(${p.customer} IS NULL OR ${tail})`, orderBy: `ranked.customer_id, ranked.month` };
  return {
    where: `(${p.customer} IS NULL OR ${sort} < ${p.value} OR (${sort} = ${p.value} AND ${tail}))`,
    orderBy: `ranked.${sort} DESC, ranked.customer_id, ranked.month`,
  };
}

export const positionValues = (after: StatsPosition | null) => [after?.sortValue ?? null, after?.customerId ?? null, after?.month ?? ''];

const WINDOW_SQL = `date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`;

const WINDOW: Statement = {
  name: 'stats_window',
  text: `SELECT array_agg(to_char(m, 'YYYY-MM') ORDER BY m) AS months,
      to_char(min(m) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "from",
      to_char((max(m) + interval '1 month') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "to",
      to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "asOf",
      (SELECT CASE WHEN manifest_key IS NULL THEN 0 ELSE generation::int END FROM lake_state) AS "lakeGeneration"
    FROM generate_series(${WINDOW_SQL} - make_interval(months => $1::int - 1), ${WINDOW_SQL}, interval '1 month') AS g(m)`,
};

/** Current versions of these invoices in the window, grouped by (month, party), optionally only some parties. */
const liveGroupsStatement = (role: StatsRole): Statement => ({
  name: `stats_live_groups_${role}`,
  // Grouped by the month's timestamp, printed after: sorting 10,000 fresh invoices by the month's
  // text (a collation compare per row) cost more than the grouping itself.
  text: `WITH g AS (
      SELECT date_trunc('month', issue_date AT TIME ZONE 'UTC') AS month, ${PARTY[role]} AS customer_id,
        count(*)::int AS invoices, sum(amount_usd) AS total, min(amount_usd) AS min_usd, max(amount_usd) AS max_usd
      FROM invoices
      WHERE invoice_id = ANY($1::bigint[]) AND issue_date >= $2::timestamptz AND issue_date < $3::timestamptz
        AND ($4::int[] IS NULL OR ${PARTY[role]} = ANY($4::int[]))
      GROUP BY 1, 2)
    SELECT count(*)::int AS groups, coalesce(sum(invoices), 0)::int AS invoices, coalesce(max(abs(total)) < 1e15, true) AS small,
      coalesce(string_agg(concat_ws(' ', to_char(month, 'YYYY-MM'), customer_id, invoices, total, min_usd, max_usd), ','), '') AS records
    FROM g`,
});
const LIVE_GROUPS: Record<StatsRole, Statement> = { issuer: liveGroupsStatement('issuer'), receiver: liveGroupsStatement('receiver') };
const NO_LIVE_GROUPS: LiveGroups = { groups: 0, invoices: 0, small: true, records: '' };

/** Invoices of the window, whole: those given (null: all of them, when the lake cannot be used). */
const LIVE_INVOICES: Statement = {
  name: 'stats_live_invoices',
  text: `SELECT coalesce(array_agg(invoice_id::text), '{}') AS ids,
      coalesce(array_agg(to_char(issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')), '{}') AS dates,
      coalesce(array_agg(issuer_id), '{}') AS issuers, coalesce(array_agg(receiver_id), '{}') AS receivers,
      coalesce(array_agg(amount_usd::text), '{}') AS amounts
    FROM invoices WHERE ($1::bigint[] IS NULL OR invoice_id = ANY($1::bigint[])) AND issue_date >= $2::timestamptz AND issue_date < $3::timestamptz`,
};

/** These parties' invoices in the window, counted up to $4 (an index-only scan that stops there). */
const partyInvoicesStatement = (role: StatsRole): Statement => ({
  name: `stats_party_invoices_${role}`,
  text: `SELECT count(*)::int AS n FROM (
      SELECT 1 FROM invoices WHERE ${PARTY[role]} = ANY($1::int[]) AND issue_date >= $2::timestamptz AND issue_date < $3::timestamptz LIMIT $4) AS i`,
});
const PARTY_INVOICES: Record<StatsRole, Statement> = { issuer: partyInvoicesStatement('issuer'), receiver: partyInvoicesStatement('receiver') };

/** How many of these invoice ids no invoice has (payments that match nothing). */
const UNKNOWN_INVOICES: Statement = {
  name: 'stats_unknown_invoices',
  text: `SELECT count(*)::int AS unknown FROM unnest($1::bigint[]) AS p(id) WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.invoice_id = p.id)`,
};

/** Invoices as column arrays (what DuckDB takes as list parameters). */
export interface InvoiceColumns {
  readonly ids: string[];
  readonly dates: string[];
  readonly issuers: number[];
  readonly receivers: number[];
  readonly amounts: string[];
}

/** The Postgres engine: one GROUP BY over the (party, issue_date) index or the table. */
function groupStatement(role: StatsRole, granularity: StatsGranularity, order: StatsOrder, filtered: boolean): Statement {
  const party = PARTY[role];
  const month = granularity === 'MONTH' ? `to_char(date_trunc('month', issue_date AT TIME ZONE 'UTC'), 'YYYY-MM')` : 'NULL::text';
  const keyset = keysetSql(order, { value: '$5::numeric', customer: '$6::int', month: '$7::text' });
  return {
    name: `stats_pg_${role}_${granularity}_${order}_${filtered ? 'some' : 'all'}`.toLowerCase(),
    text: `WITH g AS (
        SELECT ${party} AS customer_id, ${month} AS month, count(*) AS invoices, sum(amount_usd) AS total,
          min(amount_usd) AS min_usd, max(amount_usd) AS max_usd
        FROM invoices
        WHERE issue_date >= $1::timestamptz AND issue_date < $2::timestamptz ${filtered ? `AND ${party} = ANY($3::int[])` : 'AND $3::int[] IS NULL'}
        GROUP BY 1, 2
      ), ranked AS (
        -- $5 typed even where the order has no sort value (CUSTOMER_ASC): Postgres must know every parameter's type.
        SELECT g.*, sum(invoices) OVER () AS all_invoices, $5::numeric AS after_value FROM g)
      SELECT customer_id AS "customerId", month, invoices::text AS invoices, total::text AS "totalUsd", min_usd::text AS "minUsd",
        max_usd::text AS "maxUsd", all_invoices::text AS "allInvoices"
      FROM ranked WHERE ${keyset.where}
      ORDER BY ${keyset.orderBy} LIMIT $4`,
  };
}

/**
 * A consistent read of Postgres for one analytics query: a REPEATABLE READ snapshot taken
 * first, so the lake's changes and the live rows can be matched to the same moment.
 */
export interface StatsSnapshot {
  readonly window: StatsWindow;
  /** Current versions of these invoices inside the window, grouped as the query groups (and filtered to its customers). */
  liveGroups(ids: readonly string[], query: StatsQuery): Promise<LiveGroups>;
  /** The whole answer from Postgres (the small-customer shape, or the fallback). */
  groups(query: StatsQuery): Promise<StatsGroup[]>;
  /** Whether the query's customers have at most `limit` invoices in the window (counted on the index, stopping past the limit). */
  invoicesAtMost(query: StatsQuery, limit: number): Promise<boolean>;
  /** Whole invoices of the window: these ids, or all (null). */
  invoices(ids: readonly string[] | null): Promise<InvoiceColumns>;
  /** How many of these ids are no invoice's. */
  unknownInvoices(ids: readonly string[]): Promise<number>;
}

export interface StatsStore {
  withSnapshot<T>(months: number, work: (snapshot: StatsSnapshot) => Promise<T>): Promise<T>;
}

export function createStatsStore(db: Database, logger: Logger, timeoutMs: number): StatsStore {
  return {
    async withSnapshot(months, work) {
      return db.withClient(async (client) => {
        const run = async <Row extends pg.QueryResultRow>(statement: Statement, values: unknown[]) => {
          try {
            // The pool's client-side limit follows DATABASE_STATEMENT_TIMEOUT_MS, which would cut an
            // analytics statement the server still lets run (its limit is timeoutMs, set below).
            return (await client.query<Row>({ name: statement.name, text: statement.text, values, query_timeout: timeoutMs + 1000 } as pg.QueryConfig)).rows;
          } catch (err) {
            throw translate(err, statement.name, logger);
          }
        };
        // Analytics may take longer than a lookup: their own limit, for this transaction only, set
        // in the same round trip (an integer from the config, so it can be written into the text).
        await client.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`);
        try {
          const [window] = await run<StatsWindow>(WINDOW, [months]);
          const result = await work({
            window: window!,
            liveGroups: async (ids, query) => {
              if (ids.length === 0) return NO_LIVE_GROUPS;
              // Planned for the actual list, a long one (thousands of fresh inserts) gets a parallel
              // scan of the whole table (100+ ms); the generic plan looks each id up in the primary key.
              await client.query(`SET LOCAL plan_cache_mode = force_generic_plan`);
              return (await run<LiveGroups & pg.QueryResultRow>(LIVE_GROUPS[query.role], [ids, window!.from, window!.to, query.customerIds]))[0]!;
            },
            invoices: async (ids) => (await run<InvoiceColumns & pg.QueryResultRow>(LIVE_INVOICES, [ids, window!.from, window!.to]))[0]!,
            invoicesAtMost: async (query, limit) =>
              query.customerIds === null
                ? false
                : (await run<{ n: number }>(PARTY_INVOICES[query.role], [query.customerIds, window!.from, window!.to, limit + 1]))[0]!.n <= limit,
            unknownInvoices: async (ids) => (ids.length === 0 ? 0 : (await run<{ unknown: number }>(UNKNOWN_INVOICES, [ids]))[0]!.unknown),
            groups: (query) =>
              run<StatsGroup>(groupStatement(query.role, query.granularity, query.orderBy, query.customerIds !== null), [
                window!.from,
                window!.to,
                query.customerIds,
                query.limit,
                ...positionValues(query.after),
              ]),
          });
          await client.query('COMMIT');
          return result;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
      });
    },
  };
}
