/**
 * In-process apps on Redis: rate limits shared through Redis, and what a user sees when
 * Redis goes away and comes back (memory fallback, health `degraded`, user-state cache
 * bypassed while pub/sub is down and cleared after it resumes).
 */
import type { LoginResponse } from '@mezzofy/protocol';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeUserSessions } from '../src/auth/sessions.repository.ts';
import { updateUser } from '../src/users/users.repository.ts';
import {
  clearRedisPrefix,
  countRedisKeys,
  startThrowawayRedis,
  type ThrowawayRedis,
  testKeyPrefix,
  testRedisUrl,
  waitUntil,
} from './helpers/redis.ts';
import { createTestApp, STRONG_PASSWORD, type TestApp } from './helpers/test-app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

const sharedUrl = testRedisUrl();
const prefix = testKeyPrefix('degraded');
const LIMITS = { enabled: true, user_points: 5, ip_points: 8, window_s: 60 };

let testDb: TestDatabase;
let throwaway: ThrowawayRedis | undefined;
const apps: TestApp[] = [];

async function app(redisUrl: string): Promise<TestApp> {
  const t = await createTestApp({
    testDatabase: testDb,
    overrides: { redis: { url: redisUrl, key_prefix: prefix }, rate_limit: LIMITS },
  });
  apps.push(t);
  return t;
}

let ipCounter = 0;
/** Logs in from an address of its own, so logins do not use up anyone's IP budget. */
async function login(t: TestApp, email: string): Promise<LoginResponse> {
  ipCounter += 1;
  const res = await t.app.inject({
    method: 'POST',
    url: '/auth/login',
    payload: { email, password: STRONG_PASSWORD },
    remoteAddress: `198.51.100.${ipCounter}`,
  });
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`);
  return res.json() as LoginResponse;
}

/** A call that must answer within a second, whatever state Redis is in. */
async function timed(
  t: TestApp,
  token: string | undefined,
  url = '/auth/me',
): Promise<LightMyRequestResponse> {
  const started = performance.now();
  const res = await t.inject(token, { method: 'GET', url });
  expect(performance.now() - started, `GET ${url} took too long`).toBeLessThan(1_000);
  expect(res.statusCode, res.body).toBeLessThan(500);
  return res;
}

function expectRateLimited(res: LightMyRequestResponse) {
  expect(res.statusCode).toBe(429);
  const retryAfter = Number(res.headers['retry-after']);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  expect(res.json()).toEqual({
    error: {
      code: 'rate_limited',
      message: expect.any(String),
      details: { retry_after_s: retryAfter },
      request_id: res.headers['x-request-id'],
    },
  });
}

beforeAll(async () => {
  testDb = await createTestDatabase('postgres');
});

afterAll(async () => {
  for (const t of apps) await t.close();
  await throwaway?.kill();
  await testDb?.drop();
  await clearRedisPrefix(sharedUrl, prefix);
});

describe('rate limits on Redis', () => {
  let one: TestApp;
  let two: TestApp;
  beforeAll(async () => {
    [one, two] = await Promise.all([app(sharedUrl), app(sharedUrl)]);
  });

  it('count a user’s requests across app instances', async () => {
    const user = await one.createUser('sales_rep');
    const { access_token: token } = await login(one, user.email);
    const remaining: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await timed(i % 2 ? two : one, token);
      expect(res.statusCode).toBe(200);
      remaining.push(Number(res.headers['x-ratelimit-remaining']));
      expect(res.headers['x-ratelimit-limit']).toBe('5');
    }
    expect(remaining).toEqual([4, 3, 2, 1, 0]);
    expectRateLimited(await timed(two, token));
    expectRateLimited(await timed(one, token));
    expect(await countRedisKeys(sharedUrl, `${prefix}rl:user:`)).toBeGreaterThanOrEqual(1);

    // Another user has a budget of their own.
    const other = await two.createUser('sales_rep');
    const { access_token: otherToken } = await login(two, other.email);
    expect((await timed(one, otherToken)).statusCode).toBe(200);
  });

  it('count anonymous requests per IP across app instances', async () => {
    const from = (t: TestApp) =>
      t.app.inject({ method: 'GET', url: '/auth/me', remoteAddress: '203.0.113.77' });
    for (let i = 0; i < LIMITS.ip_points; i++) {
      expect((await from(i % 2 ? one : two)).statusCode).toBe(401);
    }
    expectRateLimited(await from(one));
    // Health is never rate limited (probes poll it).
    const health = await one.app.inject({
      method: 'GET',
      url: '/health',
      remoteAddress: '203.0.113.77',
    });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({
      status: 'ok',
      checks: {
        redis: { status: 'ok' },
        queue: { status: 'ok', engine: 'bullmq' },
        rate_limit: { status: 'ok', store: 'redis' },
      },
    });
  });
});

describe('when Redis goes away', () => {
  let three: TestApp;
  let four: TestApp;
  let admin: { token: string };
  const users: Record<string, { id: string; email: string; token: string }> = {};

  beforeAll(async () => {
    throwaway = await startThrowawayRedis();
    [three, four] = await Promise.all([app(throwaway.url), app(throwaway.url)]);
    const a = await three.createUser('admin');
    admin = { token: (await login(three, a.email)).access_token };
    for (const name of ['limited', 'cached', 'deactivated', 'viaAdmin', 'renamed', 'loggingOut']) {
      const u = await three.createUser('sales_rep');
      users[name] = { id: u.id, email: u.email, token: (await login(three, u.email)).access_token };
      // Cached on app three while pub/sub is healthy.
      expect((await timed(three, users[name].token)).statusCode).toBe(200);
    }
    expect(three.container.pubsub.healthy()).toBe(true);

    await throwaway.kill();
    await waitUntil(
      () =>
        three.container.redis!.status !== 'ready' &&
        !three.container.pubsub.healthy() &&
        four.container.redis!.status !== 'ready',
      { timeoutMs: 5_000, what: 'the apps to notice Redis is gone' },
    );
  });

  it('health says degraded (HTTP 200), naming Redis and the rate-limit store', async () => {
    const res = await timed(three, undefined, '/health');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: 'degraded',
      draining: false,
      checks: {
        database: { status: 'ok' },
        redis: { status: 'down' },
        queue: { status: 'down', engine: 'bullmq' },
        rate_limit: { status: 'degraded', store: 'redis' },
      },
    });
  });

  it('still limits requests, per process, from memory: no errors, no waiting', async () => {
    const { token } = users.limited!;
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push((await timed(three, token)).statusCode);
    // The request made while Redis was up was counted there; memory starts afresh.
    expect(codes).toEqual([200, 200, 200, 200, 200, 429]);
    expectRateLimited(await timed(three, token));
    // Each process counts on its own until Redis is back.
    expect((await timed(four, token)).statusCode).toBe(200);
  });

  it('reads user state from the database on every request, so a deactivation applies at once', async () => {
    // Deactivated by another process whose announcement cannot reach us now.
    const { id, token } = users.deactivated!;
    await updateUser(testDb.database.db, id, { is_active: false, deactivated_at: new Date() });
    await revokeUserSessions(testDb.database.db, id, 'deactivated', new Date());
    const res = await timed(three, token);
    expect(res.statusCode).toBe(401);
    expect(res.json().error.code).toBe('unauthorized');

    // A profile change shows on the very next request too.
    const renamed = users.renamed!;
    await updateUser(testDb.database.db, renamed.id, { name: 'Renamed During Outage' });
    expect((await timed(three, renamed.token)).json().name).toBe('Renamed During Outage');
  });

  it('an admin can still deactivate a user; the change applies on every process', async () => {
    const target = users.viaAdmin!;
    const started = performance.now();
    const res = await three.inject(admin.token, {
      method: 'DELETE',
      url: `/admin/users/${target.id}`,
    });
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().is_active).toBe(false);
    expect((await timed(three, target.token)).statusCode).toBe(401);
    expect((await timed(four, target.token)).statusCode).toBe(401);
    expect(three.logs.text()).toContain('user change not announced (Redis unreachable)');
  });

  it('a user can still log out; the token stops working on every process', async () => {
    const { token } = users.loggingOut!;
    const out = await three.inject(token, { method: 'POST', url: '/auth/logout' });
    expect(out.statusCode, out.body).toBe(200);
    expect((await timed(three, token)).statusCode).toBe(401);
    expect((await timed(four, token)).statusCode).toBe(401);
  });

  it('after Redis is back, the cache starts empty: nothing learnt before the outage is trusted', async () => {
    // Changed while Redis was down; app three cached the old name before the outage.
    const { id, token } = users.cached!;
    await updateUser(testDb.database.db, id, { name: 'Changed While Redis Was Down' });

    let resyncs = 0;
    three.container.pubsub.onResync(() => resyncs++);
    await throwaway!.start();
    await waitUntil(
      () => three.container.pubsub.healthy() && three.container.redis!.status === 'ready',
      { timeoutMs: 8_000, what: 'the app to reconnect' },
    );
    expect(resyncs).toBe(1);

    const me = await timed(three, token);
    expect(me.statusCode).toBe(200);
    expect(me.json().name).toBe('Changed While Redis Was Down');

    await waitUntil(() => four.container.pubsub.healthy(), { what: 'app four to reconnect' });
    const health = await timed(three, undefined, '/health');
    expect(health.json()).toMatchObject({
      status: 'ok',
      checks: { redis: { status: 'ok' }, rate_limit: { status: 'ok', store: 'redis' } },
    });
    // Limits are shared through Redis again.
    const fresh = await three.createUser('sales_rep');
    const { access_token: freshToken } = await login(three, fresh.email);
    const remaining: number[] = [];
    for (const t of [three, four, three]) {
      remaining.push(Number((await timed(t, freshToken)).headers['x-ratelimit-remaining']));
    }
    expect(remaining).toEqual([4, 3, 2]);
  });
});
