/**
 * Agents through the real Anthropic adapter pointed at the fake model server: each of the
 * five agents sends its own system prompt and exactly its declared tools (read from the
 * fake's request log), the user's local date/time is in the prompt, the tool loop, the step
 * and time limits, cancel (the upstream request is closed and no tool runs), and a pending
 * approval ending the turn. Then the /agents and /skills routes by role, skill parameter
 * validation and permissions, capability_unavailable, and email_outreach ending in an
 * approval instead of a sent mail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentEvent, AgentName } from '../src/agents/agent.ts';
import { AGENTS } from '../src/agents/registry.ts';
import type { Principal } from '../src/auth/principal.ts';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';

let fake: FakeModelServer;
let t: TestApp;

const MAX_STEPS = 3;
const TURN_TIMEOUT_MS = 3_000;

beforeAll(async () => {
  fake = await startFakeModelServer();
  t = await createTestApp({
    env: { ANTHROPIC_API_KEY: 'test-key', ANTHROPIC_BASE_URL: fake.url },
    overrides: {
      agents: { max_steps: MAX_STEPS, turn_timeout_ms: TURN_TIMEOUT_MS },
      // Shorter than the turn, as start-up requires.
      llm: { response_timeout_ms: TURN_TIMEOUT_MS - 1_000 },
    },
  });
});
afterAll(async () => {
  await t?.close();
  await fake?.close();
});

async function principalOf(role: string, timezone = 'Asia/Kuala_Lumpur'): Promise<Principal> {
  const user = await t.createUser(role);
  const r = t.container.roles.get(role)!;
  return {
    id: user.id,
    email: user.email,
    name: `Test ${role}`,
    role,
    department: r.department,
    permissions: r.permissions,
    sessionId: 'session-1',
    timezone,
    locale: 'en',
  };
}

async function turn(
  principal: Principal,
  agent: AgentName,
  text: string,
  options: { signal?: AbortSignal; onEvent?: (e: AgentEvent) => void } = {},
) {
  const events: AgentEvent[] = [];
  for await (const event of t.container.agents.run({
    principal,
    agent,
    sessionId: null,
    history: [],
    message: { role: 'user', content: [{ type: 'text', text }] },
    source: 'web',
    signal: options.signal ?? new AbortController().signal,
  })) {
    events.push(event);
    options.onEvent?.(event);
  }
  const end = events.at(-1);
  if (end?.type !== 'message-end') throw new Error('turn did not end with message-end');
  return { events, end };
}

type Body = {
  system?: string;
  tools?: { name: string }[];
  messages: { role: string; content: unknown }[];
};
const bodyOf = (i: number) => fake.requests[i]!.body as Body;

describe('agents through the real adapter', () => {
  it.each([...AGENTS.keys()])(
    '%s sends its own system prompt and exactly its declared tools',
    async (name) => {
      fake.clear();
      fake.script('anthropic', 'Done.');
      const agent = AGENTS.get(name)!;
      const { end } = await turn(await principalOf('executive'), name, 'Hello');
      expect(end.finish).toBe('stop');
      expect(end.text).toBe('Done.');
      expect(end.answered_by).toMatchObject({ provider: 'anthropic', fallback_reason: null });
      expect(fake.requests).toHaveLength(1);
      const body = bodyOf(0);
      expect(body.system).toContain(agent.instructions.split('\n')[0]);
      // No other agent's instructions leak in.
      for (const other of AGENTS.values())
        if (other.name !== name)
          expect(body.system).not.toContain(other.instructions.split('\n')[0]);
      for (const skill of agent.skills) expect(body.system).toContain(`### Skill: ${skill}`);
      expect(body.system).toContain('Mezzofy brand guidelines');
      const sent = (body.tools ?? []).map((tool) => tool.name).sort();
      expect(sent).toEqual([...agent.tools].sort());
      // Every tool a skill of the agent needs is among them: data_analysis → analyse_table.
      for (const skill of agent.skills)
        for (const tool of t.container.skills.require(skill).manifest.tools)
          expect(sent, `${skill} needs ${tool}`).toContain(tool);
      expect(sent).toContain('analyse_table');
    },
  );

  it("puts the user's local date and time in the system prompt", async () => {
    fake.clear();
    fake.script('anthropic', 'ok');
    await turn(
      await principalOf('finance_viewer', 'Asia/Kuala_Lumpur'),
      'finance',
      'What day is it?',
    );
    const system = bodyOf(0).system!;
    const local = new Intl.DateTimeFormat('en-CA', {
      timeZone: 'Asia/Kuala_Lumpur',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
    }).format(new Date());
    expect(system).toContain('Current local date/time for the user:');
    expect(system).toContain(`(${local})`);
    expect(system).toContain('(timezone Asia/Kuala_Lumpur, GMT+08:00)');
  });

  it('runs a tool the model calls and answers with its result', async () => {
    fake.clear();
    fake.script(
      'anthropic',
      {
        text: 'Let me look.',
        toolCalls: [{ id: 'toolu_1', name: 'search_leads', input: { industry: 'F&B' } }],
      },
      'There are no F&B leads yet.',
    );
    const { events, end } = await turn(await principalOf('sales_rep'), 'sales', 'Any F&B leads?');
    expect(events.map((e) => e.type).filter((type) => type !== 'text-delta')).toEqual([
      'model-start',
      'tool-call-start',
      'tool-call-end',
      'model-start',
      'message-end',
    ]);
    expect(events.find((e) => e.type === 'tool-call-end')).toMatchObject({
      name: 'search_leads',
      status: 'ok',
    });
    expect(end.finish).toBe('stop');
    expect(end.text).toBe('Let me look.\n\nThere are no F&B leads yet.');
    expect(end.calls).toHaveLength(2);
    expect(end.usage.input_tokens).toBe(
      end.calls[0]!.usage.input_tokens + end.calls[1]!.usage.input_tokens,
    );
    expect(end.transcript.map((m) => m.role)).toEqual(['assistant', 'tool', 'assistant']);
    // The second request carries the call and its result back to the model.
    const second = JSON.stringify(bodyOf(1).messages);
    expect(second).toContain('"tool_use_id":"toolu_1"');
  });

  it('stops at the step limit', async () => {
    fake.clear();
    fake.setDefaultReply({ toolCalls: [{ name: 'search_leads', input: {} }] });
    try {
      const { events, end } = await turn(await principalOf('sales_rep'), 'sales', 'Keep searching');
      expect(end.finish).toBe('step_limit');
      expect(fake.requests).toHaveLength(MAX_STEPS);
      expect(events.filter((e) => e.type === 'tool-call-end')).toHaveLength(MAX_STEPS);
    } finally {
      fake.setDefaultReply('Hello from the fake model.');
    }
  });

  it('cancel mid-stream closes the upstream request and runs no tool', async () => {
    fake.clear();
    fake.script('anthropic', {
      text: ['Let ', 'me ', 'check ', 'the ', 'leads.'],
      chunkDelayMs: 150,
      toolCalls: [{ name: 'search_leads', input: {} }],
    });
    const controller = new AbortController();
    const { events, end } = await turn(await principalOf('sales_rep'), 'sales', 'Find leads', {
      signal: controller.signal,
      onEvent: (e) => {
        if (e.type === 'text-delta') controller.abort();
      },
    });
    expect(end.finish).toBe('cancelled');
    expect(events.some((e) => e.type === 'tool-call-start')).toBe(false);
    expect(await fake.requests[0]!.settled).toBe('client-closed');
    expect(fake.requests).toHaveLength(1);
  });

  it('ends the turn at the time limit, aborting the model call', async () => {
    fake.clear();
    fake.script('anthropic', { text: 'late', delayMs: 10_000 });
    const started = Date.now();
    const { end } = await turn(await principalOf('support_agent'), 'support', 'Slow answer please');
    expect(end.finish).toBe('time_limit');
    expect(Date.now() - started).toBeLessThan(TURN_TIMEOUT_MS + 2_000);
    expect(await fake.requests[0]!.settled).toBe('client-closed');
  });

  it('a tool that needs approval ends the turn with awaiting_approval', async () => {
    fake.clear();
    fake.script('anthropic', {
      toolCalls: [
        {
          name: 'send_email',
          input: { to: ['buyer@kopihouse.test'], subject: 'Hello', body: 'Hi there' },
        },
      ],
    });
    const { events, end } = await turn(
      await principalOf('sales_rep'),
      'sales',
      'E-mail Kopi House',
    );
    const ended = events.find((e) => e.type === 'tool-call-end');
    expect(ended).toMatchObject({ name: 'send_email', status: 'pending_approval' });
    expect(ended && 'approval_id' in ended && ended.approval_id).toBeTruthy();
    expect(end.finish).toBe('awaiting_approval');
    expect(fake.requests).toHaveLength(1);
  });
});

describe('GET /agents and /skills', () => {
  it('lists only the agents the role may reach', async () => {
    const rep = await t.userWithToken('sales_rep');
    const res = await t.inject(rep.token, { method: 'GET', url: '/agents' });
    expect(res.statusCode).toBe(200);
    expect(res.json().items.map((a: { name: string }) => a.name)).toEqual(['sales']);
    expect(res.json().items[0].skills).toContain('email_outreach');
    const exec = await t.userWithToken('executive');
    const all = await t.inject(exec.token, { method: 'GET', url: '/agents' });
    expect(
      all
        .json()
        .items.map((a: { name: string }) => a.name)
        .sort(),
    ).toEqual([...AGENTS.keys()].sort());
  });

  it('lists only the skills the role may use, with parameter schemas and status', async () => {
    const viewer = await t.userWithToken('finance_viewer');
    const res = await t.inject(viewer.token, { method: 'GET', url: '/skills' });
    expect(res.statusCode).toBe(200);
    const items = res.json().items as {
      name: string;
      status: string;
      parameters: { properties: object };
    }[];
    expect(items.map((s) => s.name)).toEqual([
      'data_analysis',
      'email_outreach',
      'financial_reporting',
    ]);
    expect(items.find((s) => s.name === 'financial_reporting')).toMatchObject({
      status: 'needs_capability',
    });
    expect(Object.keys(items[0]!.parameters.properties)).toContain('group_by');

    const support = await t.userWithToken('support_agent');
    const names = (await t.inject(support.token, { method: 'GET', url: '/skills' }))
      .json()
      .items.map((s: { name: string }) => s.name);
    expect(names).toEqual(['data_analysis', 'email_outreach', 'web_research']);
  });
});

describe('POST /skills/:name/run', () => {
  const run = (token: string, name: string, parameters: unknown) =>
    t.inject(token, { method: 'POST', url: `/skills/${name}/run`, payload: { parameters } });

  it('runs data_analysis on a CSV with real numbers', async () => {
    const user = await t.userWithToken('marketing_staff');
    const res = await run(user.token, 'data_analysis', {
      data: 'campaign,redeemed\nCNY,120\nRaya,80\nCNY,40',
      group_by: 'campaign',
      value_column: 'redeemed',
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ skill: 'data_analysis', status: 'ok', approval_id: null });
    expect(res.json().data.group_by.groups).toEqual([
      { group: 'CNY', value: 160, rows: 2 },
      { group: 'Raya', value: 80, rows: 1 },
    ]);
    expect(res.json().text).toContain('3 rows × 2 columns');
  });

  it('validates parameters', async () => {
    const user = await t.userWithToken('marketing_staff');
    const missing = await run(user.token, 'data_analysis', { group_by: 'x' });
    expect(missing.statusCode).toBe(400);
    expect(missing.json().error).toMatchObject({ code: 'validation_failed' });
    expect(missing.json().error.details[0].path).toBe('parameters.data');
    const extra = await run(user.token, 'data_analysis', { data: 'a\n1', aggregate: 'median' });
    expect(extra.statusCode).toBe(400);
  });

  it('refuses unknown skills and skills the role may not use', async () => {
    const support = await t.userWithToken('support_agent');
    const unknown = await run(support.token, 'tarot_reading', {});
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json().error.code).toBe('unknown_skill');
    const forbidden = await run(support.token, 'linkedin_prospecting', {
      industry: 'F&B',
      location: 'HK',
    });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json().error.code).toBe('forbidden');
  });

  it.each([
    ['linkedin_prospecting', 'sales_rep', { industry: 'F&B', location: 'Hong Kong' }],
    ['financial_reporting', 'finance_viewer', { report: 'profit_and_loss', period: '2025-03' }],
    ['pitch_deck_generation', 'marketing_staff', { prospect: 'Kopi House' }],
    ['web_research', 'support_agent', { question: 'Who runs loyalty at Kopi House?' }],
  ])('%s answers capability_unavailable, never fake output', async (name, role, parameters) => {
    const exec = await t.userWithToken(role);
    const res = await run(exec.token, name, parameters);
    expect(res.statusCode).toBe(501);
    expect(res.json().error.code).toBe('capability_unavailable');
    expect(res.json().error.message).toMatch(/needs/);
  });

  it('email_outreach drafts with the model and ends in a pending approval, not a sent mail', async () => {
    fake.clear();
    fake.script(
      'anthropic',
      'Subject: Quick follow-up\n\nHi Mei,\n\nThanks for your time today.\n\nBest,\nTest',
    );
    const rep = await t.userWithToken('sales_rep');
    const res = await run(rep.token, 'email_outreach', {
      to: ['mei@kopihouse.test'],
      purpose: 'Thank them for the demo and propose a call next week.',
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: 'pending_approval',
      data: { subject: 'Quick follow-up' },
    });
    expect(res.json().approval_id).toEqual(expect.any(String));
    expect(fake.requests).toHaveLength(1);
    const approvals = await t.inject(rep.token, { method: 'GET', url: '/approvals' });
    expect(JSON.stringify(approvals.json())).toContain(res.json().approval_id);
  });

  it('content_generation returns the model draft', async () => {
    fake.clear();
    fake.script('anthropic', 'Collect stamps, earn treats at [merchant name]!');
    const user = await t.userWithToken('marketing_staff');
    const res = await run(user.token, 'content_generation', {
      brief: 'Stamp card launch',
      channel: 'push',
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      status: 'ok',
      text: 'Collect stamps, earn treats at [merchant name]!',
    });
    expect((fake.requests[0]!.body as Body).system).toContain('Mezzofy brand guidelines');
  });
});
