/** Hourly: delete expired refresh tokens, long-ended sessions and stale lockout counters. */
import { z } from 'zod';
import { purgeExpired } from '../../auth/sessions.repository.ts';
import type { Database } from '../../db/database.ts';
import type { Clock } from '../../infra/clock.ts';
import type { JobDefinition } from '../queue.ts';

export const PURGE_AUTH_JOB = 'auth.purge-expired';

export function purgeAuthJob(deps: {
  database: Database;
  clock: Clock;
  retentionSeconds: number;
  lockoutWindowSeconds: number;
}): JobDefinition<Record<string, never>> {
  return {
    name: PURGE_AUTH_JOB,
    schema: z.object({}).strict() as z.ZodType<Record<string, never>>,
    attempts: 3,
    async handler(_data, ctx) {
      const result = await purgeExpired(
        deps.database.db,
        deps.clock(),
        deps.retentionSeconds,
        deps.lockoutWindowSeconds,
      );
      ctx.log.info(result, 'purged expired auth records');
      return result;
    },
  };
}
