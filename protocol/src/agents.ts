/**
 * Department agents and skills as the app sees them: the agent picker (`GET /agents`), the
 * quick actions built from skill parameter schemas (`GET /skills`), and running a skill
 * directly without the model (`POST /skills/:name/run`).
 */
import { z } from 'zod';
import { Department } from './common.ts';

export const AgentSummary = z
  .object({
    name: z.string(),
    title: z.string(),
    description: z.string(),
    department: Department,
    skills: z.array(z.string()),
  })
  .meta({ id: 'AgentSummary' });
export type AgentSummary = z.infer<typeof AgentSummary>;

export const AgentList = z.object({ items: z.array(AgentSummary) });
export type AgentList = z.infer<typeof AgentList>;

/** `available`: runs now. `needs_capability`: answers capability_unavailable until installed. */
export const SkillStatus = z.enum(['available', 'needs_capability']);
export type SkillStatus = z.infer<typeof SkillStatus>;

export const SkillSummary = z
  .object({
    name: z.string(),
    description: z.string(),
    agents: z.array(z.string()),
    status: SkillStatus,
    /** What is missing when status is needs_capability. */
    capability: z.string().nullable(),
    /** JSON Schema of the parameters `POST /skills/:name/run` takes. */
    parameters: z.record(z.string(), z.unknown()),
  })
  .meta({ id: 'SkillSummary' });
export type SkillSummary = z.infer<typeof SkillSummary>;

export const SkillList = z.object({ items: z.array(SkillSummary) });
export type SkillList = z.infer<typeof SkillList>;

export const SkillNameParams = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z][a-z0-9_]{0,63}$/)
    .describe('skill name, e.g. data_analysis'),
});

export const SkillRunRequest = z
  .strictObject({
    /** Checked against the skill's own parameter schema. */
    parameters: z.record(z.string(), z.unknown()).default({}),
  })
  .meta({ id: 'SkillRunRequest' });
export type SkillRunRequest = z.infer<typeof SkillRunRequest>;

export const SkillRunResponse = z
  .object({
    skill: z.string(),
    /** `pending_approval`: nothing was sent; the user approves the action in the app. */
    status: z.enum(['ok', 'pending_approval', 'error']),
    /** Readable result (a draft, a summary). */
    text: z.string(),
    /** Structured result (statistics, a draft's fields). */
    data: z.unknown().optional(),
    approval_id: z.string().nullable(),
  })
  .meta({ id: 'SkillRunResponse' });
export type SkillRunResponse = z.infer<typeof SkillRunResponse>;
