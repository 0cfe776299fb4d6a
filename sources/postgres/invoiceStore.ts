import { inKeyOrder, type Database, type Statement } from './database.js';
import { badUserInput } from '../../core/errors.js';

/** An invoice as the gateway passes it around: ids and money as exact strings. */
export interface InvoiceRecord {
  readonly id: string;
  /** ISO 8601 in UTC with Postgres's microseconds, so cursors built from it are exact. */
  readonly issueDate: string;
  readonly issuerId: string;
  readonly receiverId: string;
  /** numeric(14,2) as text, e.g. "999.90". */
  readonly amountUsd: string;
}

/** Keyset position in a party's invoices, newest first. */
export interface PagePosition {
  readonly issueDate: string;
  readonly invoiceId: string;
}

export type PartyRole = 'issuer' | 'receiver';

export interface PageRequest {
  readonly customerId: string;
  readonly role: PartyRole;
  /** Only invoices with this customer on the other side; null: all of the customer's. */
  readonly counterpartyId: string | null;
  /** Rows wanted; the store reads one more to know whether a next page exists. */
  readonly limit: number;
  readonly after: PagePosition | null;
}

export interface NewInvoice {
  readonly issuerId: string;
  readonly receiverId: string;
  readonly amountUsd: string;
  readonly issueDate: string | null;
}

const COLUMNS = `i.invoice_id::text AS id,
  to_char(i.issue_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "issueDate",
  i.issuer_id::text AS "issuerId", i.receiver_id::text AS "receiverId", i.amount_usd::text AS "amountUsd"`;

const BY_IDS: Statement = {
  name: 'invoices_by_ids',
  text: `SELECT ${COLUMNS} FROM invoices i WHERE i.invoice_id = ANY($1::bigint[])`,
};

/**
 * One statement for the pages of many customers: a LATERAL index scan per key. The party column
 * comes from this allow-list, never from input. The row comparison against coalesced bounds keeps
 * the keyset condition an index condition on (party, issue_date, invoice_id).
 */
export const PAGES: Record<PartyRole, Statement> = {
  issuer: pagesStatement('issuer_id'),
  receiver: pagesStatement('receiver_id'),
};

function pagesStatement(column: 'issuer_id' | 'receiver_id'): Statement {
  const other = column === 'issuer_id' ? 'receiver_id' : 'issuer_id';
  return {
    name: `invoice_pages_by_${column}`,
    text: `SELECT k.ord::int AS ord, ${COLUMNS}
      FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::bigint[], $5::int[])
        WITH ORDINALITY AS k(customer_id, lim, after_date, after_id, counterparty_id, ord)
      CROSS JOIN LATERAL (
        SELECT * FROM invoices i
        WHERE i.${column} = k.customer_id
          AND (k.counterparty_id IS NULL OR i.${other} = k.counterparty_id)
          AND (i.issue_date, i.invoice_id) < (coalesce(k.after_date, 'infinity'), coalesce(k.after_id, 9223372036854775807))
        ORDER BY i.issue_date DESC, i.invoice_id DESC
        LIMIT k.lim
      ) i
      ORDER BY k.ord, i.issue_date DESC, i.invoice_id DESC`,
  };
}

const INSERT: Statement = {
  name: 'invoice_insert',
  text: `INSERT INTO invoices AS i (issue_date, issuer_id, receiver_id, amount_usd)
    VALUES (coalesce($1::timestamptz, now()), $2, $3, $4)
    RETURNING ${COLUMNS}`,
};

export interface InvoiceStore {
  /** Invoices in `ids` order, `null` where absent. */
  byIds(ids: readonly string[]): Promise<(InvoiceRecord | null)[]>;
  /** For each request, its page of invoices, newest first, in request order. */
  pages(requests: readonly PageRequest[]): Promise<InvoiceRecord[][]>;
  insert(invoice: NewInvoice): Promise<InvoiceRecord>;
}

export function createInvoiceStore(db: Database): InvoiceStore {
  return {
    async byIds(ids) {
      const rows = await db.query<InvoiceRecord>(BY_IDS, [ids]);
      return inKeyOrder(ids, rows);
    },

    async pages(requests) {
      const result: InvoiceRecord[][] = requests.map(() => []);
      for (const role of ['issuer', 'receiver'] as const) {
        const indexes = requests.flatMap((r, i) => (r.role === role ? [i] : []));
        if (indexes.length === 0) continue;
        const chosen = indexes.map((i) => requests[i]!);
        const rows = await db
          .query<InvoiceRecord & { ord: number }>(PAGES[role], [
            chosen.map((r) => r.customerId),
            chosen.map((r) => r.limit),
            chosen.map((r) => r.after?.issueDate ?? null),
            chosen.map((r) => r.after?.invoiceId ?? null),
            chosen.map((r) => r.counterpartyId),
          ])
          .catch((err: unknown) => {
            if (isBadDateTime(err)) throw badUserInput('after is not a cursor returned by this API');
            throw err;
          });
        for (const { ord, ...invoice } of rows) result[indexes[ord - 1]!]!.push(invoice);
      }
      return result;
    },

    async insert(invoice) {
      try {
        const [row] = await db.query<InvoiceRecord>(INSERT, [
          invoice.issueDate,
          invoice.issuerId,
          invoice.receiverId,
          invoice.amountUsd,
        ]);
        return row!;
      } catch (err) {
        // The resolver checks both parties first; this covers a customer deleted in between.
        const code = (err as { code?: string }).code;
        if (code === '23503') throw badUserInput('issuerId or receiverId does not name an existing customer');
        // Values our own checks let through but Postgres refuses (a 30 February, a year 300000).
        if (isBadDateTime(err)) throw badUserInput('issueDate is not a valid date-time');
        if (code === '22003') throw badUserInput('amountUsd does not fit numeric(14,2)');
        throw err;
      }
    },
  };
}

/**
 * SQLSTATE 22007/22008/22009 (format, range, zone offset), or the table's range check: a
 * date-time Postgres refuses though our own checks let it through.
 */
function isBadDateTime(err: unknown): boolean {
  const { code, constraint } = err as { code?: string; constraint?: string };
  return code === '22007' || code === '22008' || code === '22009' || (code === '23514' && constraint === 'invoices_gw_issue_date_range');
}
