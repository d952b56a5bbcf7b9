import { SignJWT, UnsecuredJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { createAccessTokens } from './access-tokens.ts';

const SECRET = 'unit-test-secret-0123456789abcdefghijklmnop';
const options = { secret: SECRET, issuer: 'iss-a', audience: 'aud-a', ttlSeconds: 900 };
const key = new TextEncoder().encode(SECRET);

async function forge(
  claims: Record<string, unknown>,
  header: Record<string, unknown> = {},
  signKey = key,
) {
  return new SignJWT({ sid: 's1', ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', ...header } as never)
    .setSubject('u1')
    .setIssuer((claims.iss as string) ?? 'iss-a')
    .setAudience((claims.aud as string) ?? 'aud-a')
    .setIssuedAt()
    .setExpirationTime((claims.exp as number) ?? '15m')
    .sign(signKey);
}

describe('access tokens', () => {
  it('round-trips subject and session', async () => {
    const tokens = createAccessTokens(options);
    const { token, expiresIn } = await tokens.sign('user-1', 'session-1');
    expect(expiresIn).toBe(900);
    expect(await tokens.verify(token)).toMatchObject({ sub: 'user-1', sid: 'session-1' });
  });

  it('refuses forged, alg none, wrong audience/issuer/type and expired tokens', async () => {
    const tokens = createAccessTokens(options);
    const bad = [
      await forge({}, {}, new TextEncoder().encode('another-secret-0123456789abcdefghijklmn')),
      new UnsecuredJWT({ sid: 's1' })
        .setSubject('u1')
        .setIssuer('iss-a')
        .setAudience('aud-a')
        .setIssuedAt()
        .setExpirationTime('15m')
        .encode(),
      await forge({ aud: 'someone-else' }),
      await forge({ iss: 'someone-else' }),
      await forge({}, { typ: 'JWT' }),
    ];
    for (const token of bad)
      await expect(tokens.verify(token)).rejects.toMatchObject({
        code: 'unauthorized',
        statusCode: 401,
      });
    const expired = await forge({ exp: Math.floor(Date.now() / 1000) - 60 });
    await expect(tokens.verify(expired)).rejects.toMatchObject({
      code: 'token_expired',
      statusCode: 401,
    });
  });

  it('a memoised token still expires on time', async () => {
    let now = Date.now();
    const tokens = createAccessTokens({ ...options, ttlSeconds: 60, now: () => now });
    const { token } = await tokens.sign('u', 's');
    await tokens.verify(token);
    now += 61_000;
    await expect(tokens.verify(token)).rejects.toMatchObject({ code: 'token_expired' });
  });

  it('verifyMemoised answers only for tokens verified before, and checks expiry on each use', async () => {
    let now = Date.now();
    const tokens = createAccessTokens({ ...options, ttlSeconds: 60, now: () => now });
    const { token } = await tokens.sign('u', 's');
    expect(tokens.verifyMemoised(token)).toBeUndefined();
    await tokens.verify(token);
    expect(tokens.verifyMemoised(token)).toMatchObject({ sub: 'u', sid: 's' });
    // A refused token is never memoised.
    const forged = await forge(
      {},
      {},
      new TextEncoder().encode('another-secret-0123456789abcdefghijklmn'),
    );
    await expect(tokens.verify(forged)).rejects.toMatchObject({ code: 'unauthorized' });
    expect(tokens.verifyMemoised(forged)).toBeUndefined();
    now += 61_000;
    expect(() => tokens.verifyMemoised(token)).toThrow(
      expect.objectContaining({ code: 'token_expired' }),
    );
  });
});
