/**
 * analyse_table through the real tool executor: the JSON Schema the model sees (the skill's
 * parameters, size limits), exact totals and averages per group on a small CSV and a markdown
 * table, and bad input (not a table, unreadable CSV, an unknown column, too large, options
 * without group_by, a missing permission) answered as a readable tool error, never a throw.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../../audit/audit.repository.ts';
import type { Principal } from '../../auth/principal.ts';
import { SKILL_IMPLEMENTATIONS } from '../../skills/available/index.ts';
import { loadSkills } from '../../skills/skill-loader.ts';
import type { ToolContext, ToolOutcome } from '../tool.ts';
import { createToolExecutor } from '../tool-executor.ts';
import { createToolRegistry } from '../tool-registry.ts';
import { analyseTableTool, COMPACT_ABOVE_CHARS, MAX_TABLE_CHARS } from './table-analysis.tool.ts';

const log = pino({ level: 'silent' });
const RESULT_MAX_BYTES = 16_384;

function ctx(permissions = ['chat:use', 'agent:finance']): ToolContext {
  const principal: Principal = {
    id: '00000000-0000-4000-8000-000000000001',
    email: 'viewer@mezzofy.test',
    name: 'Viewer',
    role: 'finance_viewer',
    department: 'finance',
    permissions: new Set(permissions),
    sessionId: '00000000-0000-4000-8000-000000000002',
    timezone: 'Asia/Singapore',
    locale: 'en',
  };
  return { principal, sessionId: null, source: 'web', signal: new AbortController().signal, log };
}

function setup() {
  const registry = createToolRegistry([analyseTableTool()]);
  const audits: AuditEntry[] = [];
  const executor = createToolExecutor({
    registry,
    approvals: {
      park: async () => {
        throw new Error('analyse_table must never be parked');
      },
      runAutoApproved: async () => {
        throw new Error('analyse_table must never be parked');
      },
    },
    limits: { timeoutMs: 5_000, resultMaxBytes: RESULT_MAX_BYTES, autoApproveRoles: [] },
    audit: async (entry) => {
      audits.push(entry);
    },
  });
  const run = (input: Record<string, unknown>, permissions?: string[]): Promise<ToolOutcome> =>
    executor.execute({ id: 'call-1', name: 'analyse_table', input }, ctx(permissions), [
      'analyse_table',
    ]);
  return { registry, executor, audits, run };
}

/** Five outlet-months: revenue per outlet 4000.75 / 2000.75 / 610, total 6611.5. */
const CSV = `outlet,month,redemptions,revenue_sgd
Orchard,Jan,120,2400.50
Orchard,Feb,80,1600.25
Tampines,Jan,45,900
Tampines,Feb,55,1100.75
Jurong,Jan,30,610
`;

const ok = (outcome: ToolOutcome) => {
  expect(outcome.status, outcome.output).toBe('ok');
  return JSON.parse(outcome.output);
};
const error = (outcome: ToolOutcome) => {
  expect(outcome.status).toBe('error');
  return outcome.output;
};

describe('analyse_table', () => {
  it('is a read tool needing chat:use, with the skill parameters as its JSON Schema', () => {
    const { registry } = setup();
    const tool = registry.get('analyse_table')!;
    expect(tool).toMatchObject({ effect: 'read', permission: 'chat:use' });
    const schema = registry.spec('analyse_table').inputSchema as {
      required: string[];
      additionalProperties: boolean;
      properties: Record<string, { maxLength?: number; enum?: string[]; description?: string }>;
    };
    expect(schema).toMatchObject({ type: 'object', required: ['data'] });
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.data!.maxLength).toBe(MAX_TABLE_CHARS);
    expect(schema.properties.aggregate!.enum).toEqual(['sum', 'mean', 'count', 'min', 'max']);
    expect(schema.properties.delimiter!.enum).toEqual([',', ';', '\t', '|']);
    for (const [name, property] of Object.entries(schema.properties))
      expect(property.description, name).toBeTruthy();

    // Same options as the data_analysis skill (its manifest parameters), which names the tool.
    const [skill] = loadSkills({
      dir: new URL('../../skills/available', import.meta.url).pathname,
      implementations: SKILL_IMPLEMENTATIONS,
    }).filter((s) => s.manifest.name === 'data_analysis');
    expect(skill!.manifest.tools).toEqual(['analyse_table']);
    expect(Object.keys(schema.properties).sort()).toEqual(
      skill!.manifest.parameters.map((p) => p.name).sort(),
    );
    expect(skill!.manifest.instructions).toContain('analyse_table');
  });

  it('computes totals and averages per group on a small CSV', async () => {
    const { run, audits } = setup();
    const totals = ok(await run({ data: CSV, group_by: 'outlet', value_column: 'revenue_sgd' }));
    expect(totals).toMatchObject({ format: 'csv', rows: 5, columns: 4 });
    expect(totals.group_by).toEqual({
      column: 'outlet',
      value_column: 'revenue_sgd',
      aggregate: 'sum',
      groups: [
        { group: 'Orchard', value: 4000.75, rows: 2 },
        { group: 'Tampines', value: 2000.75, rows: 2 },
        { group: 'Jurong', value: 610, rows: 1 },
      ],
    });
    const column = Object.fromEntries(
      totals.column_stats.map((c: { name: string }) => [c.name, c]),
    );
    expect(column.revenue_sgd).toMatchObject({
      type: 'number',
      count: 5,
      sum: 6611.5,
      mean: 1322.3,
      min: 610,
      max: 2400.5,
    });
    expect(column.redemptions).toMatchObject({ type: 'number', sum: 330, mean: 66 });
    expect(column.outlet).toMatchObject({ type: 'text', distinct: 3 });

    const averages = ok(
      await run({
        data: CSV,
        group_by: 'Outlet', // column names match case-insensitively
        value_column: 'redemptions',
        aggregate: 'mean',
      }),
    );
    expect(averages.group_by.groups).toEqual([
      { group: 'Orchard', value: 100, rows: 2 },
      { group: 'Tampines', value: 50, rows: 2 },
      { group: 'Jurong', value: 30, rows: 1 },
    ]);
    const perMonth = ok(await run({ data: CSV, group_by: 'month', aggregate: 'count' }));
    expect(perMonth.group_by.groups.map((g: { group: string; value: number }) => g)).toEqual([
      { group: 'Jan', value: 3, rows: 3 },
      { group: 'Feb', value: 2, rows: 2 },
    ]);
    expect(audits.map((a) => a.details)).toEqual([
      expect.objectContaining({ tool: 'analyse_table', effect: 'read', status: 'ok' }),
      expect.objectContaining({ tool: 'analyse_table', effect: 'read', status: 'ok' }),
      expect.objectContaining({ tool: 'analyse_table', effect: 'read', status: 'ok' }),
    ]);
  });

  it('reads a markdown table', async () => {
    const { run } = setup();
    const result = ok(
      await run({
        data: `| Region | Issued | Redeemed |
|---|---:|---:|
| HK | 1,000 | 250 |
| SG | 1,500 | 450 |
| HK | 2,000 | 700 |`,
        group_by: 'Region',
        value_column: 'Redeemed',
      }),
    );
    expect(result).toMatchObject({ format: 'markdown', rows: 3, columns: 3 });
    expect(result.column_stats[1]).toMatchObject({ name: 'Issued', sum: 4500, mean: 1500 });
    expect(result.group_by.groups).toEqual([
      { group: 'HK', value: 950, rows: 2 },
      { group: 'SG', value: 450, rows: 1 },
    ]);
  });

  it('answers bad input with a readable tool error', async () => {
    const { run, audits } = setup();
    expect(error(await run({ data: 'Can you add up my sales for March please?' }))).toMatch(
      /^analyse_table failed: the data is not a table: it has no rows under the header row/,
    );
    expect(error(await run({ data: 'a,"b\n1,2' }))).toMatch(
      /^analyse_table failed: the data is not readable CSV: /,
    );
    expect(error(await run({ data: CSV, group_by: 'city', value_column: 'revenue_sgd' }))).toBe(
      'analyse_table failed: there is no column "city"; columns: outlet, month, redemptions, revenue_sgd',
    );
    expect(error(await run({ data: CSV, group_by: 'outlet' }))).toBe(
      'analyse_table failed: value_column is needed to sum per outlet',
    );

    const tooLarge = error(await run({ data: `amount\n${'1\n'.repeat(MAX_TABLE_CHARS / 2)}` }));
    expect(tooLarge).toContain('the arguments for analyse_table are not valid');
    expect(tooLarge).toContain(
      `- data: the table is longer than ${MAX_TABLE_CHARS} characters; ask the user for a smaller extract`,
    );
    expect(error(await run({ data: '   ' }))).toContain('- data: give the table');
    expect(error(await run({ data: CSV, value_column: 'revenue_sgd' }))).toContain(
      '- value_column: value_column goes with group_by',
    );
    expect(error(await run({ data: CSV, aggregate: 'median', group_by: 'outlet' }))).toContain(
      '- aggregate:',
    );
    expect(error(await run({ data: CSV, sql: 'select 1' }))).toContain('sql');

    expect(error(await run({ data: CSV }, ['agent:finance']))).toBe(
      "you may not use analyse_table: the user's role lacks the chat:use permission. Tell the user instead of retrying.",
    );
    expect(audits.map((a) => a.details?.reason ?? a.details?.status)).toEqual([
      'error',
      'error',
      'error',
      'error',
      'invalid_arguments',
      'invalid_arguments',
      'invalid_arguments',
      'invalid_arguments',
      'invalid_arguments',
      'forbidden',
    ]);
  });

  it('keeps a wide table under the result cap by leaving out top-value lists', async () => {
    const { run } = setup();
    const header = Array.from({ length: 150 }, (_, i) => `tag_${i + 1}`).join(',');
    const rows = Array.from({ length: 6 }, (_, r) =>
      Array.from({ length: 150 }, (_, c) => `value-${r}-${c}`).join(','),
    );
    const outcome = await run({ data: [header, ...rows].join('\n') });
    expect(Buffer.byteLength(outcome.output)).toBeGreaterThan(COMPACT_ABOVE_CHARS / 2);
    expect(Buffer.byteLength(outcome.output)).toBeLessThanOrEqual(RESULT_MAX_BYTES);
    const result = ok(outcome); // whole JSON, not cut by the cap
    expect(result).toMatchObject({ rows: 6, columns: 150 });
    expect(result.note).toMatch(/top values/);
    expect(result.column_stats[0]).toEqual({
      name: 'tag_1',
      type: 'text',
      count: 6,
      missing: 0,
      distinct: 6,
    });
  });
});
