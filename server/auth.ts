import { timingSafeEqual } from 'node:crypto';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { LRUCache } from 'lru-cache';
import { serviceUnavailable, unauthenticated } from '../core/errors.js';
import { parseCustomerId } from '../resolvers/ids.js';
import { ROLES, unauthenticatedAdmin, type Role, type Viewer } from '../resolvers/viewer.js';
import type { AuthSettings } from './config.js';

/** Asymmetric algorithms only with a key set: an HS256 token signed with a public key is refused. */
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
/** Verified tokens kept (by the whole header), so a client sending the same token pays one signature check. */
const VERIFIED_TOKENS = 10_000;

export interface Authenticator {
  readonly mode: AuthSettings['mode'];
  /**
   * The viewer of a request from its Authorization header (`Bearer <jwt>`) and client address.
   * Throws a PublicError: UNAUTHENTICATED ("invalid token" or "expired token", nothing more),
   * or SERVICE_UNAVAILABLE when the identity provider's key set cannot be fetched.
   */
  authenticate(authorization: string | undefined, address: string): Promise<Viewer>;
}

export function createAuthenticator(settings: AuthSettings): Authenticator {
  if (settings.mode === 'off') {
    return { mode: 'off', authenticate: async (_authorization, address) => unauthenticatedAdmin(address) };
  }
  const key: Uint8Array | JWTVerifyGetKey = settings.jwtSecret
    ? new TextEncoder().encode(settings.jwtSecret)
    : // jose caches the set, fetches it again for an unknown kid (at most every cooldown), and
      // refreshes it after cacheMaxAge.
      createRemoteJWKSet(new URL(settings.jwksUrl!), { timeoutDuration: 5_000, cooldownDuration: 5_000, cacheMaxAge: settings.keysMaxAgeSeconds * 1000 });
  const options = {
    algorithms: settings.jwtSecret ? ['HS256'] : ASYMMETRIC,
    issuer: settings.issuer,
    audience: settings.audience,
    clockTolerance: settings.clockSkewSeconds,
    // sub names the client for rate limits; a token without exp would never expire.
    requiredClaims: ['sub', 'exp'],
  };
  // Verified again after the key set's age: a token signed with a key since removed (a leaked
  // one) would otherwise pass until its exp, however far that is.
  const verified = new LRUCache<string, Viewer>({ max: VERIFIED_TOKENS, ttl: settings.keysMaxAgeSeconds * 1000 });

  async function verify(token: string): Promise<Viewer> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key as Uint8Array, options));
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw unauthenticated('expired token');
      // The key set could not be fetched or read (timeout, HTTP error, not a key set): the
      // identity provider is down, which is not the client's token's fault.
      if (keySetUnavailable(err)) throw serviceUnavailable("the identity provider's key set", err);
      throw unauthenticated('invalid token');
    }
    const role = payload[settings.roleClaim];
    const known = typeof role === 'string' && (ROLES as readonly string[]).includes(role) ? (role as Role) : 'none';
    let customerId: string | null = null;
    if (known === 'customer') {
      const claim = payload[settings.customerClaim];
      // A customer token without a usable customer id is not a token this gateway can honour.
      try {
        customerId = parseCustomerId(typeof claim === 'number' ? String(claim) : String(claim ?? ''));
      } catch {
        throw unauthenticated('invalid token');
      }
    }
    return { role: known, subject: `sub:${payload.sub}`, customerId, expiresAt: payload.exp! * 1000 };
  }

  return {
    mode: 'required',
    async authenticate(authorization) {
      if (!authorization) throw unauthenticated('authentication required: send Authorization: Bearer <token>');
      // The common case first: a token verified before, sent as it was then.
      const known = verified.get(authorization);
      if (known) {
        // A token verified earlier is still checked against the clock, as jose would.
        if (untilExpiry(known, settings.clockSkewSeconds) === 0) {
          verified.delete(authorization);
          throw unauthenticated('expired token');
        }
        return known;
      }
      const match = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/i.exec(authorization.trim());
      if (!match) throw unauthenticated('invalid token');
      const viewer = await verify(match[1]!);
      verified.set(authorization, viewer);
      return viewer;
    },
  };
}

function keySetUnavailable(err: unknown): boolean {
  if (!(err instanceof errors.JOSEError)) return true;
  // jose throws a bare JOSEError for a key set answered with a non-200 status or not JSON.
  return err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err.constructor === errors.JOSEError;
}

/** Milliseconds until a viewer's token expires (skew included); undefined for none. */
export function untilExpiry(viewer: Viewer, clockSkewSeconds: number): number | undefined {
  return viewer.expiresAt === null ? undefined : Math.max(viewer.expiresAt + clockSkewSeconds * 1000 - Date.now(), 0);
}

/**
 * Whether a request may read an operator's endpoint (/metrics): always without a token set,
 * else only with `Authorization: Bearer <token>`, compared in constant time.
 */
export function bearerMatches(authorization: string | undefined, token: string | undefined): boolean {
  if (token === undefined) return true;
  const sent = Buffer.from(authorization ?? '');
  const wanted = Buffer.from(`Bearer ${token}`);
  return sent.length === wanted.length && timingSafeEqual(sent, wanted);
}
