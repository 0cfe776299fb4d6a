/** What a verified token (or, with AUTH_MODE=off, the gateway itself) says about a client. */
export const ROLES = ['admin', 'analyst', 'customer', 'writer'] as const;
export type Role = (typeof ROLES)[number];

export interface Viewer {
  /** `none`: a valid token whose role the gateway does not know; it may run nothing. */
  readonly role: Role | 'none';
  /** Who is counted against the rate limits: the token's subject, or the client address. */
  readonly subject: string;
  /** A `customer` token's customer id (canonical digits); null for every other role. */
  readonly customerId: string | null;
  /** When the token expires (ms since the epoch); null without a token or `exp`. */
  readonly expiresAt: number | null;
}

/** With AUTH_MODE=off: every client may do everything, and is counted by its address. */
export function unauthenticatedAdmin(address: string): Viewer {
  return { role: 'admin', subject: `addr:${address}`, customerId: null, expiresAt: null };
}

/**
 * Viewers that may see exactly the same things: results computed for one may be served to
 * another (a subscription event executed once for both).
 */
export function accessScope(viewer: Viewer): string {
  return viewer.role === 'customer' ? `customer:${viewer.customerId}` : viewer.role;
}
