/**
 * The LLM manager against scripted providers on a real database (PGlite and PostgreSQL):
 * retries, failover and its reasons, first-byte timeout, mid-stream failure, the circuit
 * breaker (asserted by call counts on a moved clock), the llm_usage ledger, budgets and
 * their one-time warnings, and the not-configured answer.
 */
import type { Department } from '@mezzofy/protocol';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load-config.ts';
import { AppError } from '../src/errors.ts';
import { LlmError } from '../src/llm/llm-errors.ts';
import {
  createLlmManager,
  type LlmCallContext,
  type LlmEvent,
  type LlmRequest,
  type LlmResult,
} from '../src/llm/llm-manager.ts';
import type { ModelPurpose, ProviderErrorKind } from '../src/llm/types.ts';
import { monthSpend } from '../src/llm/usage.repository.ts';
import { insertUser } from '../src/users/users.repository.ts';
import {
  answer,
  createScriptedProvider,
  fail,
  failMidStream,
  hang,
} from './helpers/scripted-provider.ts';
import { createTestDatabase, type TestDatabase } from './helpers/test-database.ts';

let t: TestDatabase;
let counter = 0;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.drop();
});

const db = () => t.database.db;

async function newUser(role: string, department: Department, isActive = true) {
  counter += 1;
  const user = await insertUser(db(), {
    email: `llm${counter}-${Date.now()}@mezzofy.test`,
    name: `${role} ${counter}`,
    password_hash: 'x',
    department,
    role,
    is_active: isActive,
  });
  return user.id;
}

const REQUEST: LlmRequest = {
  system: 'You are helpful.',
  messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }],
};

interface HarnessOptions {
  llm?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Start of the test clock (ISO). */
  at?: string;
}

function harness(options: HarnessOptions = {}) {
  const config = parseConfig({
    env: { ANTHROPIC_API_KEY: 'test-anthropic', MOONSHOT_API_KEY: 'test-moonshot', ...options.env },
    ignoreFile: true,
    overrides: {
      llm: {
        models: { chat: ['anthropic/claude-sonnet-5-5', 'moonshot/kimi-k2-0905-preview'] },
        ...options.llm,
      },
    },
  }).config.llm;
  let now = Date.parse(options.at ?? '2025-03-10T04:00:00Z');
  const sleeps: number[] = [];
  const primary = createScriptedProvider('anthropic');
  const secondary = createScriptedProvider('moonshot');
  const manager = createLlmManager({
    config,
    providers: new Map([
      ['anthropic', primary],
      ['moonshot', secondary],
    ]),
    database: t.database,
    clock: () => new Date(now),
    log: pino({ level: 'silent' }),
    // Backoff only moves the clock: no real waiting.
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
    random: () => 0.5,
  });
  return {
    manager,
    primary,
    secondary,
    sleeps,
    config,
    advance(ms: number) {
      now += ms;
    },
  };
}

type Harness = ReturnType<typeof harness>;

/** Drains one call: its events, its result or error, and the text it streamed. */
async function run(
  h: Harness,
  ctx: LlmCallContext,
  purpose: ModelPurpose = 'chat',
  onEvent?: (e: LlmEvent) => void,
  request: LlmRequest = REQUEST,
) {
  const events: LlmEvent[] = [];
  let result: LlmResult | undefined;
  let error: unknown;
  try {
    const it = h.manager.stream(purpose, request, ctx);
    for (;;) {
      const step = await it.next();
      if (step.done) {
        result = step.value;
        break;
      }
      events.push(step.value);
      onEvent?.(step.value);
    }
  } catch (err) {
    error = err;
  }
  const text = events.map((e) => (e.type === 'text-delta' ? e.text : '')).join('');
  return { events, result, error, text };
}

const usageOf = (callId: string) =>
  db()
    .selectFrom('llm_usage')
    .selectAll()
    .where('call_id', '=', callId)
    .orderBy('attempt')
    .execute();

const usageOfUser = (userId: string) =>
  db().selectFrom('llm_usage').selectAll().where('user_id', '=', userId).orderBy('id').execute();

const callIdOf = (error: unknown) => ((error as AppError).details as { call_id: string }).call_id;

async function salesCtx(): Promise<LlmCallContext> {
  return { userId: await newUser('sales_rep', 'sales'), department: 'sales', source: 'mobile' };
}

describe('a model call', () => {
  it('answers from the primary, streams its events between start and result, and charges the department', async () => {
    const h = harness();
    const ctx = await salesCtx();
    const { events, result, error, text } = await run(h, {
      ...ctx,
      sessionId: crypto.randomUUID(),
    });
    expect(error).toBeUndefined();
    expect(text).toBe('Hello there');
    expect(events[0]).toMatchObject({
      type: 'start',
      provider: 'anthropic',
      model: 'claude-sonnet-5-5',
      provider_label: 'Claude',
      fallback_reason: null,
      primary: null,
    });
    expect(events.map((e) => e.type)).toEqual([
      'start',
      'text-delta',
      'text-delta',
      'usage',
      'finish',
      'result',
    ]);
    expect(events.at(-1)).toEqual({ type: 'result', result });
    expect(result).toMatchObject({
      provider: 'anthropic',
      model: 'claude-sonnet-5-5',
      fallback_reason: null,
      usage: { input_tokens: 1000, output_tokens: 500 },
      // 1000 × $2/M + 500 × $10/M
      cost_usd: 0.007,
      finish_reason: 'stop',
      attempts: [{ provider: 'anthropic', model: 'claude-sonnet-5-5', outcome: 'ok' }],
    });
    expect(h.primary.requests[0]).toMatchObject({
      model: 'claude-sonnet-5-5',
      system: 'You are helpful.',
    });
    const rows = await usageOf(result!.call_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      provider: 'anthropic',
      model: 'claude-sonnet-5-5',
      purpose: 'chat',
      department: 'sales',
      user_id: ctx.userId,
      source: 'mobile',
      status: 'ok',
      attempt: 1,
      input_tokens: 1000,
      output_tokens: 500,
      error_kind: null,
      fallback_reason: null,
    });
    expect(Number(rows[0]!.cost_usd)).toBe(0.007);
    expect(rows[0]!.latency_ms).toBeGreaterThanOrEqual(0);
    expect(rows[0]!.ttfb_ms).toBeGreaterThanOrEqual(0);
  });

  it('work run by a schedule or webhook is charged to the department that owns it', async () => {
    const h = harness();
    const { result } = await run(h, { userId: null, department: 'marketing', source: 'scheduler' });
    const [row] = await usageOf(result!.call_id);
    expect(row).toMatchObject({ department: 'marketing', user_id: null, source: 'scheduler' });
  });

  it('complete() returns the text and the result', async () => {
    const h = harness();
    h.primary.script({
      events: [
        { type: 'text-delta', text: 'sales' },
        { type: 'tool-call', id: 't1', name: 'route', input: { agent: 'sales' } },
        { type: 'usage', inputTokens: 10, outputTokens: 2 },
        { type: 'finish', reason: 'tool-calls' },
      ],
    });
    const out = await h.manager.complete('chat', REQUEST, await salesCtx());
    expect(out.text).toBe('sales');
    expect(out.toolCalls).toEqual([
      { type: 'tool-call', id: 't1', name: 'route', input: { agent: 'sales' } },
    ]);
    expect(out.result.finish_reason).toBe('tool-calls');
  });
});

describe('retries and failover', () => {
  it('retries a retryable error with backoff, then succeeds on the same model', async () => {
    const h = harness();
    h.primary.script(fail('server'));
    const ctx = await salesCtx();
    const { result, error } = await run(h, ctx);
    expect(error).toBeUndefined();
    expect(h.primary.calls).toBe(2);
    expect(h.secondary.calls).toBe(0);
    // base 500 ms, first retry: 250 + 0.5 × 250
    expect(h.sleeps).toEqual([375]);
    expect(result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
    const rows = await usageOf(result!.call_id);
    expect(rows.map((r) => [r.attempt, r.status, r.error_kind])).toEqual([
      [1, 'error', 'server'],
      [2, 'ok', null],
    ]);
    expect(rows.every((r) => r.department === 'sales' && r.user_id === ctx.userId)).toBe(true);
  });

  const cases: Array<[ProviderErrorKind, string]> = [
    ['rate_limited', 'rate_limited'],
    ['server', 'server_error'],
    ['overloaded', 'overloaded'],
    ['timeout', 'timeout'],
    ['connection', 'connection'],
  ];
  for (const [kind, reason] of cases) {
    it(`fails over to the secondary on ${kind}, with fallback_reason ${reason}`, async () => {
      const h = harness();
      h.primary.otherwise(fail(kind));
      const ctx = await salesCtx();
      const { events, result, error } = await run(h, ctx);
      expect(error).toBeUndefined();
      expect(h.primary.calls).toBe(2); // max_attempts
      expect(h.secondary.calls).toBe(1);
      expect(events[0]).toMatchObject({
        type: 'start',
        provider: 'moonshot',
        provider_label: 'Kimi',
        fallback_reason: reason,
        primary: { provider: 'anthropic', model: 'claude-sonnet-5-5', provider_label: 'Claude' },
      });
      expect(result).toMatchObject({
        provider: 'moonshot',
        model: 'kimi-k2-0905-preview',
        fallback_reason: reason,
        // 1000 × $0.60/M + 500 × $2.50/M
        cost_usd: 0.00185,
      });
      const rows = await usageOf(result!.call_id);
      expect(rows.map((r) => [r.provider, r.status, r.error_kind, r.fallback_reason])).toEqual([
        ['anthropic', 'error', kind, null],
        ['anthropic', 'error', kind, null],
        ['moonshot', 'ok', null, reason],
      ]);
      expect(rows.map((r) => Number(r.cost_usd))).toEqual([0, 0, 0.00185]);
      expect(new Set(rows.map((r) => r.user_id))).toEqual(new Set([ctx.userId]));
    });
  }

  for (const [kind, status] of [
    ['auth', 401],
    ['bad_request', 400],
  ] as const) {
    it(`does not retry or fail over on ${status} (${kind}) and says why`, async () => {
      const h = harness();
      h.primary.otherwise(fail(kind));
      const ctx = await salesCtx();
      const { error } = await run(h, ctx);
      expect(error).toBeInstanceOf(LlmError);
      const err = error as LlmError;
      expect(err.code).toBe('llm_unavailable');
      expect(err.statusCode).toBe(503);
      expect(err.reason).toBe('rejected');
      expect(err.message).toContain(`HTTP ${status}`);
      if (kind === 'auth')
        expect(err.message).toMatch(/Claude refused our API key.*ANTHROPIC_API_KEY/);
      else expect(err.message).toMatch(/rejected the request as invalid/);
      expect(h.primary.calls).toBe(1);
      expect(h.secondary.calls).toBe(0);
      expect(h.sleeps).toEqual([]);
      const rows = await usageOfUser(ctx.userId!);
      expect(rows.map((r) => [r.status, r.error_kind])).toEqual([['error', kind]]);
      expect(rows[0]!.call_id).toBe(callIdOf(error));
    });
  }

  it('honours retry-after within the cap', async () => {
    const h = harness({ llm: { retry: { max_retry_after_ms: 5_000 } } });
    h.primary.script(fail('rate_limited', { retryAfterMs: 4_000 }));
    const { result } = await run(h, await salesCtx());
    expect(h.sleeps).toEqual([4_000]);
    expect(h.primary.calls).toBe(2);
    expect(result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
  });

  it('fails over at once, without waiting, when retry-after is above the cap', async () => {
    const h = harness({ llm: { retry: { max_retry_after_ms: 5_000 } } });
    h.primary.script(fail('rate_limited', { retryAfterMs: 60_000 }));
    const { result } = await run(h, await salesCtx());
    expect(h.sleeps).toEqual([]);
    expect(h.primary.calls).toBe(1);
    expect(h.secondary.calls).toBe(1);
    expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: 'rate_limited' });
  });

  it('aborts an attempt with no first event within first_byte_timeout_ms and fails over', async () => {
    const h = harness({ llm: { first_byte_timeout_ms: 50, retry: { max_attempts: 1 } } });
    h.primary.script(hang());
    const started = performance.now();
    const { result, error } = await run(h, await salesCtx());
    expect(error).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(h.primary.calls).toBe(1);
    // The upstream request was cancelled, not left running.
    await expect.poll(() => h.primary.aborted).toBe(1);
    expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: 'timeout' });
    const rows = await usageOf(result!.call_id);
    expect(rows.map((r) => [r.provider, r.status, r.error_kind])).toEqual([
      ['anthropic', 'error', 'timeout'],
      ['moonshot', 'ok', null],
    ]);
    expect(rows[0]!.error_message).toMatch(/first-byte timeout/);
  });

  it('a slow first event inside the timeout is not a timeout', async () => {
    const h = harness({ llm: { first_byte_timeout_ms: 2_000 } });
    h.primary.script({ ...answer(), delayMs: 30 });
    const { result } = await run(h, await salesCtx());
    expect(result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
  });

  it('a request asked without streaming is allowed response_timeout_ms, not the first-byte timeout', async () => {
    const h = harness({
      llm: { first_byte_timeout_ms: 50, response_timeout_ms: 5_000, retry: { max_attempts: 1 } },
    });
    h.primary.script({ ...answer(), delayMs: 300 });
    const whole = { ...REQUEST, stream: false };
    const { result, error } = await run(h, await salesCtx(), 'chat', undefined, whole);
    expect(error).toBeUndefined();
    expect(result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
    expect(h.primary.requests.at(-1)).toMatchObject({ stream: false });
    // The same delay on a streamed request is a first-byte timeout.
    h.primary.script({ ...answer(), delayMs: 300 });
    const streamed = await run(h, await salesCtx());
    expect(streamed.result).toMatchObject({ provider: 'moonshot', fallback_reason: 'timeout' });
  });

  it('no whole answer within response_timeout_ms: a timeout, and the next model at once', async () => {
    // Two tries per model by default: a whole answer that timed out is not tried again.
    const h = harness({ llm: { first_byte_timeout_ms: 5_000, response_timeout_ms: 50 } });
    expect(h.config.retry.max_attempts).toBe(2);
    h.primary.script(hang());
    const whole = { ...REQUEST, stream: false };
    const { result, error } = await run(h, await salesCtx(), 'chat', undefined, whole);
    expect(error).toBeUndefined();
    expect(h.primary.calls).toBe(1);
    expect(h.sleeps).toEqual([]);
    await expect.poll(() => h.primary.aborted).toBe(1);
    expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: 'timeout' });
    expect(h.secondary.requests.at(-1)).toMatchObject({ stream: false });
    const rows = await usageOf(result!.call_id);
    expect(rows.map((r) => [r.provider, r.status, r.error_kind])).toEqual([
      ['anthropic', 'error', 'timeout'],
      ['moonshot', 'ok', null],
    ]);
    expect(rows[0]!.error_message).toMatch(/no answer within 50 ms \(response timeout\)/);
    // A whole answer has no time to first byte.
    expect(rows[1]!.ttfb_ms).toBeNull();
  });

  it('a failure after the first streamed event fails the turn: no retry, no failover', async () => {
    const h = harness();
    h.primary.script(failMidStream('server', 2));
    const ctx = await salesCtx();
    const { events, error } = await run(h, ctx);
    expect(error).toBeInstanceOf(LlmError);
    const err = error as LlmError;
    expect(err.code).toBe('llm_unavailable');
    expect(err.reason).toBe('turn_failed');
    expect(err.message).toMatch(/broke off after it had started.*not restarted/);
    expect(events.map((e) => e.type)).toEqual(['start', 'usage', 'text-delta']);
    expect(h.primary.calls).toBe(1);
    expect(h.secondary.calls).toBe(0);
    const rows = await usageOfUser(ctx.userId!);
    expect(rows).toHaveLength(1);
    // The tokens known when it broke off are charged.
    expect(rows[0]).toMatchObject({ status: 'error', error_kind: 'server', input_tokens: 1000 });
    expect(Number(rows[0]!.cost_usd)).toBe(0.002);
  });

  it('when every candidate fails: llm_unavailable naming each attempt', async () => {
    const h = harness();
    h.primary.otherwise(fail('overloaded'));
    h.secondary.otherwise(fail('server'));
    const ctx = await salesCtx();
    const { error } = await run(h, ctx);
    expect(error).toBeInstanceOf(LlmError);
    const err = error as LlmError;
    expect(err.code).toBe('llm_unavailable');
    expect(err.reason).toBe('unavailable');
    expect(err.message).toContain('anthropic/claude-sonnet-5-5: overloaded, overloaded');
    expect(err.message).toContain('moonshot/kimi-k2-0905-preview: server, server');
    expect(h.primary.calls + h.secondary.calls).toBe(4);
    expect(await usageOfUser(ctx.userId!)).toHaveLength(4);
  });

  it('the caller aborting stops the call, cancels upstream, and records the attempt', async () => {
    const h = harness();
    h.primary.script(hang());
    const ctx = await salesCtx();
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('user left')), 20);
    const { error } = await run(h, { ...ctx, signal: controller.signal });
    expect((error as Error).message).toBe('user left');
    expect(h.secondary.calls).toBe(0);
    const rows = await usageOfUser(ctx.userId!);
    expect(rows.map((r) => [r.status, r.error_kind])).toEqual([['aborted', 'aborted']]);
  });

  it('a consumer that stops reading mid-answer cancels upstream and records the attempt', async () => {
    const h = harness();
    const ctx = await salesCtx();
    const it = h.manager.stream('chat', REQUEST, ctx);
    for await (const event of it) if (event.type === 'text-delta') break;
    // The upstream request's signal is aborted (the adapter's fetch is cancelled).
    expect(h.primary.requests[0]!.signal?.aborted).toBe(true);
    const rows = await usageOfUser(ctx.userId!);
    expect(rows.map((r) => r.status)).toEqual(['aborted']);
  });
});

describe('circuit breaker (per provider/model)', () => {
  const breakerConfig = {
    retry: { max_attempts: 1 },
    circuit_breaker: { failures: 3, window_s: 60, cooldown_s: 30 },
  };

  it('opens after F failures in W seconds: the primary is not called while open', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.otherwise(fail('server'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) {
      const { result } = await run(h, ctx);
      expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: 'server_error' });
    }
    expect(h.primary.calls).toBe(3);
    expect(h.manager.breakerStates()['anthropic/claude-sonnet-5-5']).toBe('open');
    for (let i = 0; i < 4; i++) {
      const { result } = await run(h, ctx);
      expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: 'circuit_open' });
      expect(result!.attempts[0]).toEqual({
        provider: 'anthropic',
        model: 'claude-sonnet-5-5',
        outcome: 'circuit_open',
      });
    }
    expect(h.primary.calls).toBe(3);
    expect(h.secondary.calls).toBe(7);
    // A skipped candidate is not a model call: no usage row for it.
    const rows = await usageOfUser(ctx.userId!);
    expect(rows.filter((r) => r.provider === 'anthropic')).toHaveLength(3);
    expect(rows.filter((r) => r.fallback_reason === 'circuit_open')).toHaveLength(4);
  });

  it('failures spread beyond the window do not open it', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.script(fail('server'), fail('server'));
    const ctx = await salesCtx();
    await run(h, ctx);
    await run(h, ctx);
    h.advance(61_000);
    h.primary.script(fail('server'));
    await run(h, ctx);
    const { result } = await run(h, ctx);
    expect(h.primary.calls).toBe(4);
    expect(result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
  });

  it('after C seconds one probe goes through; success closes the circuit', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.script(fail('server'), fail('server'), fail('server'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) await run(h, ctx);
    h.advance(29_000);
    await run(h, ctx);
    expect(h.primary.calls).toBe(3);
    h.advance(1_000);
    const probe = await run(h, ctx);
    expect(h.primary.calls).toBe(4);
    expect(probe.result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
    expect(h.manager.breakerStates()['anthropic/claude-sonnet-5-5']).toBe('closed');
    const after = await run(h, ctx);
    expect(after.result).toMatchObject({ provider: 'anthropic' });
    expect(h.primary.calls).toBe(5);
  });

  it('a failed probe re-opens it for another cooldown', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.otherwise(fail('connection'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) await run(h, ctx);
    h.advance(30_000);
    const probe = await run(h, ctx);
    expect(h.primary.calls).toBe(4);
    expect(probe.result).toMatchObject({ provider: 'moonshot', fallback_reason: 'connection' });
    h.advance(29_000);
    await run(h, ctx);
    expect(h.primary.calls).toBe(4);
    h.advance(1_000);
    h.primary.otherwise(answer());
    const healed = await run(h, ctx);
    expect(h.primary.calls).toBe(5);
    expect(healed.result).toMatchObject({ provider: 'anthropic', fallback_reason: null });
  });

  it('concurrent callers in half-open: exactly one probes, the others fail over', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.script(fail('server'), fail('server'), fail('server'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) await run(h, ctx);
    h.advance(30_000);
    // The probe takes a while to answer; meanwhile four more calls arrive.
    h.primary.script({ ...answer(), delayMs: 100 });
    const results = await Promise.all(Array.from({ length: 5 }, () => run(h, ctx)));
    expect(h.primary.calls).toBe(4);
    const byProvider = results.map((r) => r.result?.provider).sort();
    expect(byProvider).toEqual(['anthropic', 'moonshot', 'moonshot', 'moonshot', 'moonshot']);
    expect(
      results
        .filter((r) => r.result?.fallback_reason === 'circuit_open')
        .map((r) => r.result?.provider),
    ).toEqual(['moonshot', 'moonshot', 'moonshot', 'moonshot']);
    expect(h.manager.breakerStates()['anthropic/claude-sonnet-5-5']).toBe('closed');
  });

  it('is per model: an open circuit on the chat model does not block the routing model', async () => {
    const h = harness({
      llm: {
        ...breakerConfig,
        models: {
          chat: ['anthropic/claude-sonnet-5-5', 'moonshot/kimi-k2-0905-preview'],
          routing: ['anthropic/claude-haiku-5-5'],
        },
      },
    });
    h.primary.script(fail('overloaded'), fail('overloaded'), fail('overloaded'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) await run(h, ctx);
    expect(h.manager.breakerStates()['anthropic/claude-sonnet-5-5']).toBe('open');
    const routing = await run(h, ctx, 'routing');
    expect(routing.result).toMatchObject({ provider: 'anthropic', model: 'claude-haiku-5-5' });
  });

  it('when every candidate is open: llm_unavailable with retry-after', async () => {
    const h = harness({ llm: breakerConfig });
    h.primary.otherwise(fail('server'));
    h.secondary.otherwise(fail('server'));
    const ctx = await salesCtx();
    for (let i = 0; i < 3; i++) await run(h, ctx);
    const calls = h.primary.calls + h.secondary.calls;
    h.advance(10_000);
    const { error } = await run(h, ctx);
    expect(h.primary.calls + h.secondary.calls).toBe(calls);
    expect((error as LlmError).code).toBe('llm_unavailable');
    expect((error as LlmError).message).toMatch(/circuit open.*try again in 20 s/);
    expect((error as LlmError).headers['retry-after']).toBe('20');
  });
});

describe('no model configured', () => {
  it('answers llm_not_configured (503) naming the env vars to set', async () => {
    const config = parseConfig({ env: {}, ignoreFile: true }).config.llm;
    const manager = createLlmManager({
      config,
      providers: new Map(),
      database: t.database,
      clock: () => new Date(),
      log: pino({ level: 'silent' }),
    });
    expect(manager.configured()).toBe(false);
    expect(manager.configured('routing')).toBe(false);
    let error: unknown;
    try {
      await manager.complete('chat', REQUEST, await salesCtx());
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(AppError);
    const err = error as AppError;
    expect(err.code).toBe('llm_not_configured');
    expect(err.statusCode).toBe(503);
    expect(err.message).toMatch(
      /no language model is configured for chat: set ANTHROPIC_API_KEY \(Claude\), MOONSHOT_API_KEY \(Kimi\) or OPENAI_API_KEY \(OpenAI\)/,
    );
  });

  it('names only the missing key when the configured models need one provider', async () => {
    const h = harness({
      env: { ANTHROPIC_API_KEY: '' },
      llm: { models: { chat: ['anthropic/claude-sonnet-5-5'] } },
    });
    // The harness passes both adapters; config says anthropic has no key.
    expect(h.manager.configured()).toBe(false);
    const { error } = await run(h, await salesCtx());
    expect((error as AppError).code).toBe('llm_not_configured');
    expect((error as AppError).message).toMatch(/set ANTHROPIC_API_KEY \(Claude\)$/);
    expect(h.primary.calls).toBe(0);
  });

  it('a provider with no key is skipped, the next one answers as primary', async () => {
    const h = harness({ env: { ANTHROPIC_API_KEY: '' } });
    expect(h.manager.configured()).toBe(true);
    const { result } = await run(h, await salesCtx());
    expect(h.primary.calls).toBe(0);
    expect(result).toMatchObject({ provider: 'moonshot', fallback_reason: null });
  });
});

describe('budgets', () => {
  /** Seeds spend for a department at `at` (one row, no user). */
  async function spend(department: Department, usd: number, at: string) {
    await db()
      .insertInto('llm_usage')
      .values({
        model: 'claude-sonnet-5-5',
        provider: 'anthropic',
        department,
        cost_usd: usd.toFixed(6),
        status: 'ok',
        purpose: 'chat',
        source: 'api',
        created_at: new Date(at),
      })
      .execute();
  }

  const budgets = (departments: Record<string, unknown>) => ({
    budgets: { billing_timezone: 'Asia/Singapore', departments },
  });

  it('month-to-date spend counts the month in the billing time zone', async () => {
    // 2025-04-30 17:00Z is 1 May 01:00 in Singapore: May's spend, not April's.
    await spend('finance', 1.5, '2025-04-30T15:59:59Z');
    await spend('finance', 2.25, '2025-04-30T16:00:00Z');
    await spend('finance', 4, '2025-05-31T15:59:59Z');
    await spend('finance', 8, '2025-05-31T16:00:00Z');
    const april = await monthSpend(
      db(),
      'finance',
      new Date('2025-04-15T00:00:00Z'),
      'Asia/Singapore',
    );
    expect(april).toEqual({ month: '2025-04', spentUsd: 1.5 });
    const may = await monthSpend(
      db(),
      'finance',
      new Date('2025-04-30T16:30:00Z'),
      'Asia/Singapore',
    );
    expect(may).toEqual({ month: '2025-05', spentUsd: 6.25 });
    const utcApril = await monthSpend(db(), 'finance', new Date('2025-04-30T16:30:00Z'), 'UTC');
    expect(utcApril).toEqual({ month: '2025-04', spentUsd: 3.75 });
  });

  it('at 80 %: exactly one warning a month, even under concurrent calls — audit row and a notification to each manager', async () => {
    const at = '2025-07-20T04:00:00Z';
    const manager = await newUser('sales_manager', 'sales');
    const otherManager = await newUser('sales_manager', 'sales');
    const inactiveManager = await newUser('sales_manager', 'sales', false);
    const executive = await newUser('executive', 'management');
    const rep = await newUser('sales_rep', 'sales');
    const financeManager = await newUser('finance_manager', 'finance');
    const admin = await newUser('admin', 'management');
    await spend('sales', 8.5, '2025-07-02T00:00:00Z');
    const h = harness({ at, llm: budgets({ sales: { monthly_usd: 10 } }) });
    const ctx: LlmCallContext = { userId: rep, department: 'sales', source: 'mobile' };
    const results = await Promise.all(Array.from({ length: 8 }, () => run(h, ctx)));
    expect(results.every((r) => r.result?.provider === 'anthropic')).toBe(true);
    await run(h, ctx);

    const alerts = await db()
      .selectFrom('budget_alerts')
      .selectAll()
      .where('department', '=', 'sales')
      .execute();
    expect(alerts.map((a) => [a.month, a.level])).toEqual([['2025-07', 'warning']]);
    const audit = await db()
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'llm.budget_warning')
      .where('department', '=', 'sales')
      .execute();
    expect(audit).toHaveLength(1);
    expect(audit[0]!.details).toMatchObject({ month: '2025-07', budget_usd: 10, level: 'warning' });
    expect(audit[0]!.user_id).toBe(rep);

    const notified = await db()
      .selectFrom('notifications')
      .selectAll()
      .where('kind', '=', 'budget_warning')
      .where(sql<boolean>`data->>'month' = '2025-07'`)
      .where(sql<boolean>`data->>'department' = 'sales'`)
      .execute();
    expect(notified.map((n) => n.user_id).sort()).toEqual(
      [manager, otherManager, executive].sort(),
    );
    for (const id of [inactiveManager, rep, financeManager, admin])
      expect(notified.map((n) => n.user_id)).not.toContain(id);
    expect(notified[0]).toMatchObject({ read_at: null });
    expect(notified[0]!.title).toMatch(/Sales has used 8\d% of its AI budget/);
    expect(notified[0]!.body).toMatch(
      /\$8\.\d\d of its \$10\.00 AI budget for 2025-07\. At 100% new requests are refused until 2025-08-01/,
    );

    // A fresh process (new manager, empty memory) does not warn again this month...
    const again = harness({ at, llm: budgets({ sales: { monthly_usd: 10 } }) });
    await run(again, ctx);
    expect(
      await db()
        .selectFrom('budget_alerts')
        .selectAll()
        .where('department', '=', 'sales')
        .execute(),
    ).toHaveLength(1);
    // ...but does next month.
    await spend('sales', 9, '2025-08-03T00:00:00Z');
    const august = harness({
      at: '2025-08-10T00:00:00Z',
      llm: budgets({ sales: { monthly_usd: 10 } }),
    });
    await run(august, ctx);
    const months = await db()
      .selectFrom('budget_alerts')
      .select(['month', 'level'])
      .where('department', '=', 'sales')
      .orderBy('month')
      .execute();
    expect(months).toEqual([
      { month: '2025-07', level: 'warning' },
      { month: '2025-08', level: 'warning' },
    ]);
  });

  it('the call that crosses 80 % raises the warning when it is charged', async () => {
    await newUser('marketing_manager', 'marketing');
    await spend('marketing', 0.0795, '2025-09-01T00:00:00Z');
    const h = harness({
      at: '2025-09-05T00:00:00Z',
      llm: budgets({ marketing: { monthly_usd: 0.1 } }),
    });
    const ctx: LlmCallContext = { userId: null, department: 'marketing', source: 'webhook' };
    // Before: 79.5 %, no warning. The call costs $0.007: 86.5 % after it.
    await run(h, ctx);
    const alerts = await db()
      .selectFrom('budget_alerts')
      .selectAll()
      .where('department', '=', 'marketing')
      .execute();
    expect(alerts.map((a) => [a.month, a.level])).toEqual([['2025-09', 'warning']]);
    expect(Number(alerts[0]!.spent_usd)).toBe(0.0865);
  });

  it('at 100 % with on_exceed refuse: budget_exceeded (402), no model is called', async () => {
    const financeManager = await newUser('finance_manager', 'finance');
    await spend('finance', 25, '2025-10-02T00:00:00Z');
    const h = harness({
      at: '2025-10-15T00:00:00Z',
      llm: budgets({ finance: { monthly_usd: 25 } }),
    });
    const ctx: LlmCallContext = {
      userId: await newUser('finance_viewer', 'finance'),
      department: 'finance',
      source: 'web',
    };
    const { error } = await run(h, ctx);
    expect(error).toBeInstanceOf(AppError);
    const err = error as AppError;
    expect(err.code).toBe('budget_exceeded');
    expect(err.statusCode).toBe(402);
    expect(err.message).toMatch(
      /the finance department has used its AI budget for 2025-10 \(\$25\.00 of \$25\.00\).*until 2025-11-01 \(Asia\/Singapore\)/,
    );
    expect(err.details).toMatchObject({
      department: 'finance',
      month: '2025-10',
      budget_usd: 25,
      resets_on: '2025-11-01',
    });
    expect(h.primary.calls + h.secondary.calls).toBe(0);
    expect(await usageOfUser(ctx.userId!)).toHaveLength(0);
    await run(h, ctx);
    // One "used up" alert to the managers, not one per refused call.
    const alerts = await db()
      .selectFrom('budget_alerts')
      .selectAll()
      .where('department', '=', 'finance')
      .where('month', '=', '2025-10')
      .execute();
    expect(alerts.map((a) => a.level)).toEqual(['exceeded']);
    const notes = await db()
      .selectFrom('notifications')
      .selectAll()
      .where('user_id', '=', financeManager)
      .where('kind', '=', 'budget_exceeded')
      .execute();
    expect(notes).toHaveLength(1);
    const audit = await db()
      .selectFrom('audit_log')
      .selectAll()
      .where('action', '=', 'llm.budget_exceeded')
      .where('department', '=', 'finance')
      .execute();
    expect(audit).toHaveLength(1);
  });

  it('at 100 % with on_exceed downgrade: the cheaper model answers, fallback_reason budget_downgrade', async () => {
    await spend('support', 30, '2025-11-02T00:00:00Z');
    const h = harness({
      at: '2025-11-20T00:00:00Z',
      llm: budgets({
        support: {
          monthly_usd: 30,
          on_exceed: 'downgrade',
          downgrade_to: 'moonshot/kimi-k2-0905-preview',
        },
      }),
    });
    const ctx: LlmCallContext = {
      userId: await newUser('support_agent', 'support'),
      department: 'support',
      source: 'mobile',
    };
    const { result, events } = await run(h, ctx);
    expect(h.primary.calls).toBe(0);
    expect(h.secondary.calls).toBe(1);
    expect(events[0]).toMatchObject({
      type: 'start',
      provider: 'moonshot',
      fallback_reason: 'budget_downgrade',
    });
    expect(result).toMatchObject({
      provider: 'moonshot',
      model: 'kimi-k2-0905-preview',
      fallback_reason: 'budget_downgrade',
      primary: { provider: 'anthropic', model: 'claude-sonnet-5-5' },
      cost_usd: 0.00185,
    });
    const rows = await usageOf(result!.call_id);
    expect(rows.map((r) => [r.provider, r.fallback_reason, r.department])).toEqual([
      ['moonshot', 'budget_downgrade', 'support'],
    ]);
    // Below the budget the department gets its usual models.
    const other = harness({
      at: '2025-12-20T00:00:00Z',
      llm: budgets({
        support: {
          monthly_usd: 30,
          on_exceed: 'downgrade',
          downgrade_to: 'moonshot/kimi-k2-0905-preview',
        },
      }),
    });
    expect((await run(other, ctx)).result).toMatchObject({
      provider: 'anthropic',
      fallback_reason: null,
    });
  });

  it('departments without a budget are never limited', async () => {
    await spend('management', 10_000, '2026-01-02T00:00:00Z');
    const h = harness({ at: '2026-01-10T00:00:00Z', llm: budgets({ sales: { monthly_usd: 1 } }) });
    const { result } = await run(h, { userId: null, department: 'management', source: 'system' });
    expect(result).toMatchObject({ provider: 'anthropic' });
  });
});
