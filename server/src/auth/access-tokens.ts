/**
 * Access tokens: HS256 JWTs with `typ: at+jwt` (RFC 9068), checked for algorithm, issuer,
 * audience, type and expiry. Verified tokens are memoised until they expire, so the hot
 * path does not redo the HMAC for every request; revocation is checked separately.
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
}

export interface AccessTokenOptions {
  secret: string;
  issuer: string;
  audience: string;
  ttlSeconds: number;
  now?: () => number;
}

const invalid = () => new AppError('unauthorized', 'access token is invalid');

export function createAccessTokens(options: AccessTokenOptions): AccessTokens {
  const key = new TextEncoder().encode(options.secret);
  const now = options.now ?? (() => Date.now());
  const verified = new LRUCache<string, AccessClaims>({ max: 50_000 });
  return {
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
      const cached = verified.get(token);
      if (cached) {
        if (cached.exp * 1000 <= now())
          throw new AppError('token_expired', 'access token has expired');
        return cached;
      }
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
        verified.set(token, claims, { ttl: Math.max(1, claims.exp * 1000 - now()) });
        return claims;
      } catch (err) {
        if (err instanceof errors.JWTExpired)
          throw new AppError('token_expired', 'access token has expired');
        if (err instanceof AppError) throw err;
        throw invalid();
      }
    },
  };
}
