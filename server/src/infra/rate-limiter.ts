/**
 * Request rate limits: per user when signed in, else per IP, in fixed windows. Redis-backed
 * with REDIS_URL so every process shares the counters (batched: one script call per
 * event-loop turn); if Redis becomes unreachable each process falls back to its own memory
 * counters and health reports `degraded`.
 */
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
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

/**
 * The per-key steps of rate-limiter-flexible's Redis script (start the window with SET NX EX,
 * INCRBY, read PTTL, repair a missing TTL), for every key counted in one event-loop turn.
 * Returns consumed, ttl_ms for each key in turn.
 */
const BATCH_SCRIPT = `
local window = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('set', key, 0, 'EX', window, 'NX')
  local consumed = redis.call('incrby', key, ARGV[i + 1])
  local ttl = redis.call('pttl', key)
  if ttl == -1 then
    redis.call('expire', key, window)
    ttl = 1000 * window
  end
  out[2 * i - 1] = consumed
  out[2 * i] = ttl
end
return out`;

/** Most keys in one script call; a busier turn is split. */
const MAX_BATCH_KEYS = 256;

interface Waiter {
  resolve(count: { consumed: number; ttlMs: number }): void;
  reject(err: unknown): void;
}

interface BatchClient {
  mzRateLimitBatch(...args: (string | number)[]): Promise<number[]>;
}

/**
 * Counts hits in Redis, one script call per event-loop turn: every request counted in a
 * turn (across all sockets that were readable) shares one round trip instead of one each.
 * Each hit still gets its own count, in order, exactly as if they had been sent one by one.
 */
function createRedisCounter(redis: Redis, windowS: number) {
  redis.defineCommand('mzRateLimitBatch', { lua: BATCH_SCRIPT });
  const client = redis as unknown as BatchClient;
  let batch: Map<string, Waiter[]> | undefined;

  const flush = (current: Map<string, Waiter[]>) => {
    if (batch === current) batch = undefined;
    const keys = [...current.keys()];
    const args: (string | number)[] = [keys.length, ...keys, windowS];
    for (const key of keys) args.push(current.get(key)!.length);
    client.mzRateLimitBatch(...args).then(
      (out) => {
        keys.forEach((key, i) => {
          const waiters = current.get(key)!;
          const total = Number(out[2 * i]);
          const ttlMs = Number(out[2 * i + 1]);
          waiters.forEach((w, j) => {
            w.resolve({ consumed: total - waiters.length + j + 1, ttlMs });
          });
        });
      },
      (err) => {
        for (const waiters of current.values()) for (const w of waiters) w.reject(err);
      },
    );
  };

  return (key: string) =>
    new Promise<{ consumed: number; ttlMs: number }>((resolve, reject) => {
      if (!batch) {
        const fresh = new Map<string, Waiter[]>();
        batch = fresh;
        // After this turn's I/O callbacks: all requests read in the turn join the batch.
        setImmediate(() => {
          if (batch === fresh) flush(fresh);
        });
      }
      let waiters = batch.get(key);
      if (!waiters) {
        waiters = [];
        batch.set(key, waiters);
      }
      waiters.push({ resolve, reject });
      if (batch.size >= MAX_BATCH_KEYS) flush(batch);
    });
}

export function createRateLimiter(
  policy: RateLimitPolicy,
  redis?: Redis,
  keyPrefix = 'mz:',
): RateLimiter {
  const limits = { user: policy.user_points, ip: policy.ip_points };
  // Per-process counters: the store without Redis, and the fallback while Redis is unreachable.
  const memory = {
    user: new RateLimiterMemory({
      points: policy.user_points,
      duration: policy.window_s,
      keyPrefix: 'rl:user',
    }),
    ip: new RateLimiterMemory({
      points: policy.ip_points,
      duration: policy.window_s,
      keyPrefix: 'rl:ip',
    }),
  };
  const count = redis ? createRedisCounter(redis, policy.window_s) : undefined;

  const decide = (kind: 'user' | 'ip', consumed: number, msBeforeNext: number): RateDecision => {
    const allowed = consumed <= limits[kind];
    return {
      allowed,
      limit: limits[kind],
      remaining: Math.max(limits[kind] - consumed, 0),
      resetSeconds: allowed
        ? Math.ceil(msBeforeNext / 1000)
        : Math.max(1, Math.ceil(msBeforeNext / 1000)),
    };
  };

  async function consumeMemory(kind: 'user' | 'ip', key: string): Promise<RateDecision> {
    try {
      const res = await memory[kind].consume(key);
      return decide(kind, res.consumedPoints, res.msBeforeNext);
    } catch (err) {
      if (err instanceof RateLimiterRes) return decide(kind, err.consumedPoints, err.msBeforeNext);
      throw err;
    }
  }

  return {
    store: redis ? 'redis' : 'memory',
    async consume(kind, key) {
      if (count && redis?.status === 'ready') {
        try {
          const { consumed, ttlMs } = await count(`${keyPrefix}rl:${kind}:${key}`);
          return decide(kind, consumed, ttlMs);
        } catch {
          // Redis failed mid-request: count in memory, like the insurance limiter did.
        }
      }
      return consumeMemory(kind, key);
    },
    status: () => (redis && redis.status !== 'ready' ? 'degraded' : 'ok'),
  };
}
