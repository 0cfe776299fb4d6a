import { PublicError } from '../core/errors.js';
import { sha256 } from './config.js';

/**
 * The query to run under trusted documents: a client sends a document's hash (Apollo's
 * persisted-query extension, `extensions.persistedQuery.sha256Hash`) or its full text; either
 * must be one of the trusted documents. Anything else is FORBIDDEN, so a stolen token cannot run
 * operations the gateway's own clients never send.
 */
export function trustedQuery(documents: ReadonlyMap<string, string>, query: unknown, extensions: unknown): string {
  const hash = (extensions as { persistedQuery?: { sha256Hash?: unknown } } | undefined)?.persistedQuery?.sha256Hash;
  if (typeof query === 'string') {
    if (documents.has(sha256(query))) return query;
  } else if (typeof hash === 'string') {
    const known = documents.get(hash.toLowerCase());
    if (known !== undefined) return known;
  }
  throw new PublicError('FORBIDDEN', 'only trusted documents run on this gateway, and this operation is not one of them');
}
