/**
 * The base loop with a fake model and a small fake executor: start-up refuses agents that
 * name unknown tools or skills, and a cancel that fires while one tool runs stops the turn
 * before the next tool starts.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Principal } from '../auth/principal.ts';
import type { LlmEvent } from '../llm/llm-call.ts';
import type { ChatMessage, ToolSpec } from '../llm/types.ts';
import { eventsOf } from '../realtime/turn-events.ts';
import { SKILL_IMPLEMENTATIONS } from '../skills/available/index.ts';
import { loadSkills } from '../skills/skill-loader.ts';
import { createSkillRegistry } from '../skills/skill-registry.ts';
import type { ToolCall, ToolExecutor, ToolOutcome } from '../tools/tool.ts';
import type { AgentDefinition, AgentEvent, AgentName } from './agent.ts';
import { type AgentLimits, createAgentRunner, validateAgents } from './base-agent.ts';
import { AGENTS } from './registry.ts';

const skills = createSkillRegistry(
  loadSkills({
    dir: new URL('../skills/available', import.meta.url).pathname,
    implementations: SKILL_IMPLEMENTATIONS,
  }),
);
const KNOWN = [
  'analyse_table',
  'send_email',
  'create_calendar_event',
  'post_teams_message',
  'search_leads',
  'contact_lead',
];

function fakeExecutor(
  onExecute: (call: ToolCall) => Promise<ToolOutcome> = async () => ({
    status: 'ok',
    output: '[]',
  }),
) {
  const executed: string[] = [];
  const executor: ToolExecutor = {
    specs(names): ToolSpec[] {
      return names.map((name) => {
        if (!KNOWN.includes(name)) throw new Error(`unknown tool ${name}`);
        return { name, description: name, inputSchema: { type: 'object', properties: {} } };
      });
    },
    async execute(call) {
      executed.push(call.id);
      return onExecute(call);
    },
  };
  return { executor, executed };
}

const principal: Principal = {
  id: 'u1',
  email: 'u@mezzofy.test',
  name: 'U',
  role: 'sales_rep',
  department: 'sales',
  permissions: new Set(['chat:use', 'agent:sales']),
  sessionId: 's',
  timezone: 'Asia/Singapore',
  locale: 'en',
};

/** Runs one sales turn of the base loop on a fake model and executor; its events. */
async function runTurn(
  llm: { stream(purpose: string): AsyncGenerator<LlmEvent> },
  executor: ToolExecutor,
  signal: AbortSignal,
  message: ChatMessage = { role: 'user', content: [{ type: 'text', text: 'hi' }] },
  limits: AgentLimits = { maxSteps: 5, turnTimeoutMs: 5_000 },
): Promise<AgentEvent[]> {
  const runner = createAgentRunner({
    llm: llm as never,
    tools: executor,
    skills,
    agents: AGENTS,
    knowledge: () => '',
    clock: () => new Date(),
    limits,
    log: pino({ level: 'silent' }),
  });
  const events: AgentEvent[] = [];
  for await (const e of runner.run({
    principal,
    agent: 'sales',
    sessionId: null,
    history: [],
    message,
    source: 'web',
    signal,
  }))
    events.push(e);
  return events;
}

describe('agent start-up checks', () => {
  const withAgent = (patch: Partial<AgentDefinition>) =>
    new Map<AgentName, AgentDefinition>([['sales', { ...AGENTS.get('sales')!, ...patch }]]);

  it('accepts the five agents', () => {
    expect(() => validateAgents(AGENTS, skills, fakeExecutor().executor)).not.toThrow();
  });

  it('refuses an agent that declares an unknown tool', () => {
    expect(() =>
      validateAgents(
        withAgent({ tools: ['send_email', 'fax_document'] }),
        skills,
        fakeExecutor().executor,
      ),
    ).toThrow('agent sales declares the tool fax_document, which is not in the tool registry');
  });

  it("refuses an agent missing a skill's tool, or an unknown skill", () => {
    expect(() =>
      validateAgents(withAgent({ tools: ['search_leads'] }), skills, fakeExecutor().executor),
    ).toThrow(/skill email_outreach, which needs the tool send_email/);
    expect(() =>
      validateAgents(withAgent({ skills: ['astrology'] }), skills, fakeExecutor().executor),
    ).toThrow(/unknown skill astrology/);
  });
});

describe('cancel between tools', () => {
  it('no tool starts after the cancel fires', async () => {
    const controller = new AbortController();
    const { executor, executed } = fakeExecutor(async () => {
      controller.abort(); // the user cancels while the first tool runs
      return { status: 'ok', output: '[]' };
    });
    const llm = {
      async *stream(): AsyncGenerator<LlmEvent> {
        yield { type: 'tool-call', id: 'a', name: 'search_leads', input: {} };
        yield { type: 'tool-call', id: 'b', name: 'search_leads', input: {} };
        yield { type: 'finish', reason: 'tool-calls' };
      },
    };
    const events = await runTurn(llm, executor, controller.signal);
    expect(executed).toEqual(['a']);
    const end = events.at(-1)!;
    expect(end).toMatchObject({ type: 'message-end', finish: 'cancelled' });
    // The transcript stays valid for the next model call: every call has a result.
    const results = end.type === 'message-end' ? end.transcript.at(-1)!.content : [];
    expect(results).toMatchObject([
      { type: 'tool-result', id: 'a', output: '[]' },
      {
        type: 'tool-result',
        id: 'b',
        isError: true,
        output: 'Not run: the user cancelled the turn.',
      },
    ]);
  });

  it('a consumer that stops reading aborts the model call; a finished turn aborts nothing', async () => {
    const signals: AbortSignal[] = [];
    const llm = {
      async *stream(
        _purpose: string,
        _request: unknown,
        ctx: { signal: AbortSignal },
      ): AsyncGenerator<LlmEvent> {
        signals.push(ctx.signal);
        yield { type: 'text-delta', text: 'Hello ' };
        yield { type: 'text-delta', text: 'there.' };
        yield { type: 'finish', reason: 'stop' };
      },
    };
    const runner = createAgentRunner({
      llm: llm as never,
      tools: fakeExecutor().executor,
      skills,
      agents: AGENTS,
      knowledge: () => '',
      clock: () => new Date(),
      limits: { maxSteps: 5, turnTimeoutMs: 5_000 },
      log: pino({ level: 'silent' }),
    });
    const input = {
      principal,
      agent: 'sales' as const,
      sessionId: null,
      history: [],
      message: { role: 'user' as const, content: [{ type: 'text' as const, text: 'hi' }] },
      source: 'web' as const,
      signal: new AbortController().signal,
    };
    for await (const e of runner.run(input)) if (e.type === 'text-delta') break;
    expect(signals[0]!.aborted).toBe(true);

    const events: AgentEvent[] = [];
    for await (const e of runner.run(input)) events.push(e);
    expect(events.at(-1)).toMatchObject({
      type: 'message-end',
      finish: 'stop',
      text: 'Hello there.',
    });
    expect(signals[1]!.aborted).toBe(false);
  });

  it('announces the files a tool made, after its call ends, and the WebSocket maps them', async () => {
    const report = { id: 'f1', name: 'pipeline.csv', type: 'csv', size_bytes: 120 };
    const { executor } = fakeExecutor(async () => ({
      status: 'ok',
      output: '{"rows":3}',
      artifacts: [report],
    }));
    let calls = 0;
    const llm = {
      async *stream(): AsyncGenerator<LlmEvent> {
        calls += 1;
        if (calls === 1) {
          yield { type: 'tool-call', id: 'a', name: 'search_leads', input: {} };
          yield { type: 'finish', reason: 'tool-calls' };
        } else {
          yield { type: 'text-delta', text: 'Here is the file.' };
          yield { type: 'finish', reason: 'stop' };
        }
      },
    };
    const events = await runTurn(llm, executor, new AbortController().signal);
    const types = events.map((e) => e.type);
    const end = types.indexOf('tool-call-end');
    expect(types[end + 1]).toBe('artifact-created');
    const announced = events[end + 1]!;
    expect(announced).toEqual({ type: 'artifact-created', tool_call_id: 'a', artifact: report });
    expect(eventsOf('r1', announced)).toEqual([
      { type: 'artifact.created', request_id: 'r1', tool_call_id: 'a', artifact: report },
    ]);
  });
});

describe('which models a step goes to', () => {
  /** Runs a sales turn; the purpose of each model call and the turn's events. */
  async function purposesOf(message: ChatMessage, replies: LlmEvent[][], toolOutput = '[]') {
    const purposes: string[] = [];
    let step = 0;
    const llm = {
      async *stream(purpose: string): AsyncGenerator<LlmEvent> {
        purposes.push(purpose);
        for (const e of replies[step++] ?? [{ type: 'finish', reason: 'stop' }]) yield e;
      },
    };
    const events = await runTurn(
      llm,
      fakeExecutor(async () => ({ status: 'ok', output: toolOutput })).executor,
      new AbortController().signal,
      message,
      { maxSteps: 5, turnTimeoutMs: 5_000, longDocumentChars: 30_000 },
    );
    return { purposes, statuses: events.filter((e) => e.type === 'status') };
  }
  const text = (t: string) => ({
    role: 'user' as const,
    content: [{ type: 'text' as const, text: t }],
  });

  it('a short text turn: the chat models, no status', async () => {
    const { purposes, statuses } = await purposesOf(text('Any new leads?'), []);
    expect(purposes).toEqual(['chat']);
    expect(statuses).toEqual([]);
  });

  it('an image: the vision models, announced as "Analyzing image…"', async () => {
    const { purposes, statuses } = await purposesOf(
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is on this receipt?' },
          { type: 'image', mediaType: 'image/png', data: 'iVBORw0KGgo=' },
        ],
      },
      [],
    );
    expect(purposes).toEqual(['vision']);
    expect(statuses).toEqual([{ type: 'status', text: 'Analyzing image…' }]);
  });

  it('a pasted document over the limit: the long-document models, announced once', async () => {
    const { purposes, statuses } = await purposesOf(text(`Summarise:\n${'x'.repeat(30_000)}`), [
      [
        { type: 'tool-call', id: 't1', name: 'search_leads', input: {} },
        { type: 'finish', reason: 'tool-calls' },
      ],
    ]);
    expect(purposes).toEqual(['long_document', 'long_document']);
    expect(statuses).toEqual([{ type: 'status', text: 'Reading the document…' }]);
  });

  it('a tool result that makes the prompt long moves the next step to the long-document models', async () => {
    const { purposes } = await purposesOf(
      text('Export my leads'),
      [
        [
          { type: 'tool-call', id: 't1', name: 'search_leads', input: {} },
          { type: 'finish', reason: 'tool-calls' },
        ],
      ],
      'y'.repeat(40_000),
    );
    expect(purposes).toEqual(['chat', 'long_document']);
  });
});
