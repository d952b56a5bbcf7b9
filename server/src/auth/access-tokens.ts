/**
 * Access tokens: HS256 JWTs with `typ: at+jwt` (RFC 9068), checked for algorithm, issuer,
 * audience, type and expiry. Verified tokens are memoised (expiry is checked on every use),
 * so the hot path does not redo the HMAC for every request; revocation is checked separately.
 */
import { errors, jwtVerify, SignJWT } from 'jose';
import { LRUCache } from 'lru-cache';
import { AppError } from '../errors.ts';

export const ACCESS_TOKEN_TYPE = 'at+jwt';
const ALGORITHMS = ['HS256'];

export interface AccessClaims {
  sub: string;
  sid: string;
  exp: number;
}

export interface AccessTokens {
  sign(userId: string, sessionId: string): Promise<{ token: string; expiresIn: number }>;
  verify(token: string): Promise<AccessClaims>;
  /**
   * verify(), synchronously, for a token verified before (memoised): its claims, or undefined
   * if it has not been verified yet (then call verify). Throws token_expired like verify.
   */
  verifyMemoised(token: string): AccessClaims | undefined;
}

export interface AccessTokenOptions {
  secret: string;
  issuer: string;
  audience: string;
  ttlSeconds: number;
  now?: () => number;
}

const invalid = () => new AppError('unauthorized', 'access token is invalid');
const expired = () => new AppError('token_expired', 'access token has expired');

export function createAccessTokens(options: AccessTokenOptions): AccessTokens {
  const key = new TextEncoder().encode(options.secret);
  const now = options.now ?? (() => Date.now());
  // No TTL in the memo itself: every use checks `exp` (verifyMemoised), which is cheaper than
  // the LRU's own expiry bookkeeping; an expired entry is refused, then evicted in turn.
  const verified = new LRUCache<string, AccessClaims>({ max: 50_000 });
  const verifyMemoised = (token: string): AccessClaims | undefined => {
    const cached = verified.get(token);
    if (cached && cached.exp * 1000 <= now()) throw expired();
    return cached;
  };
  return {
    verifyMemoised,
    async sign(userId, sessionId) {
      const iat = Math.floor(now() / 1000);
      const token = await new SignJWT({ sid: sessionId })
        .setProtectedHeader({ alg: 'HS256', typ: ACCESS_TOKEN_TYPE })
        .setSubject(userId)
        .setIssuer(options.issuer)
        .setAudience(options.audience)
        .setIssuedAt(iat)
        .setExpirationTime(iat + options.ttlSeconds)
        .sign(key);
      return { token, expiresIn: options.ttlSeconds };
    },
    async verify(token) {
      const cached = verifyMemoised(token);
      if (cached) return cached;
      if (token.length > 4096) throw invalid();
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: ALGORITHMS,
          issuer: options.issuer,
          audience: options.audience,
          typ: ACCESS_TOKEN_TYPE,
          requiredClaims: ['sub', 'sid', 'exp', 'iat'],
          currentDate: new Date(now()),
        });
        if (typeof payload.sid !== 'string' || typeof payload.sub !== 'string') throw invalid();
        const claims = { sub: payload.sub, sid: payload.sid, exp: payload.exp! };
        verified.set(token, claims);
        return claims;
      } catch (err) {
        if (err instanceof errors.JWTExpired) throw expired();
        if (err instanceof AppError) throw err;
        throw invalid();
      }
    },
  };
}
