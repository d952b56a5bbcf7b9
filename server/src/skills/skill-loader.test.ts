/**
 * The skill loader on the real manifests (all seven load, with parameter JSON Schemas) and
 * on broken ones in a temp folder: each stops start-up with one line naming file and field.
 */
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SKILL_IMPLEMENTATIONS } from './available/index.ts';
import { loadSkills, SkillManifestError } from './skill-loader.ts';

const AVAILABLE = join(dirname(fileURLToPath(import.meta.url)), 'available');
const SEVEN = [
  'content_generation',
  'data_analysis',
  'email_outreach',
  'financial_reporting',
  'linkedin_prospecting',
  'pitch_deck_generation',
  'web_research',
];

describe('skill loader', () => {
  it('loads all seven skills of the seed, with JSON Schemas of their parameters', () => {
    const skills = loadSkills({ dir: AVAILABLE, implementations: SKILL_IMPLEMENTATIONS });
    expect(skills.map((s) => s.manifest.name).sort()).toEqual(SEVEN);
    const byName = new Map(skills.map((s) => [s.manifest.name, s]));
    expect(SEVEN.filter((n) => byName.get(n)!.status === 'available').sort()).toEqual([
      'content_generation',
      'data_analysis',
      'email_outreach',
    ]);
    const da = byName.get('data_analysis')!;
    expect(da.parametersJsonSchema).toMatchObject({
      type: 'object',
      required: ['data'],
      additionalProperties: false,
      properties: { aggregate: { enum: ['sum', 'mean', 'count', 'min', 'max'] } },
    });
    expect(da.parameters.safeParse({ data: 'a,b\n1,2', extra: 1 }).success).toBe(false);
    expect(byName.get('web_research')!.manifest.capability).toMatch(/browser/);
  });

  function brokenDir(file: string, text: string) {
    const dir = mkdtempSync(join(tmpdir(), 'mz-skills-'));
    copyFileSync(join(AVAILABLE, 'data_analysis.yaml'), join(dir, 'data_analysis.yaml'));
    writeFileSync(join(dir, file), text);
    return dir;
  }
  const valid = readFileSync(join(AVAILABLE, 'web_research.yaml'), 'utf8');

  it.each([
    [
      'a missing field',
      valid.replace(/^description:.*$/m, ''),
      /web_research\.yaml: description: /,
    ],
    [
      'an unknown agent',
      valid.replace('agents: [sales,', 'agents: [legal,'),
      /web_research\.yaml: agents\.0: /,
    ],
    [
      'a bad permission',
      valid.replace('permissions: []', 'permissions: [crm]'),
      /web_research\.yaml: permissions\.0: must look like area:action/,
    ],
    [
      'needs_capability without capability',
      valid.replace(/^capability:.*$/m, ''),
      /web_research\.yaml: capability: required when status is needs_capability/,
    ],
    [
      'a bad parameter type',
      valid.replace('type: text', 'type: blob'),
      /web_research\.yaml: parameters\.0\.type: /,
    ],
    ['invalid YAML', 'name: [web_research\n', /web_research\.yaml: not valid YAML/],
    [
      'a name that is not the file name',
      valid.replace('name: web_research', 'name: web_search'),
      /web_research\.yaml: name: is web_search; must match/,
    ],
  ])('refuses %s with one clear line', (_what, text, message) => {
    const dir = brokenDir('web_research.yaml', text);
    let error: unknown;
    try {
      loadSkills({ dir, implementations: SKILL_IMPLEMENTATIONS });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SkillManifestError);
    const msg = (error as Error).message;
    expect(msg).toMatch(message);
    expect(msg).toContain(dir);
    expect(msg.split('\n')).toHaveLength(1);
  });

  it('refuses a manifest without an implementation', () => {
    const dir = brokenDir('new_skill.yaml', valid.replace('name: web_research', 'name: new_skill'));
    expect(() => loadSkills({ dir, implementations: SKILL_IMPLEMENTATIONS })).toThrow(
      /new_skill\.yaml: name: no implementation registered for skill new_skill/,
    );
  });
});
