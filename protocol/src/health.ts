/** GET /health. */
import { z } from 'zod';

export const CheckStatus = z.enum(['ok', 'degraded', 'down', 'disabled']);

export const HealthResponse = z.object({
  status: z.enum(['ok', 'degraded', 'unavailable']),
  version: z.string(),
  uptime_s: z.number(),
  draining: z.boolean(),
  checks: z.object({
    database: z.object({
      status: CheckStatus,
      engine: z.enum(['postgres', 'pglite']),
      latency_ms: z.number().optional(),
    }),
    redis: z.object({ status: CheckStatus }),
    queue: z.object({ status: CheckStatus, engine: z.enum(['bullmq', 'in-process']) }),
    rate_limit: z.object({ status: CheckStatus, store: z.enum(['redis', 'memory']) }),
  }),
  tools: z.record(z.string(), z.boolean()),
});
export type HealthResponse = z.infer<typeof HealthResponse>;
