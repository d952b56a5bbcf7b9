/**
 * Failover and circuit breaking of chat turns through the real provider clients: the real
 * Anthropic adapter and the real OpenAI-compatible adapter, both pointed at the fake model
 * server, with chat models [anthropic, openai]. Over POST /chat/send and /chat/ws:
 * - Anthropic overloaded in the middle of a tool loop: the next step is answered by OpenAI,
 *   which reads the transcript converted to its wire format (the Anthropic tool call and its
 *   result as an assistant tool_calls message and a `tool` message); the reply, the
 *   message.end event and llm_usage name the fallback and why.
 * - Back on Anthropic after a fallback step: the fallback's tool call ids (Kimi's
 *   `functions.<name>:<n>`) are sent in the id alphabet Anthropic accepts, pairs kept linked.
 * - The circuit breaker: repeated failures open Anthropic's circuit, turns then skip it
 *   without a request; after the cooldown (a moved clock) exactly one probe goes through, a
 *   failed probe re-opens the circuit, a successful one closes it.
 * - A 400 or 401 from Anthropic is not failed over: the turn fails and OpenAI gets nothing.
 */
import type { AddressInfo } from 'node:net';
import type { ChatReply } from '@mezzofy/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeModelServer, startFakeModelServer } from './fakes/model-server.ts';
import { createTestApp, type TestApp } from './helpers/test-app.ts';
import { Client } from './helpers/ws-client.ts';

const CLAUDE = 'claude-sonnet-5-5';
const GPT = 'gpt-4.1';
/** Both have default prices; moonshot stays disabled (no key). */
const CHAT_MODELS = [`anthropic/${CLAUDE}`, `openai/${GPT}`];

let fake: FakeModelServer;

/** An app with both providers pointed at the fake, no retries (each failure fails over). */
function appWith(llm: Record<string, unknown>, extra: Parameters<typeof createTestApp>[0] = {}) {
  return createTestApp({
    ...extra,
    env: {
      ANTHROPIC_API_KEY: 'test-anthropic-key',
      ANTHROPIC_BASE_URL: fake.url,
      OPENAI_API_KEY: 'test-openai-key',
      OPENAI_BASE_URL: fake.openAiBaseURL,
    },
    overrides: { llm: { models: { chat: CHAT_MODELS }, retry: { max_attempts: 1 }, ...llm } },
  });
}

beforeAll(async () => {
  fake = await startFakeModelServer();
});
afterAll(async () => {
  await fake?.close();
});

const send = (app: TestApp, token: string, payload: Record<string, unknown>) =>
  app.inject(token, { method: 'POST', url: '/chat/send', payload });

const usageOf = (app: TestApp, userId: string) =>
  app.db
    .selectFrom('llm_usage')
    .select(['provider', 'model', 'status', 'error_kind', 'fallback_reason', 'call_id'])
    .where('user_id', '=', userId)
    .orderBy('id')
    .execute();

type OpenAiMessage = {
  role: string;
  content: unknown;
  tool_calls?: { id: string; type: string; function: { name: string; arguments: string } }[];
  tool_call_id?: string;
};
type AnthropicBlock = { type: string; id?: string; tool_use_id?: string; content?: unknown };

/** Step 1 (Anthropic): a tool call; step 2 (Anthropic): 529 overloaded; OpenAI: the answer. */
function scriptOverloadMidLoop(toolCallId: string, answer: string) {
  fake.script('anthropic', {
    text: 'Let me look that up.',
    toolCalls: [{ id: toolCallId, name: 'search_leads', input: { query: 'Failover Foods' } }],
  });
  fake.script('anthropic', { error: { status: 529, message: 'Overloaded' } });
  fake.script('openai', { text: answer, usage: { inputTokens: 900, outputTokens: 12 } });
}

/** The OpenAI request of step 2 carries step 1 converted from Anthropic's format. */
function expectConvertedTranscript(toolCallId: string) {
  const openAi = fake.requestsFor('openai');
  expect(openAi).toHaveLength(1);
  const body = openAi[0]!.body as {
    model: string;
    messages: OpenAiMessage[];
    tools?: { function: { name: string } }[];
  };
  expect(body.model).toBe(GPT);
  expect(body.tools?.map((tool) => tool.function.name)).toContain('search_leads');
  const [system, user, assistant, tool, ...rest] = body.messages;
  expect(rest).toEqual([]);
  expect(system).toMatchObject({ role: 'system' });
  expect(user).toEqual({ role: 'user', content: 'Find Failover Foods' });
  expect(assistant).toMatchObject({
    role: 'assistant',
    content: 'Let me look that up.',
    tool_calls: [{ id: toolCallId, type: 'function', function: { name: 'search_leads' } }],
  });
  expect(JSON.parse(assistant!.tool_calls![0]!.function.arguments)).toEqual({
    query: 'Failover Foods',
  });
  expect(tool).toMatchObject({ role: 'tool', tool_call_id: toolCallId });
  // The tool really ran: its result names the seeded lead.
  expect(String(tool!.content)).toContain('Failover Foods Pte Ltd');

  // Anthropic saw the same step in its own format before it failed.
  const anthropic = fake.requestsFor('anthropic');
  expect(anthropic).toHaveLength(2);
  const step2 = (anthropic[1]!.body as { messages: { role: string; content: unknown }[] }).messages;
  expect(step2.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
  expect(step2[1]!.content as AnthropicBlock[]).toContainEqual(
    expect.objectContaining({ type: 'tool_use', id: toolCallId }),
  );
  expect(step2[2]!.content as AnthropicBlock[]).toContainEqual(
    expect.objectContaining({ type: 'tool_result', tool_use_id: toolCallId }),
  );
}

/** llm_usage: step 1 ok on Anthropic; step 2 one error on Anthropic, then ok on OpenAI. */
async function expectUsageOfFailover(app: TestApp, userId: string) {
  const rows = await usageOf(app, userId);
  expect(rows).toEqual([
    expect.objectContaining({
      provider: 'anthropic',
      model: CLAUDE,
      status: 'ok',
      error_kind: null,
      fallback_reason: null,
    }),
    expect.objectContaining({
      provider: 'anthropic',
      model: CLAUDE,
      status: 'error',
      error_kind: 'overloaded',
      fallback_reason: null,
    }),
    expect.objectContaining({
      provider: 'openai',
      model: GPT,
      status: 'ok',
      error_kind: null,
      fallback_reason: 'overloaded',
    }),
  ]);
  // Step 2 is one call: the failed attempt and the fallback share its call_id.
  expect(rows[1]!.call_id).toBe(rows[2]!.call_id);
  expect(rows[0]!.call_id).not.toBe(rows[1]!.call_id);
}

describe('failover in the middle of a tool loop', () => {
  let t: TestApp;
  let wsUrl: string;

  beforeAll(async () => {
    // Failures here never open a circuit (the breaker has its own describe).
    t = await appWith({ circuit_breaker: { failures: 100 } });
    await t.db
      .insertInto('sales_leads')
      .values({ company_name: 'Failover Foods Pte Ltd', contact_email: 'buyer@failover.test' })
      .execute();
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = t.app.server.address() as AddressInfo;
    wsUrl = `ws://127.0.0.1:${port}/chat/ws`;
  });
  afterAll(async () => {
    await t?.close();
  });

  it('POST /chat/send: Anthropic overloaded at step 2, OpenAI answers from the converted transcript', async () => {
    const user = await t.userWithToken('sales_rep');
    fake.clear();
    scriptOverloadMidLoop('toolu_failover_rest', 'Failover Foods is a new lead.');

    const res = await send(t, user.token, { message: 'Find Failover Foods', agent: 'sales' });
    expect(res.statusCode, res.body).toBe(200);
    const reply = res.json() as ChatReply;
    expect(reply).toMatchObject({
      agent: 'sales',
      finish: 'stop',
      provider: 'openai',
      model: GPT,
      fallback_reason: 'overloaded',
      tool_calls: [{ id: 'toolu_failover_rest', name: 'search_leads', status: 'ok' }],
    });
    expect(reply.text).toContain('Failover Foods is a new lead.');
    expect(fake.counts).toEqual({ anthropic: 2, openai: 1 });
    expect(fake.queued()).toBe(0);

    expectConvertedTranscript('toolu_failover_rest');
    await expectUsageOfFailover(t, user.id);

    // The stored answer says the same (a reload shows who answered).
    const detail = await t.inject(user.token, {
      method: 'GET',
      url: `/chat/sessions/${reply.session_id}`,
    });
    expect(detail.statusCode, detail.body).toBe(200);
    expect(detail.json().messages.at(-1).metadata).toMatchObject({
      provider: 'openai',
      model: GPT,
      fallback_reason: 'overloaded',
    });
  });

  it('WebSocket: model.start per step and message.end name the fallback and why', async () => {
    const user = await t.userWithToken('sales_rep');
    const c = new Client(wsUrl);
    try {
      await c.hello(user.token);
      fake.clear();
      scriptOverloadMidLoop('toolu_failover_ws', 'Found it over the socket.');

      await c.send({
        type: 'chat.send',
        request_id: 'failover-1',
        message: 'Find Failover Foods',
        agent: 'sales',
      });
      const end = await c.next('message.end', (e) => e.request_id === 'failover-1', 15_000);
      expect(end).toMatchObject({
        request_id: 'failover-1',
        finish: 'stop',
        provider: 'openai',
        model: GPT,
        fallback_reason: 'overloaded',
        tool_calls: [{ id: 'toolu_failover_ws', name: 'search_leads', status: 'ok' }],
      });
      expect(end.text).toContain('Found it over the socket.');

      const turn = c.events.filter((e) => 'request_id' in e && e.request_id === 'failover-1');
      expect(
        turn
          .filter((e) => e.type === 'model.start')
          .map((e) => ({ provider: e.provider, model: e.model, reason: e.fallback_reason })),
      ).toEqual([
        { provider: 'anthropic', model: CLAUDE, reason: null },
        { provider: 'openai', model: GPT, reason: 'overloaded' },
      ]);
      expect(turn.map((e) => e.type).filter((type) => type !== 'text.delta')).toEqual([
        'model.start',
        'tool.call-start',
        'tool.call-end',
        'model.start',
        'message.end',
      ]);
      expect(fake.counts).toEqual({ anthropic: 2, openai: 1 });
      expectConvertedTranscript('toolu_failover_ws');
      await expectUsageOfFailover(t, user.id);
    } finally {
      c.ws.terminate();
    }
  });

  it("back on Anthropic after a fallback step: the fallback's tool call ids are made valid for Anthropic", async () => {
    // Kimi (an OpenAI-compatible server) names its tool calls `functions.<name>:<n>`;
    // Anthropic answers 400 to a tool_use id outside [a-zA-Z0-9_-], as the real API does.
    const KIMI_ID = 'functions.search_leads:0';
    const validIds = (body: unknown) => {
      const blocks = (body as { messages: { content: AnthropicBlock[] | string }[] }).messages
        .flatMap((m) => (Array.isArray(m.content) ? m.content : []))
        .filter((b) => b.type === 'tool_use' || b.type === 'tool_result');
      return blocks.every((b) => /^[a-zA-Z0-9_-]+$/.test(b.id ?? b.tool_use_id ?? ''));
    };
    const strictAnthropic = (text: string) => (request: { body: unknown }) =>
      validIds(request.body)
        ? text
        : {
            error: {
              status: 400,
              message:
                "messages.1.content.1.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
            },
          };
    const user = await t.userWithToken('sales_rep');
    fake.clear();
    // Step 1: Anthropic overloaded, the fallback calls the tool; step 2: Anthropic is back.
    fake.script('anthropic', { error: { status: 529 } }, strictAnthropic('Claude is back.'));
    fake.script('openai', {
      toolCalls: [{ id: KIMI_ID, name: 'search_leads', input: { query: 'Failover Foods' } }],
    });

    const res = await send(t, user.token, { message: 'Find Failover Foods', agent: 'sales' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({
      provider: 'anthropic',
      fallback_reason: null,
      text: 'Claude is back.',
      tool_calls: [{ id: KIMI_ID, name: 'search_leads', status: 'ok' }],
    });
    expect(fake.counts).toEqual({ anthropic: 2, openai: 1 });
    // The pair stays linked: the tool_result names the tool_use it answers.
    const step2 = (fake.requestsFor('anthropic')[1]!.body as { messages: { content: unknown }[] })
      .messages;
    const use = (step2[1]!.content as AnthropicBlock[]).find((b) => b.type === 'tool_use')!;
    const result = (step2[2]!.content as AnthropicBlock[]).find((b) => b.type === 'tool_result')!;
    expect(use.id).toMatch(/^[a-zA-Z0-9_-]+$/);
    expect(result.tool_use_id).toBe(use.id);

    // The next turn of the session carries that tool call in its history: still accepted.
    fake.script('anthropic', strictAnthropic('Still fine.'));
    const next = await send(t, user.token, {
      message: 'And now?',
      agent: 'sales',
      session_id: res.json().session_id,
    });
    expect(next.statusCode, next.body).toBe(200);
    expect(next.json()).toMatchObject({ provider: 'anthropic', text: 'Still fine.' });
  });

  for (const { status, kind, atStep } of [
    { status: 400, kind: 'bad_request', atStep: 1 },
    { status: 401, kind: 'auth', atStep: 1 },
    { status: 401, kind: 'auth', atStep: 2 },
  ] as const) {
    it(`a ${status} from Anthropic at step ${atStep} is not failed over: the turn fails, OpenAI gets nothing`, async () => {
      const user = await t.userWithToken('sales_rep');
      fake.clear();
      if (atStep === 2)
        fake.script('anthropic', {
          toolCalls: [{ id: 'toolu_before_refusal', name: 'search_leads', input: { query: 'x' } }],
        });
      fake.script('anthropic', { error: { status, message: `refused with ${status}` } });
      // Would answer if the turn failed over.
      fake.script('openai', 'The fallback must not answer this.');

      const res = await send(t, user.token, { message: 'Find Failover Foods', agent: 'sales' });
      expect(res.statusCode, res.body).toBe(503);
      const error = res.json().error;
      expect(error.code).toBe('llm_unavailable');
      expect(error.details).toMatchObject({
        reason: 'rejected',
        provider: 'anthropic',
        model: CLAUDE,
        kind,
        status,
      });
      expect(error.message).toContain(`HTTP ${status}`);
      if (kind === 'auth') expect(error.message).toMatch(/Claude refused our API key/);
      else expect(error.message).toMatch(/rejected the request as invalid/);
      expect(fake.counts).toEqual({ anthropic: atStep, openai: 0 });
      expect(fake.queued('openai')).toBe(1);

      const rows = await usageOf(t, user.id);
      expect(rows.map((r) => [r.provider, r.status, r.error_kind])).toEqual([
        ...(atStep === 2 ? [['anthropic', 'ok', null]] : []),
        ['anthropic', 'error', kind],
      ]);
      // The failed turn is stored as failed, the user message kept.
      const stored = await t.db
        .selectFrom('conversations')
        .select(['role', 'metadata'])
        .where('user_id', '=', user.id)
        .orderBy('created_at', 'asc')
        .execute();
      expect(stored.map((r) => r.role)).toEqual(['user', 'assistant']);
      expect(stored[1]!.metadata).toMatchObject({ status: 'failed', error: 'llm_unavailable' });
    });
  }
});

describe('circuit breaker through the real clients', () => {
  const FAILURES = 2;
  const COOLDOWN_S = 30;
  let t: TestApp;
  let offsetMs = 0;
  const clock = () => new Date(Date.now() + offsetMs);
  const breaker = () => t.container.llm.breakerStates()[`anthropic/${CLAUDE}`];

  beforeAll(async () => {
    t = await appWith(
      { circuit_breaker: { failures: FAILURES, window_s: 60, cooldown_s: COOLDOWN_S } },
      { clock },
    );
  });
  afterAll(async () => {
    await t?.close();
  });

  async function turn(token: string, message: string) {
    const res = await send(t, token, { message, agent: 'sales' });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as ChatReply;
  }
  const answeredBy = (r: ChatReply) => [r.provider, r.model, r.fallback_reason];

  it('opens after repeated failures, skips Anthropic while open, lets one probe through after the cooldown', async () => {
    const user = await t.userWithToken('sales_rep');
    fake.clear();
    fake.setDefaultReply('Default answer.');

    // Two failures within the window: each turn fails over; the second opens the circuit.
    fake.script('anthropic', { error: { status: 529 } }, { error: { status: 500 } });
    fake.script('openai', 'Fallback one.', 'Fallback two.');
    expect(answeredBy(await turn(user.token, 'one'))).toEqual(['openai', GPT, 'overloaded']);
    expect(breaker()).toBe('closed');
    expect(answeredBy(await turn(user.token, 'two'))).toEqual(['openai', GPT, 'server_error']);
    expect(fake.counts).toEqual({ anthropic: 2, openai: 2 });
    expect(breaker()).toBe('open');

    // Open: straight to OpenAI, no request to Anthropic, even one that would succeed.
    fake.script('anthropic', 'Anthropic must not be asked.');
    expect(answeredBy(await turn(user.token, 'three'))).toEqual(['openai', GPT, 'circuit_open']);
    expect(fake.counts).toEqual({ anthropic: 2, openai: 3 });

    // Just before the cooldown ends it is still open.
    offsetMs += (COOLDOWN_S - 1) * 1000;
    expect(answeredBy(await turn(user.token, 'four'))).toEqual(['openai', GPT, 'circuit_open']);
    expect(fake.counts).toEqual({ anthropic: 2, openai: 4 });

    // After the cooldown: one probe; it fails (overloaded), the circuit opens again.
    fake.clear();
    fake.script('anthropic', { error: { status: 529 } });
    offsetMs += 2_000;
    expect(breaker()).toBe('half_open');
    expect(answeredBy(await turn(user.token, 'five'))).toEqual(['openai', GPT, 'overloaded']);
    expect(fake.counts).toEqual({ anthropic: 1, openai: 1 });
    expect(breaker()).toBe('open');
    expect(answeredBy(await turn(user.token, 'six'))).toEqual(['openai', GPT, 'circuit_open']);
    expect(fake.counts).toEqual({ anthropic: 1, openai: 2 });

    // After another cooldown: exactly one probe while it is in flight; the concurrent turn
    // still skips Anthropic. The probe succeeds and closes the circuit.
    fake.clear();
    offsetMs += (COOLDOWN_S + 1) * 1000;
    fake.script('anthropic', { text: 'Anthropic is back.', delayMs: 1_500 });
    fake.script('openai', 'Answered while the probe ran.');
    const probe = turn(user.token, 'probe');
    await expect.poll(() => fake.counts.anthropic, { timeout: 5_000 }).toBe(1);
    const meanwhile = await turn(user.token, 'meanwhile');
    expect(answeredBy(meanwhile)).toEqual(['openai', GPT, 'circuit_open']);
    expect(answeredBy(await probe)).toEqual(['anthropic', CLAUDE, null]);
    expect(fake.counts).toEqual({ anthropic: 1, openai: 1 });
    expect(breaker()).toBe('closed');

    // Closed: the next turn goes to Anthropic again.
    fake.script('anthropic', 'Anthropic as usual.');
    const after = await turn(user.token, 'after');
    expect(answeredBy(after)).toEqual(['anthropic', CLAUDE, null]);
    expect(after.text).toBe('Anthropic as usual.');
    expect(fake.counts).toEqual({ anthropic: 2, openai: 1 });

    // No llm_usage row for a skipped (open) candidate: only real attempts are recorded.
    const rows = await usageOf(t, user.id);
    expect(rows.map((r) => [r.provider, r.status, r.fallback_reason])).toEqual([
      ['anthropic', 'error', null],
      ['openai', 'ok', 'overloaded'],
      ['anthropic', 'error', null],
      ['openai', 'ok', 'server_error'],
      ['openai', 'ok', 'circuit_open'],
      ['openai', 'ok', 'circuit_open'],
      ['anthropic', 'error', null],
      ['openai', 'ok', 'overloaded'],
      ['openai', 'ok', 'circuit_open'],
      ['openai', 'ok', 'circuit_open'],
      ['anthropic', 'ok', null],
      ['anthropic', 'ok', null],
    ]);
  });
});
