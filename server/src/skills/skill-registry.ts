/**
 * The loaded skills: who may use which, and running one directly (quick actions, schedules,
 * webhooks) with validated parameters. A user may use a skill when their role has every
 * permission it lists and reaches at least one of its agents.
 */

import type { Principal } from '../auth/principal.ts';
import { AppError } from '../errors.ts';
import type { Skill, SkillContext, SkillResult } from './skill.ts';

export type SkillRegistry = ReturnType<typeof createSkillRegistry>;

export function mayUseSkill(principal: Principal, skill: Skill): boolean {
  const m = skill.manifest;
  return (
    m.permissions.every((p) => principal.permissions.has(p)) &&
    m.agents.some((a) => principal.permissions.has(`agent:${a}`))
  );
}

export function createSkillRegistry(skills: readonly Skill[]) {
  const byName = new Map(skills.map((s) => [s.manifest.name, s]));

  function require(name: string): Skill {
    const skill = byName.get(name);
    if (!skill) throw new AppError('unknown_skill', `there is no skill named ${name}`);
    return skill;
  }

  return {
    get: (name: string) => byName.get(name),
    require,
    list: (): Skill[] => [...byName.values()],
    /** Skills the user may use, in name order. */
    usableBy(principal: Principal): Skill[] {
      return [...byName.values()]
        .filter((s) => mayUseSkill(principal, s))
        .sort((a, b) => a.manifest.name.localeCompare(b.manifest.name));
    },
    /** The instructions an agent's system prompt gets from its skills. */
    instructionsFor(names: readonly string[]): string[] {
      return names.map((n) => {
        const m = require(n).manifest;
        return `### Skill: ${m.name}\n${m.instructions.trim()}`;
      });
    },
    /**
     * Runs a skill without the model loop: permission, parameter validation and
     * capability are checked first, in that order.
     */
    async run(name: string, params: unknown, ctx: SkillContext): Promise<SkillResult> {
      const skill = require(name);
      if (!mayUseSkill(ctx.principal, skill))
        throw new AppError('forbidden', `your role may not use the skill ${name}`);
      const parsed = skill.parameters.safeParse(params ?? {});
      if (!parsed.success) {
        const details = parsed.error.issues.map((i) => ({
          in: 'body',
          path: ['parameters', ...i.path].join('.'),
          message: i.message,
        }));
        const first = details[0]!;
        throw new AppError(
          'validation_failed',
          `invalid parameters for ${name}: ${first.path} ${first.message}`,
          { details },
        );
      }
      if (skill.status === 'needs_capability')
        throw capabilityUnavailable(name, skill.manifest.capability ?? 'a capability');
      return skill.run(parsed.data, ctx);
    },
  };
}

export function capabilityUnavailable(skill: string, missing: string): AppError {
  return new AppError(
    'capability_unavailable',
    `the skill ${skill} is not available on this server yet: it needs ${missing}`,
    { details: { skill, missing } },
  );
}
