import { badUserInput } from '../core/errors.js';
import { MAX_IDS } from '../schema/limits.js';

const DIGITS = /^\d{1,19}$/;
/** invoices.invoice_id is bigint. */
export const MAX_INVOICE_ID = 9223372036854775807n;
const MAX_INT = 2147483647n;

function parseId(raw: string, argument: string, max: bigint, kind: string): string {
  if (!DIGITS.test(raw)) throw badUserInput(`${argument} must be a non-negative whole number, got an invalid ${kind} id`);
  const value = BigInt(raw);
  if (value > max) throw badUserInput(`${argument} is beyond the largest ${kind} id (${max})`);
  // Canonical form, so "007" and "7" share one loader and cache entry.
  return value.toString();
}

export const parseInvoiceId = (raw: string, argument = 'id') => parseId(raw, argument, MAX_INVOICE_ID, 'invoice');

/** customers.customer_id is int. */
export const parseCustomerId = (raw: string, argument = 'id') => parseId(raw, argument, MAX_INT, 'customer');

/** A bounded id list; each id validated, order kept (duplicates allowed, answered in place). */
export function parseIdList(raws: readonly string[], parse: (raw: string, argument: string) => string): string[] {
  if (raws.length > MAX_IDS) throw badUserInput(`ids may hold at most ${MAX_IDS} ids, got ${raws.length}`);
  return raws.map((raw, i) => parse(raw, `ids[${i}]`));
}
