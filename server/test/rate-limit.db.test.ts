import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let t: TestApp;
beforeAll(async () => {
  t = await createTestApp({
    overrides: { rate_limit: { enabled: true, user_points: 5, ip_points: 3, window_s: 60 } },
  });
});
afterAll(async () => {
  await t.close();
});

describe('rate limits (embedded, in-memory store)', () => {
  it('limits a signed-in user per user, with headers, a 429 envelope and Retry-After', async () => {
    const a = await t.userWithToken();
    const b = await t.userWithToken();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push((await t.inject(a.token, { method: 'GET', url: '/auth/me' })).statusCode);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    const limited = await t.inject(a.token, { method: 'GET', url: '/auth/me' });
    expect(limited.statusCode).toBe(429);
    expect(limited.json().error.code).toBe('rate_limited');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.headers['x-ratelimit-limit']).toBe('5');
    // Another user from the same IP has their own budget.
    expect((await t.inject(b.token, { method: 'GET', url: '/auth/me' })).statusCode).toBe(200);
  });

  it('limits anonymous calls per IP, but never /health', async () => {
    const statuses: number[] = [];
    const ip = { remoteAddress: '10.9.8.7' };
    for (let i = 0; i < 4; i++) {
      statuses.push(
        (
          await t.app.inject({
            method: 'POST',
            url: '/auth/refresh',
            payload: { refresh_token: 'x' },
            ...ip,
          })
        ).statusCode,
      );
    }
    expect(statuses).toEqual([401, 401, 401, 429]);
    for (let i = 0; i < 10; i++) {
      expect((await t.app.inject({ method: 'GET', url: '/health', ...ip })).statusCode).toBe(200);
    }
    // A different IP is not affected.
    expect(
      (
        await t.app.inject({
          method: 'POST',
          url: '/auth/refresh',
          payload: { refresh_token: 'x' },
          remoteAddress: '10.9.8.8',
        })
      ).statusCode,
    ).toBe(401);
  });
});
