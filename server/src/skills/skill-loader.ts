/**
 * Reads every skills/available/*.yaml at start-up, validates it and pairs it with its
 * TypeScript implementation. Anything wrong stops start-up with one line that names the
 * file and the field, so a broken manifest never half-loads.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../config/load-config.ts';
import { type Skill, SkillManifest, type SkillParameter, type SkillRun } from './skill.ts';

export class SkillManifestError extends ConfigError {
  override name = 'SkillManifestError';
}

/** The zod schema of one parameter. */
function parameterSchema(p: SkillParameter): z.ZodType {
  let schema: z.ZodType;
  switch (p.type) {
    case 'string':
    case 'text': {
      const s = z
        .string()
        .trim()
        .min(p.required ? 1 : 0);
      schema = s.max(p.max_length ?? (p.type === 'text' ? 200_000 : 500));
      break;
    }
    case 'number':
    case 'integer': {
      let n = p.type === 'integer' ? z.number().int() : z.number();
      if (p.min !== undefined) n = n.min(p.min);
      if (p.max !== undefined) n = n.max(p.max);
      schema = n;
      break;
    }
    case 'boolean':
      schema = z.boolean();
      break;
    case 'enum':
      schema = z.enum(p.values as [string, ...string[]]);
      break;
    case 'string_list':
      schema = z
        .array(
          z
            .string()
            .trim()
            .min(1)
            .max(p.max_length ?? 500),
        )
        .min(p.required ? 1 : 0)
        .max(p.max_items ?? 50);
      break;
  }
  schema = schema.describe(p.description);
  return p.required ? schema : schema.optional();
}

export function parametersSchema(params: readonly SkillParameter[]) {
  return z.strictObject(
    Object.fromEntries(params.map((p) => [p.name, parameterSchema(p)])),
  ) as unknown as z.ZodType<Record<string, unknown>>;
}

function fail(file: string, field: string, message: string): never {
  throw new SkillManifestError(
    `config error: skill manifest ${file}: ${field ? `${field}: ` : ''}${message}`,
  );
}

export interface LoadSkillsOptions {
  dir: string;
  /** `run` of every skill, by name; a manifest without one stops start-up. */
  implementations: Readonly<Record<string, SkillRun>>;
}

export function loadSkills({ dir, implementations }: LoadSkillsOptions): Skill[] {
  let files: string[];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
      .sort();
  } catch (err) {
    throw new SkillManifestError(
      `config error: skills folder ${dir}: ${(err as Error).message.split('\n')[0]}`,
    );
  }
  const skills: Skill[] = [];
  for (const file of files) {
    const path = join(dir, file);
    let raw: unknown;
    try {
      raw = parseYaml(readFileSync(path, 'utf8'));
    } catch (err) {
      fail(path, '', `not valid YAML (${(err as Error).message.split('\n')[0]})`);
    }
    const parsed = SkillManifest.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      fail(path, issue.path.join('.') || '(top level)', issue.message);
    }
    const manifest = parsed.data;
    const stem = basename(file).replace(/\.ya?ml$/, '');
    if (manifest.name !== stem)
      fail(path, 'name', `is ${manifest.name}; must match the file name (${stem})`);
    const run = implementations[manifest.name];
    if (!run) fail(path, 'name', `no implementation registered for skill ${manifest.name}`);
    const parameters = parametersSchema(manifest.parameters);
    skills.push({
      manifest,
      parameters,
      parametersJsonSchema: z.toJSONSchema(parameters, { io: 'input' }) as Record<string, unknown>,
      status: manifest.status,
      run,
    });
  }
  return skills;
}
