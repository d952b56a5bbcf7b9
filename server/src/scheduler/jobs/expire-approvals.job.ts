/** Every few minutes: pending actions past their expiry become `expired` (audited). */
import { z } from 'zod';
import type { JobDefinition } from '../queue.ts';

export const EXPIRE_APPROVALS_JOB = 'tools.expire-approvals';

export function expireApprovalsJob(deps: {
  approvals: { expireDue(): Promise<number> };
}): JobDefinition<Record<string, never>> {
  return {
    name: EXPIRE_APPROVALS_JOB,
    schema: z.object({}).strict() as z.ZodType<Record<string, never>>,
    attempts: 3,
    async handler(_data, ctx) {
      const expired = await deps.approvals.expireDue();
      if (expired) ctx.log.info({ expired }, 'expired pending approvals');
      return { expired };
    },
  };
}
