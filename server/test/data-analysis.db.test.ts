/**
 * data_analysis in chat: the agents offer analyse_table, and a chat turn over REST (real
 * Anthropic adapter, fake model server) runs it on the CSV from the user's message — the
 * fake model copies the table into its tool call and the next model request carries the
 * computed totals and averages as the tool result. Bad input comes back to the model as a
 * readable tool error and the turn still ends normally. The tool through the container's
 * executor for every role that reaches an agent, with its audit row.
 */
import type { ChatReply } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENTS } from '../src/agents/registry.ts';
import type { ToolContext } from '../src/tools/tool.ts';
import {
  type FakeModelServer,
  type FakeRequestRecord,
  startFakeModelServer,
} from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let fake: FakeModelServer;
let t: TestApp;

beforeAll(async () => {
  fake = await startFakeModelServer();
  t = await createTestApp({
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
  });
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

/**
 * March invoices. Per merchant: Kopi House 1,250.50 + 310.25 + 439.25 = 2,000 (mean 666.67),
 * Noodle Bar 900 + 1,000 = 1,900 (mean 950), Bake & Co 480. All six: 4,380, mean 730.
 */
const CSV = `merchant,invoice,amount_hkd
Kopi House,INV-101,"1,250.50"
Noodle Bar,INV-102,900
Kopi House,INV-103,310.25
Bake & Co,INV-104,480
Noodle Bar,INV-105,"1,000"
Kopi House,INV-106,439.25`;

type Block = {
  type: string;
  text?: string;
  tool_use_id?: string;
  content?: unknown;
  is_error?: boolean;
};
type Body = {
  tools?: { name: string; input_schema: Record<string, unknown> }[];
  messages: { role: string; content: string | Block[] }[];
};
const bodyOf = (request: FakeRequestRecord) => request.body as Body;

/** The text of the request's last user message (the one this turn sent). */
function lastUserText(request: FakeRequestRecord): string {
  const last = bodyOf(request).messages.at(-1)!;
  if (typeof last.content === 'string') return last.content;
  return last.content
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('\n');
}

/** The tool_result blocks the request carries back to the model. */
function toolResults(request: FakeRequestRecord): Block[] {
  return bodyOf(request)
    .messages.flatMap((m) => (typeof m.content === 'string' ? [] : m.content))
    .filter((b) => b.type === 'tool_result');
}

const resultText = (block: Block) =>
  typeof block.content === 'string'
    ? block.content
    : (block.content as { text: string }[]).map((c) => c.text).join('');

const send = (token: string, payload: Record<string, unknown>) =>
  t.inject(token, { method: 'POST', url: '/chat/send', payload });

describe('analyse_table in a chat turn', () => {
  it('every agent with the data_analysis skill offers analyse_table to the model', async () => {
    const exec = await t.userWithToken('executive');
    for (const agent of AGENTS.values()) {
      expect(agent.skills).toContain('data_analysis');
      fake.clear();
      fake.script('anthropic', 'ok');
      const res = await send(exec.token, { message: 'Hello', agent: agent.name });
      expect(res.statusCode).toBe(200);
      const tool = bodyOf(fake.requests[0]!).tools?.find((x) => x.name === 'analyse_table');
      expect(tool, agent.name).toBeDefined();
      expect(tool!.input_schema).toMatchObject({
        type: 'object',
        required: ['data'],
        additionalProperties: false,
        properties: { data: { type: 'string', maxLength: 200_000 } },
      });
    }
  });

  it('the model calls analyse_table with the CSV from the message and reads the real totals', async () => {
    const viewer = await t.userWithToken('finance_viewer');
    fake.clear();
    let calledWith: string | undefined;
    fake.script(
      'anthropic',
      (request) => {
        // Like a model: copy the table from the user's message into the tool call.
        const text = lastUserText(request);
        calledWith = text.slice(text.indexOf('merchant,invoice'));
        return {
          text: 'Let me total that.',
          toolCalls: [
            {
              id: 'toolu_totals',
              name: 'analyse_table',
              input: { data: calledWith, group_by: 'merchant', value_column: 'amount_hkd' },
            },
          ],
        };
      },
      (request) => ({
        toolCalls: [
          {
            id: 'toolu_means',
            name: 'analyse_table',
            input: {
              data: calledWith!,
              group_by: 'merchant',
              value_column: 'amount_hkd',
              aggregate: 'mean',
            },
          },
        ],
        text: `Got ${toolResults(request).length} result.`,
      }),
      'Kopi House HKD 2,000; Noodle Bar HKD 1,900; Bake & Co HKD 480 (6 invoices, HKD 4,380).',
    );
    const res = await send(viewer.token, {
      message: `Here are our March invoices. What is the total per merchant?\n\n${CSV}`,
      agent: 'finance',
    });
    expect(res.statusCode).toBe(200);
    const reply = res.json() as ChatReply;
    expect(reply.finish).toBe('stop');
    expect(reply.tool_calls).toEqual([
      { id: 'toolu_totals', name: 'analyse_table', status: 'ok' },
      { id: 'toolu_means', name: 'analyse_table', status: 'ok' },
    ]);
    expect(reply.text).toContain('HKD 4,380');
    expect(calledWith).toBe(CSV);
    expect(fake.requests).toHaveLength(3);

    // Request 2 carries the totals back to the model as the tool result.
    const [totalsBlock] = toolResults(fake.requests[1]!);
    expect(totalsBlock).toMatchObject({ tool_use_id: 'toolu_totals' });
    expect(totalsBlock!.is_error).toBeUndefined();
    const totals = JSON.parse(resultText(totalsBlock!));
    expect(totals).toMatchObject({ format: 'csv', rows: 6, columns: 3 });
    expect(totals.group_by).toEqual({
      column: 'merchant',
      value_column: 'amount_hkd',
      aggregate: 'sum',
      groups: [
        { group: 'Kopi House', value: 2000, rows: 3 },
        { group: 'Noodle Bar', value: 1900, rows: 2 },
        { group: 'Bake & Co', value: 480, rows: 1 },
      ],
    });
    expect(totals.column_stats[2]).toMatchObject({
      name: 'amount_hkd',
      type: 'number',
      count: 6,
      missing: 0,
      sum: 4380,
      mean: 730,
      min: 310.25,
      max: 1250.5,
    });

    // Request 3 carries the averages per merchant.
    const meansBlock = toolResults(fake.requests[2]!).find((b) => b.tool_use_id === 'toolu_means')!;
    expect(JSON.parse(resultText(meansBlock)).group_by.groups).toEqual([
      { group: 'Noodle Bar', value: 950, rows: 2 },
      { group: 'Kopi House', value: 666.666666667, rows: 3 },
      { group: 'Bake & Co', value: 480, rows: 1 },
    ]);

    const audit = await t.db
      .selectFrom('audit_log')
      .selectAll()
      .where('user_id', '=', viewer.id)
      .where('action', '=', 'tool.call')
      .execute();
    expect(audit.map((row) => row.details)).toEqual([
      expect.objectContaining({ tool: 'analyse_table', effect: 'read', status: 'ok' }),
      expect.objectContaining({ tool: 'analyse_table', effect: 'read', status: 'ok' }),
    ]);
  });

  it('bad input reaches the model as a readable tool error; the turn still ends normally', async () => {
    const staff = await t.userWithToken('marketing_staff');
    fake.clear();
    fake.script(
      'anthropic',
      {
        toolCalls: [
          { id: 'toolu_prose', name: 'analyse_table', input: { data: 'Sales were good in May.' } },
          {
            id: 'toolu_huge',
            name: 'analyse_table',
            input: { data: `n\n${'7\n'.repeat(100_001)}` },
          },
          {
            id: 'toolu_column',
            name: 'analyse_table',
            input: { data: CSV, group_by: 'region', value_column: 'amount_hkd' },
          },
        ],
      },
      'That is not a table I can read; please paste it as CSV.',
    );
    const res = await send(staff.token, { message: 'Analyse my sales', agent: 'marketing' });
    expect(res.statusCode).toBe(200);
    const reply = res.json() as ChatReply;
    expect(reply.finish).toBe('stop');
    expect(reply.tool_calls.map((c) => [c.id, c.status])).toEqual([
      ['toolu_prose', 'error'],
      ['toolu_huge', 'error'],
      ['toolu_column', 'error'],
    ]);
    const results = toolResults(fake.requests[1]!);
    expect(results.map((b) => [b.tool_use_id, b.is_error])).toEqual([
      ['toolu_prose', true],
      ['toolu_huge', true],
      ['toolu_column', true],
    ]);
    const [prose, huge, column] = results.map(resultText);
    expect(prose).toMatch(/^analyse_table failed: the data is not a table: /);
    expect(huge).toContain('the arguments for analyse_table are not valid');
    expect(huge).toContain('- data: the table is longer than 200000 characters');
    expect(column).toBe(
      'analyse_table failed: there is no column "region"; columns: merchant, invoice, amount_hkd',
    );
  });
});

describe('analyse_table through the container executor', () => {
  it('runs for every role that reaches an agent (chat:use) and is refused without it', async () => {
    const ctxFor = async (token: string): Promise<ToolContext> => ({
      principal: await t.container.auth.authenticate(token),
      sessionId: null,
      source: 'web',
      signal: new AbortController().signal,
      log: t.container.loggers.app,
    });
    for (const role of t.container.roles.list()) {
      const user = await t.userWithToken(role.name);
      const outcome = await t.container.tools.executor.execute(
        { id: `call_${role.name}`, name: 'analyse_table', input: { data: CSV } },
        await ctxFor(user.token),
        ['analyse_table'],
      );
      if (role.permissions.has('chat:use')) {
        expect(outcome.status, role.name).toBe('ok');
        expect(JSON.parse(outcome.output).column_stats[2].sum).toBe(4380);
      } else {
        expect(outcome).toMatchObject({ status: 'error' });
        expect(outcome.output).toContain('lacks the chat:use permission');
      }
    }
  });
});
