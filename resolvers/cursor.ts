import { badUserInput } from '../core/errors.js';
import { MAX_INVOICE_ID } from './ids.js';
import type { InvoiceRecord, PagePosition } from '../sources/postgres/invoiceStore.js';

/**
 * Opaque cursors for keyset pagination: the position (issue date with microseconds, invoice id)
 * of the last row seen, base64url-encoded. Clients must not parse them.
 */
export function encodeCursor(invoice: InvoiceRecord): string {
  return Buffer.from(`${invoice.issueDate}|${invoice.id}`, 'utf8').toString('base64url');
}

const POSITION = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)\|(\d{1,19})$/;

export function decodeCursor(cursor: string, argument = 'after'): PagePosition {
  const match = /^[A-Za-z0-9_-]{1,200}$/.test(cursor) ? POSITION.exec(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  if (!match || !isRealInstant(match[1]!) || BigInt(match[2]!) > MAX_INVOICE_ID) {
    throw badUserInput(`${argument} is not a cursor returned by this API`);
  }
  return { issueDate: match[1]!, invoiceId: match[2]! };
}

/**
 * Date.parse accepts 30 February, 24:00 and year 0, which Postgres refuses: the instant must
 * round-trip and fall in years 1 to 9999.
 */
function isRealInstant(iso: string): boolean {
  const ms = Date.parse(iso);
  return !Number.isNaN(ms) && !iso.startsWith('0000') && new Date(ms).toISOString().slice(0, 19) === iso.slice(0, 19);
}

/**
 * A position among the scores: `kind` keeps a riskScored cursor (live order) and a riskScores
 * page cursor (all scores) from being passed for each other.
 */
export function encodeSeqCursor(kind: 'live' | 'page', seq: string): string {
  return Buffer.from(`${kind}:${seq}`, 'utf8').toString('base64url');
}

export function decodeSeqCursor(kind: 'live' | 'page', cursor: string, argument = 'after'): string {
  const match = /^[A-Za-z0-9_-]{1,40}$/.test(cursor) ? /^(live|page):(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  if (!match || match[1] !== kind || BigInt(match[2]!) > MAX_INVOICE_ID) throw badUserInput(`${argument} is not a cursor returned by this API`);
  return match[2]!;
}
