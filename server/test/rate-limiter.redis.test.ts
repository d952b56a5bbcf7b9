/**
 * The Redis rate-limit counter batches every hit of an event-loop turn into one script call:
 * each hit must still get its own count, in order, shared across processes, with the window's
 * TTL, and fall back to per-process memory counters when Redis is not ready.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRateLimiter } from '../src/infra/rate-limiter.ts';
import { createRedis, type Redis, waitReady } from '../src/infra/redis.ts';
import { clearRedisPrefix, testKeyPrefix, testRedisUrl, waitUntil } from './helpers/redis.ts';

const url = testRedisUrl();
const prefix = testKeyPrefix('rl-batch');
const POLICY = { user_points: 5, ip_points: 3, window_s: 60 };
const clients: Redis[] = [];

async function client(): Promise<Redis> {
  const redis = createRedis(url, { enableOfflineQueue: false });
  clients.push(redis);
  await waitReady(redis);
  return redis;
}

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await clearRedisPrefix(url, prefix);
});

describe('batched Redis rate limiter', () => {
  it('gives each of many hits in one turn its own count, and refuses past the limit', async () => {
    const limiter = createRateLimiter(POLICY, await client(), prefix);
    const decisions = await Promise.all(
      Array.from({ length: 7 }, () => limiter.consume('user', 'u1')),
    );
    expect(decisions.map((d) => d.remaining)).toEqual([4, 3, 2, 1, 0, 0, 0]);
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, true, false, false]);
    for (const d of decisions) {
      expect(d.limit).toBe(5);
      expect(d.resetSeconds).toBeGreaterThanOrEqual(1);
      expect(d.resetSeconds).toBeLessThanOrEqual(60);
    }
  });

  it('keeps users and IPs apart within one batch, under the usual key names', async () => {
    const redis = await client();
    const limiter = createRateLimiter(POLICY, redis, prefix);
    const [a, b, ip1, ip2] = await Promise.all([
      limiter.consume('user', 'u2'),
      limiter.consume('user', 'u3'),
      limiter.consume('ip', '10.0.0.1'),
      limiter.consume('ip', '10.0.0.1'),
    ]);
    expect([a.remaining, b.remaining, ip1.remaining, ip2.remaining]).toEqual([4, 4, 2, 1]);
    expect(await redis.get(`${prefix}rl:user:u2`)).toBe('1');
    expect(await redis.get(`${prefix}rl:ip:10.0.0.1`)).toBe('2');
    const ttl = await redis.pttl(`${prefix}rl:user:u2`);
    expect(ttl).toBeGreaterThan(55_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it('shares counts between processes (separate connections)', async () => {
    const one = createRateLimiter(POLICY, await client(), prefix);
    const two = createRateLimiter(POLICY, await client(), prefix);
    const remaining: number[] = [];
    for (let i = 0; i < 5; i++)
      remaining.push((await (i % 2 ? two : one).consume('user', 'u4')).remaining);
    expect(remaining).toEqual([4, 3, 2, 1, 0]);
    expect((await one.consume('user', 'u4')).allowed).toBe(false);
    expect((await two.consume('user', 'u4')).allowed).toBe(false);
  });

  it('counts in memory while Redis is not ready', async () => {
    const redis = await client();
    const limiter = createRateLimiter(POLICY, redis, prefix);
    redis.disconnect();
    await waitUntil(() => redis.status === 'end', { what: 'disconnect' });
    expect(limiter.status()).toBe('degraded');
    const decisions = [];
    for (let i = 0; i < 4; i++) decisions.push(await limiter.consume('ip', '10.0.0.9'));
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, false]);
    expect(await (await client()).exists(`${prefix}rl:ip:10.0.0.9`)).toBe(0);
  });
});
