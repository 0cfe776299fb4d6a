import { createHash } from 'node:crypto';
import { forbidden } from '../core/errors.js';

/** The operations a gateway with TRUSTED_DOCUMENTS_FILE runs, by hash and by text. */
export interface TrustedDocuments {
  /** sha256 (lowercase hex) of each document, to its text. */
  readonly byHash: ReadonlyMap<string, string>;
  readonly texts: ReadonlySet<string>;
}

/**
 * The trusted documents of a manifest: Apollo's persisted-query manifest (what
 * @apollo/generate-persisted-query-manifest writes) or a plain object of hash to document (what
 * GraphQL Yoga and graphql-codegen's persisted documents write). Each hash is checked against
 * its text, so a manifest cannot smuggle in a document under another's hash. Throws an Error
 * naming the first bad entry.
 */
export function parseTrustedDocuments(json: unknown): TrustedDocuments {
  const manifest = json as { format?: unknown; operations?: unknown };
  const entries: [unknown, unknown][] =
    manifest?.format === 'apollo-persisted-query-manifest' && Array.isArray(manifest.operations)
      ? manifest.operations.map((op: { id?: unknown; body?: unknown }) => [op?.id, op?.body])
      : json && typeof json === 'object' && !Array.isArray(json)
        ? Object.entries(json)
        : [];
  const byHash = new Map<string, string>();
  for (const [hash, body] of entries) {
    if (typeof hash !== 'string' || typeof body !== 'string' || sha256(body) !== hash.toLowerCase()) {
      throw new Error(`has an entry whose id is not the sha256 of its document (${String(hash).slice(0, 16)})`);
    }
    byHash.set(hash.toLowerCase(), body);
  }
  if (byHash.size === 0) throw new Error('lists no documents');
  return { byHash, texts: new Set(byHash.values()) };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * The query to run under trusted documents: a client sends a document's hash (Apollo's
 * persisted-query extension, `extensions.persistedQuery.sha256Hash`) or its full text; either
 * must be one of the trusted documents. Anything else is FORBIDDEN, so a stolen token cannot run
 * operations the gateway's own clients never send.
 */
export function trustedQuery(documents: TrustedDocuments, query: unknown, extensions: unknown): string {
  if (typeof query === 'string') {
    if (documents.texts.has(query)) return query;
  } else {
    const hash = (extensions as { persistedQuery?: { sha256Hash?: unknown } } | undefined)?.persistedQuery?.sha256Hash;
    const known = typeof hash === 'string' ? documents.byHash.get(hash.toLowerCase()) : undefined;
    if (known !== undefined) return known;
  }
  throw forbidden('only trusted documents run on this gateway, and this operation is not one of them');
}
