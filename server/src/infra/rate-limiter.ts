/**
 * Request rate limits: per user when signed in, else per IP. Redis-backed with REDIS_URL so
 * every process shares the counters; if Redis becomes unreachable each process falls back
 * to its own memory counters (the insurance limiter) and health reports `degraded`.
 */
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Redis } from './redis.ts';

export interface RateLimitPolicy {
  user_points: number;
  ip_points: number;
  window_s: number;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  resetSeconds: number;
}

export interface RateLimiter {
  readonly store: 'redis' | 'memory';
  consume(kind: 'user' | 'ip', key: string): Promise<RateDecision>;
  /** 'ok', or 'degraded' while Redis is configured but unreachable. */
  status(): 'ok' | 'degraded';
}

export function createRateLimiter(
  policy: RateLimitPolicy,
  redis?: Redis,
  keyPrefix = 'mz:',
): RateLimiter {
  const make = (kind: 'user' | 'ip', points: number) => {
    const memory = new RateLimiterMemory({
      points,
      duration: policy.window_s,
      keyPrefix: `rl:${kind}`,
    });
    if (!redis) return memory;
    return new RateLimiterRedis({
      storeClient: redis,
      points,
      duration: policy.window_s,
      keyPrefix: `${keyPrefix}rl:${kind}`,
      rejectIfRedisNotReady: true,
      insuranceLimiter: memory,
    });
  };
  const limiters = { user: make('user', policy.user_points), ip: make('ip', policy.ip_points) };
  const limits = { user: policy.user_points, ip: policy.ip_points };
  return {
    store: redis ? 'redis' : 'memory',
    async consume(kind, key) {
      try {
        const res = await limiters[kind].consume(key);
        return {
          allowed: true,
          limit: limits[kind],
          remaining: res.remainingPoints,
          resetSeconds: Math.ceil(res.msBeforeNext / 1000),
        };
      } catch (err) {
        if (err instanceof RateLimiterRes) {
          return {
            allowed: false,
            limit: limits[kind],
            remaining: 0,
            resetSeconds: Math.max(1, Math.ceil(err.msBeforeNext / 1000)),
          };
        }
        throw err;
      }
    },
    status: () => (redis && redis.status !== 'ready' ? 'degraded' : 'ok'),
  };
}
