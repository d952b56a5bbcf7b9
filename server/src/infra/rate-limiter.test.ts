/**
 * The batched Redis counter against a fake client (rate-limiter.redis.test.ts runs it on a
 * real Redis): one script call per event-loop turn, a count per hit in order, the memory
 * fallback for a failed call, and the call kept out of ioredis's auto-pipelining.
 */
import { describe, expect, it } from 'vitest';
import { createRateLimiter } from './rate-limiter.ts';
import type { Redis } from './redis.ts';

/** Runs the script's steps on a Map: KEYS, window, then one increment per key. */
function fakeRedis() {
  const counts = new Map<string, number>();
  const calls: Array<{ keys: string[]; increments: number[] }> = [];
  const sharedDefault: string[] = [];
  const client = {
    status: 'ready',
    fail: false,
    options: { autoPipeliningIgnoredCommands: sharedDefault },
    sharedDefault,
    counts,
    calls,
    defineCommand(name: string) {
      (client as unknown as Record<string, unknown>)[name] = async (
        ...args: (string | number)[]
      ) => {
        const n = Number(args[0]);
        const keys = args.slice(1, 1 + n).map(String);
        const increments = args.slice(2 + n).map(Number);
        calls.push({ keys, increments });
        if (client.fail) throw new Error('Connection is closed.');
        return keys.flatMap((key, i) => {
          const total = (counts.get(key) ?? 0) + increments[i]!;
          counts.set(key, total);
          return [total, 60_000];
        });
      };
    },
  };
  return client;
}

const POLICY = { user_points: 3, ip_points: 2, window_s: 60 };

describe('rate limiter (Redis batch, fake client)', () => {
  it('sends every hit of a turn in one call, outside auto-pipelining, each with its own count', async () => {
    const redis = fakeRedis();
    const limiter = createRateLimiter(POLICY, redis as unknown as Redis, 'p:');
    expect(redis.options.autoPipeliningIgnoredCommands).toContain('mzRateLimitBatch');
    expect(redis.sharedDefault).toEqual([]); // a new array, not ioredis's shared default
    const decisions = await Promise.all([
      limiter.consume('user', 'a'),
      limiter.consume('ip', '10.0.0.1'),
      limiter.consume('user', 'a'),
      limiter.consume('user', 'a'),
      limiter.consume('user', 'a'),
    ]);
    expect(redis.calls).toEqual([
      { keys: ['p:rl:user:a', 'p:rl:ip:10.0.0.1'], increments: [4, 1] },
    ]);
    expect(decisions.map((d) => [d.allowed, d.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 1],
      [true, 0],
      [false, 0],
    ]);
    expect(decisions[4]!.resetSeconds).toBe(60);
    expect(decisions[0]!.limit).toBe(3);
    // The next turn is the next call.
    await limiter.consume('user', 'b');
    expect(redis.calls).toHaveLength(2);
  });

  it('counts a batch in memory when its call fails, and while Redis is not ready', async () => {
    const redis = fakeRedis();
    const limiter = createRateLimiter(POLICY, redis as unknown as Redis, 'p:');
    redis.fail = true;
    const failed = await Promise.all([1, 2, 3].map(() => limiter.consume('ip', '10.0.0.2')));
    expect(failed.map((d) => d.allowed)).toEqual([true, true, false]);
    redis.fail = false;
    redis.status = 'reconnecting';
    expect(limiter.status()).toBe('degraded');
    const calls = redis.calls.length;
    expect((await limiter.consume('ip', '10.0.0.2')).allowed).toBe(false);
    expect(redis.calls).toHaveLength(calls);
  });
});
