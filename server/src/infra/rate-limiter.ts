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
 * The per-key steps of rate-limiter-flexible's Redis script (count with INCRBY, read PTTL,
 * give a key without a TTL the window's: a key INCRBY has just created, or one whose TTL was
 * lost), for every key counted in one event-loop turn. The script runs atomically, so this
 * is the same fixed window as starting it with SET NX EX first, one call fewer per key.
 * Returns consumed, ttl_ms for each key in turn.
 */
const BATCH_SCRIPT = `
local window = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
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

const BATCH_COMMAND = 'mzRateLimitBatch';

/** Most keys in one script call; a busier turn is split. */
const MAX_BATCH_KEYS = 256;

/** One hit waiting for its batch: it is answered with its decision. */
interface Hit {
  kind: 'user' | 'ip';
  key: string;
  resolve(decision: RateDecision | Promise<RateDecision>): void;
}

interface BatchClient {
  mzRateLimitBatch(...args: (string | number)[]): Promise<number[]>;
}

type Decide = (kind: 'user' | 'ip', consumed: number, msBeforeNext: number) => RateDecision;

/**
 * Counts hits in Redis, one script call per event-loop turn: every request counted in a
 * turn (across all sockets that were readable) shares one round trip instead of one each.
 * Each hit still gets its own count, in order, exactly as if they had been sent one by one.
 * If the call fails, every hit of the batch is counted by `fallback` (memory) instead.
 */
function createRedisCounter(
  redis: Redis,
  windowS: number,
  decide: Decide,
  fallback: (kind: 'user' | 'ip', key: string) => Promise<RateDecision>,
) {
  redis.defineCommand(BATCH_COMMAND, { lua: BATCH_SCRIPT });
  // The batch already is one command per turn: auto-pipelining would only add a tick and a
  // pipeline object to it. (A fresh array: ioredis may share its default between clients.)
  redis.options.autoPipeliningIgnoredCommands = [
    ...(redis.options.autoPipeliningIgnoredCommands ?? []),
    BATCH_COMMAND,
  ];
  const client = redis as unknown as BatchClient;
  let batch: Map<string, Hit[]> | undefined;

  const flush = (current: Map<string, Hit[]>) => {
    if (batch === current) batch = undefined;
    const keys = [...current.keys()];
    const args: (string | number)[] = [keys.length, ...keys, windowS];
    for (const key of keys) args.push(current.get(key)!.length);
    client.mzRateLimitBatch(...args).then(
      (out) => {
        for (let i = 0; i < keys.length; i++) {
          const hits = current.get(keys[i]!)!;
          const total = Number(out[2 * i]);
          const ttlMs = Number(out[2 * i + 1]);
          const first = total - hits.length;
          for (let j = 0; j < hits.length; j++) {
            const hit = hits[j]!;
            hit.resolve(decide(hit.kind, first + j + 1, ttlMs));
          }
        }
      },
      () => {
        // Redis failed mid-request: count in memory, like the insurance limiter did.
        for (const hits of current.values())
          for (const hit of hits) hit.resolve(fallback(hit.kind, hit.key));
      },
    );
  };

  return (kind: 'user' | 'ip', key: string, redisKey: string) =>
    new Promise<RateDecision>((resolve) => {
      if (!batch) {
        const fresh = new Map<string, Hit[]>();
        batch = fresh;
        // After this turn's I/O callbacks: all requests read in the turn join the batch.
        setImmediate(() => {
          if (batch === fresh) flush(fresh);
        });
      }
      const hits = batch.get(redisKey);
      if (hits) hits.push({ kind, key, resolve });
      else batch.set(redisKey, [{ kind, key, resolve }]);
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
  const decide: Decide = (kind, consumed, msBeforeNext) => {
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

  const count = redis
    ? createRedisCounter(redis, policy.window_s, decide, consumeMemory)
    : undefined;

  return {
    store: redis ? 'redis' : 'memory',
    consume(kind, key) {
      if (count && redis?.status === 'ready')
        return count(kind, key, `${keyPrefix}rl:${kind}:${key}`);
      return consumeMemory(kind, key);
    },
    status: () => (redis && redis.status !== 'ready' ? 'degraded' : 'ok'),
  };
}
