/**
 * What a skill is: a YAML manifest (skills/available/<name>.yaml: who may use it, which
 * tools it relies on, the instructions it adds to an agent's system prompt, its parameter
 * list) plus a TypeScript `run(params, ctx)` that does the work without the model loop —
 * for quick actions in the app, schedules and webhooks (`POST /skills/:name/run`).
 */
import type { Department, SkillStatus } from '@mezzofy/protocol';
import { z } from 'zod';
import type { AgentName } from '../agents/agent.ts';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import { PERMISSION_PATTERN } from '../config/roles.ts';
import type { Clock } from '../infra/clock.ts';
import type { LlmManager } from '../llm/llm-manager.ts';
import type { Logger } from '../logging/logger.ts';
import type { ToolExecutor } from '../tools/tool.ts';

const AGENT_NAME = z.enum(['finance', 'sales', 'marketing', 'support', 'management']);
const SNAKE = /^[a-z][a-z0-9_]*$/;

/** One parameter of a skill; converted to zod for validation and to JSON Schema for the app. */
export const SkillParameter = z.strictObject({
  name: z.string().regex(SNAKE, 'must be snake_case'),
  type: z.enum(['string', 'text', 'number', 'integer', 'boolean', 'enum', 'string_list']),
  description: z.string().min(1),
  required: z.boolean().default(false),
  /** enum only. */
  values: z.array(z.string().min(1)).min(1).optional(),
  /** string/text/string_list: longest accepted string. */
  max_length: z.number().int().positive().optional(),
  /** number/integer bounds. */
  min: z.number().optional(),
  max: z.number().optional(),
  /** string_list: most items. */
  max_items: z.number().int().positive().optional(),
});
export type SkillParameter = z.infer<typeof SkillParameter>;

export const SkillManifest = z
  .strictObject({
    name: z.string().regex(SNAKE, 'must be snake_case'),
    description: z.string().min(10),
    agents: z.array(AGENT_NAME).min(1),
    tools: z.array(z.string().regex(SNAKE)).default([]),
    /** Permissions (roles.yaml) a user needs, on top of reaching one of `agents`. */
    permissions: z.array(z.string().regex(PERMISSION_PATTERN, 'must look like area:action')),
    /** Added to the system prompt of every agent that uses the skill. */
    instructions: z.string().min(20),
    parameters: z.array(SkillParameter).default([]),
    status: z.enum(['available', 'needs_capability']),
    /** needs_capability: what is missing, in words a user understands. */
    capability: z.string().min(5).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.status === 'needs_capability' && !m.capability)
      ctx.addIssue({
        code: 'custom',
        path: ['capability'],
        message: 'required when status is needs_capability',
      });
    if (m.status === 'available' && m.capability)
      ctx.addIssue({
        code: 'custom',
        path: ['capability'],
        message: 'only for status needs_capability',
      });
    const names = m.parameters.map((p) => p.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup)
      ctx.addIssue({
        code: 'custom',
        path: ['parameters'],
        message: `parameter ${dup} is listed twice`,
      });
    for (const [i, p] of m.parameters.entries()) {
      if ((p.type === 'enum') !== (p.values !== undefined))
        ctx.addIssue({
          code: 'custom',
          path: ['parameters', i, 'values'],
          message: 'values go with type enum, and only with it',
        });
    }
  });
export type SkillManifest = z.infer<typeof SkillManifest>;

export interface SkillContext {
  principal: Principal;
  /** The agent the skill runs for (chat) or null (quick action, schedule, webhook). */
  agent: AgentName | null;
  sessionId: string | null;
  source: AuditSource;
  /**
   * Who pays for its model calls: for work run by a schedule or a webhook, the department
   * that owns it; the acting user's department when absent.
   */
  department?: Department;
  signal: AbortSignal;
  llm: LlmManager;
  tools: ToolExecutor;
  /** Brand and product context for anything written in Mezzofy's name. */
  knowledge: () => string;
  clock: Clock;
  log: Logger;
}

export interface SkillResult {
  status: 'ok' | 'pending_approval' | 'error';
  text: string;
  data?: unknown;
  approvalId?: string;
}

export type SkillRun = (params: Record<string, unknown>, ctx: SkillContext) => Promise<SkillResult>;

export interface Skill {
  manifest: SkillManifest;
  /** Validates `run`'s parameters (strict: unknown keys are refused). */
  parameters: z.ZodType<Record<string, unknown>>;
  /** The same parameters as JSON Schema, for the app's quick actions. */
  parametersJsonSchema: Record<string, unknown>;
  status: SkillStatus;
  run: SkillRun;
}

/**
 * Who pays for a skill's model calls: the department owning the schedule or webhook that runs
 * it, else the acting user's department.
 */
export function llmContextOf(ctx: SkillContext) {
  return {
    userId: ctx.principal.id,
    department: ctx.department ?? ctx.principal.department,
    source: ctx.source,
    sessionId: ctx.sessionId,
    signal: ctx.signal,
  };
}
