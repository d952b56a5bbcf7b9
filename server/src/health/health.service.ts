/** What /health reports: database, Redis, queue, rate-limit store and optional tools. */
import type { HealthResponse } from '@mezzofy/protocol';
import type { Database } from '../db/database.ts';
import type { RateLimiter } from '../infra/rate-limiter.ts';
import type { Redis } from '../infra/redis.ts';
import type { JobQueue } from '../scheduler/queue.ts';

export interface HealthDeps {
  database: Database;
  redis?: Redis | undefined;
  queue: JobQueue;
  rateLimiter: RateLimiter;
  tools: Record<string, boolean>;
  version: string;
  dbTimeoutMs: number;
  isDraining: () => boolean;
}

export type HealthService = ReturnType<typeof createHealthService>;

export function createHealthService(deps: HealthDeps) {
  const startedAt = Date.now();
  return {
    async check(): Promise<{ httpStatus: number; body: HealthResponse }> {
      let database: HealthResponse['checks']['database'];
      try {
        const latency = await deps.database.ping(deps.dbTimeoutMs);
        database = {
          status: 'ok',
          engine: deps.database.engine,
          latency_ms: Math.round(latency * 100) / 100,
        };
      } catch {
        database = { status: 'down', engine: deps.database.engine };
      }
      const redis: HealthResponse['checks']['redis'] = deps.redis
        ? { status: deps.redis.status === 'ready' ? 'ok' : 'down' }
        : { status: 'disabled' };
      const queue: HealthResponse['checks']['queue'] = {
        status: deps.queue.status(),
        engine: deps.queue.engine,
      };
      const rateLimit: HealthResponse['checks']['rate_limit'] = {
        status: deps.rateLimiter.status(),
        store: deps.rateLimiter.store,
      };
      const draining = deps.isDraining();
      const unavailable = draining || database.status !== 'ok';
      const degraded =
        redis.status === 'down' || queue.status !== 'ok' || rateLimit.status !== 'ok';
      return {
        httpStatus: unavailable ? 503 : 200,
        body: {
          status: unavailable ? 'unavailable' : degraded ? 'degraded' : 'ok',
          version: deps.version,
          uptime_s: Math.round((Date.now() - startedAt) / 1000),
          draining,
          checks: { database, redis, queue, rate_limit: rateLimit },
          tools: deps.tools,
        },
      };
    },
  };
}
