/**
 * The one way the server calls a language model. For a purpose (chat, vision, routing, long
 * documents) it tries the configured models in order: each candidate is retried on
 * retryable errors with backoff (retry-after honoured up to a cap, beyond which it fails
 * over at once), an attempt with no event within first_byte_timeout_ms (a request asked
 * without streaming: with no answer within response_timeout_ms, and then the next candidate
 * is tried at once) is aborted as a timeout, and a candidate whose circuit is open is
 * skipped. 400/401/403 end the call at once (our bug or our key). A failure after the first
 * streamed event ends the turn as failed; it is never restarted silently. Every attempt
 * writes an llm_usage row, charged to the caller's department, and budgets are checked
 * before each call.
 *
 * `stream()` yields the provider's StreamEvents between a `start` event (which model
 * answers, and why it is not the primary) and a final `result` event; the generator's
 * return value is the same result.
 */
import { randomUUID } from 'node:crypto';
import type { Database } from '../db/database.ts';
import type { Clock } from '../infra/clock.ts';
import type { Logger } from '../logging/logger.ts';
import { budgetExceeded, createBudgetService } from './budget.service.ts';
import { BreakerRegistry, type BreakerState, type Permit } from './circuit-breaker.ts';
import type {
  AnsweredBy,
  FallbackReason,
  LlmCallContext,
  LlmEvent,
  LlmRequest,
  LlmResult,
} from './llm-call.ts';
import { type LlmConfig, type ModelRef, refKey } from './llm-config.ts';
import {
  type AttemptSummary,
  notConfigured,
  rejected,
  turnFailed,
  unavailable,
} from './llm-errors.ts';
import { costUsd, priceOf, usdText } from './pricing.ts';
import { abortableSleep, decideRetry } from './retry.ts';
import { closeQuietly, toProviderError, within } from './stream-guards.ts';
import {
  type ChatModelProvider,
  type ModelPurpose,
  ProviderError,
  type ProviderErrorKind,
  type StreamEvent,
} from './types.ts';
import { insertUsage, type UsageRow, type UsageStatus } from './usage.repository.ts';

export type {
  AnsweredBy,
  FallbackReason,
  LlmCallContext,
  LlmEvent,
  LlmRequest,
  LlmResult,
} from './llm-call.ts';

const FALLBACK_OF: Partial<Record<ProviderErrorKind, FallbackReason>> = {
  rate_limited: 'rate_limited',
  overloaded: 'overloaded',
  server: 'server_error',
  timeout: 'timeout',
  connection: 'connection',
};

export interface LlmManagerDeps {
  /** The `llm` config section. */
  config: LlmConfig;
  /** Adapters by provider name (config name); candidates without one are skipped. */
  providers: ReadonlyMap<string, ChatModelProvider>;
  database: Database;
  clock: Clock;
  log: Logger;
  /** Backoff waits (tests pass one that only advances their clock). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Jitter source, 0 ≤ x < 1. */
  random?: () => number;
}

export type LlmManager = ReturnType<typeof createLlmManager>;

type AttemptOutcome = { ok: true; result: LlmResult } | { ok: false; error: ProviderError };

export function createLlmManager(deps: LlmManagerDeps) {
  const { config, providers, database, clock, log } = deps;
  const sleep = deps.sleep ?? abortableSleep;
  const random = deps.random ?? Math.random;
  const now = () => clock().getTime();
  const breakers = new BreakerRegistry(
    {
      failures: config.circuit_breaker.failures,
      windowMs: config.circuit_breaker.window_s * 1000,
      cooldownMs: config.circuit_breaker.cooldown_s * 1000,
      probeLeaseMs:
        Math.max(config.first_byte_timeout_ms, config.response_timeout_ms) +
        config.circuit_breaker.cooldown_s * 1000,
    },
    now,
  );
  const budget = createBudgetService({ config, database, clock, log });

  const usable = (ref: ModelRef) =>
    config.providers[ref.provider]?.enabled === true && providers.has(ref.provider);
  const label = (provider: string) => config.providers[provider]?.label ?? provider;

  function candidates(purpose: ModelPurpose): ModelRef[] {
    return config.models[purpose].filter(usable);
  }

  async function record(row: UsageRow) {
    try {
      await insertUsage(database.db, row);
    } catch (err) {
      log.error({ err, call_id: row.callId }, 'llm_usage row not written');
    }
  }

  interface AttemptInput {
    purpose: ModelPurpose;
    request: LlmRequest;
    ctx: LlmCallContext;
    ref: ModelRef;
    permit: Permit;
    callId: string;
    attempt: number;
    fallbackReason: FallbackReason | null;
    primary: ModelRef;
    attempts: AttemptSummary[];
  }

  /** One call to one model. Yields its events once committed (first event arrived). */
  async function* runAttempt(a: AttemptInput): AsyncGenerator<LlmEvent, AttemptOutcome> {
    const { ref, ctx, permit } = a;
    // A whole answer (not a stream): its own timeout, and no first byte before the last.
    const whole = a.request.stream === false;
    const provider = providers.get(ref.provider)!;
    const controller = new AbortController();
    const onCallerAbort = () => controller.abort(ctx.signal?.reason);
    ctx.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const createdAt = clock();
    const started = performance.now();
    let ttfb: number | null = null;
    let inputTokens = 0;
    let outputTokens = 0;
    let sawUsage = false;
    let finish: LlmResult['finish_reason'] = null;
    let recorded = false;
    let iterator: AsyncIterator<StreamEvent> | undefined;

    const cost = () => costUsd(priceOf(config, ref), { inputTokens, outputTokens });
    const rowOf = (status: UsageStatus, err?: ProviderError): UsageRow => ({
      provider: ref.provider,
      model: ref.model,
      purpose: a.purpose,
      department: ctx.department,
      userId: ctx.userId,
      source: ctx.source,
      sessionId: ctx.sessionId ?? null,
      callId: a.callId,
      attempt: a.attempt,
      status,
      errorKind: err?.kind ?? null,
      errorMessage: err?.message ?? null,
      fallbackReason: a.fallbackReason,
      inputTokens: sawUsage ? inputTokens : status === 'ok' ? 0 : null,
      outputTokens: sawUsage ? outputTokens : status === 'ok' ? 0 : null,
      costUsd: usdText(cost()),
      latencyMs: performance.now() - started,
      ttfbMs: ttfb,
      createdAt,
    });
    const write = async (status: UsageStatus, err?: ProviderError) => {
      if (recorded) return;
      recorded = true;
      await record(rowOf(status, err));
    };
    const track = (event: StreamEvent) => {
      if (event.type === 'usage') {
        // Adapters may report usage more than once (input first, output last): keep the most.
        inputTokens = Math.max(inputTokens, event.inputTokens);
        outputTokens = Math.max(outputTokens, event.outputTokens);
        sawUsage = true;
      } else if (event.type === 'finish') finish = event.reason;
    };

    try {
      let next: IteratorResult<StreamEvent>;
      try {
        iterator = provider
          .stream({ ...a.request, model: ref.model, signal: controller.signal })
          [Symbol.asyncIterator]();
        next = await within(
          iterator.next(),
          whole ? config.response_timeout_ms : config.first_byte_timeout_ms,
          ref.provider,
          ctx.signal,
          whole ? 'response timeout' : 'first-byte timeout',
        );
      } catch (raw) {
        const err = toProviderError(raw, ref.provider, ctx.signal);
        controller.abort();
        closeQuietly(iterator);
        await write(err.kind === 'aborted' ? 'aborted' : 'error', err);
        if (err.retryable) permit.failure();
        else permit.release();
        if (err.kind === 'aborted') throw ctx.signal?.reason ?? err;
        return { ok: false, error: err };
      }

      ttfb = whole ? null : performance.now() - started;
      permit.success();
      const answeredBy: AnsweredBy = {
        provider: ref.provider,
        model: ref.model,
        provider_label: label(ref.provider),
        fallback_reason: a.fallbackReason,
        primary: a.fallbackReason
          ? { ...a.primary, provider_label: label(a.primary.provider) }
          : null,
      };
      yield { type: 'start', call_id: a.callId, ...answeredBy };
      while (!next.done) {
        track(next.value);
        yield next.value;
        try {
          next = await within(iterator.next(), null, ref.provider, ctx.signal);
        } catch (raw) {
          const err = toProviderError(raw, ref.provider, ctx.signal);
          controller.abort();
          closeQuietly(iterator);
          await write(err.kind === 'aborted' ? 'aborted' : 'error', err);
          if (err.kind === 'aborted') throw ctx.signal?.reason ?? err;
          if (err.retryable) breakers.get(refKey(ref)).recordFailure();
          a.attempts.push({ ...ref, outcome: err.kind });
          log.warn(
            { call_id: a.callId, provider: ref.provider, model: ref.model, kind: err.kind },
            'model answer broke off mid-stream; turn failed',
          );
          throw turnFailed(config, ref, err, a.callId);
        }
      }
      if (
        ctx.deferUsage &&
        finish !== 'tool-calls' &&
        !config.budgets.departments[ctx.department]
      ) {
        recorded = true;
        ctx.deferUsage(rowOf('ok'));
      } else await write('ok');
      a.attempts.push({ ...ref, outcome: 'ok' });
      return {
        ok: true,
        result: {
          call_id: a.callId,
          ...answeredBy,
          usage: { input_tokens: inputTokens, output_tokens: outputTokens },
          cost_usd: cost(),
          finish_reason: finish,
          attempts: a.attempts,
        },
      };
    } finally {
      ctx.signal?.removeEventListener('abort', onCallerAbort);
      if (!recorded) {
        // The consumer stopped reading (break/return) mid-answer.
        controller.abort();
        closeQuietly(iterator);
        permit.release();
        await write(
          'aborted',
          new ProviderError('aborted', 'the caller stopped reading the answer', {
            provider: ref.provider,
          }),
        );
      }
    }
  }

  async function* stream(
    purpose: ModelPurpose,
    request: LlmRequest,
    ctx: LlmCallContext,
  ): AsyncGenerator<LlmEvent, LlmResult> {
    const all = config.models[purpose];
    let list = candidates(purpose);
    if (list.length === 0) {
      const missing = all
        .filter((r) => config.providers[r.provider]?.enabled && !providers.has(r.provider))
        .map((r) => r.provider);
      throw notConfigured(config, purpose, [...new Set(missing)]);
    }
    const primary = list[0]!;
    let reason: FallbackReason | null = null;
    const decision = await budget.beforeCall(ctx);
    if (decision.action === 'downgrade') {
      if (!usable(decision.to)) {
        throw budgetExceeded(
          {
            department: ctx.department,
            month: decision.month,
            spentUsd: decision.spentUsd,
            budgetUsd: decision.budgetUsd,
            percent: 100,
            level: 'exceeded',
          },
          config.budgets.billing_timezone,
          ` and its cheaper model ${refKey(decision.to)} is not available`,
        );
      }
      list = [decision.to];
      reason = 'budget_downgrade';
    }

    const callId = randomUUID();
    const attempts: AttemptSummary[] = [];
    let attemptNo = 0;
    let last: ProviderError | undefined;
    for (const [index, ref] of list.entries()) {
      const breaker = breakers.get(refKey(ref));
      let lastHere: ProviderError | undefined;
      for (let tryNo = 1; ; tryNo++) {
        const permit = breaker.tryAcquire();
        if (!permit) {
          attempts.push({ ...ref, outcome: 'circuit_open' });
          reason ??= (lastHere && FALLBACK_OF[lastHere.kind]) || 'circuit_open';
          break;
        }
        attemptNo += 1;
        const outcome: AttemptOutcome = yield* runAttempt({
          purpose,
          request,
          ctx,
          ref,
          permit,
          callId,
          attempt: attemptNo,
          fallbackReason: index === 0 && reason !== 'budget_downgrade' ? null : reason,
          primary,
          attempts,
        });
        if (outcome.ok) {
          try {
            await budget.afterCall(ctx);
          } catch (err) {
            log.error({ err, call_id: callId }, 'budget check after the call failed');
          }
          yield { type: 'result', result: outcome.result };
          return outcome.result;
        }
        const err: ProviderError = outcome.error;
        last = lastHere = err;
        attempts.push({ ...ref, outcome: err.kind });
        // A whole answer that timed out has used its response_timeout_ms: trying the same
        // model again would leave the next one no time within the turn's limit.
        const next =
          err.kind === 'timeout' && request.stream === false
            ? ({ action: 'failover' } as const)
            : decideRetry(err, tryNo, config.retry, random);
        if (next.action === 'fail') {
          log.error(
            { call_id: callId, provider: ref.provider, model: ref.model, kind: err.kind },
            'model call refused; not retried',
          );
          throw rejected(config, ref, err, callId);
        }
        if (next.action === 'failover') {
          reason ??= FALLBACK_OF[err.kind] ?? 'server_error';
          log.warn(
            { call_id: callId, provider: ref.provider, model: ref.model, kind: err.kind },
            'model unavailable; failing over',
          );
          break;
        }
        await sleep(next.delayMs, ctx.signal);
      }
    }
    const waits = list.map((r) => breakers.get(refKey(r)).retryInMs()).filter((ms) => ms > 0);
    const retryInS =
      waits.length === list.length ? Math.max(1, Math.ceil(Math.min(...waits) / 1000)) : null;
    throw unavailable(purpose, attempts, retryInS, callId, last);
  }

  return {
    /** Whether `purpose` (default chat) has a model to call. */
    configured(purpose: ModelPurpose = 'chat'): boolean {
      return candidates(purpose).length > 0;
    },
    /** The models `purpose` would try, in order. */
    candidates,
    stream,
    /** Runs a call to the end: the text, tool calls and result (routing, short tasks). */
    async complete(purpose: ModelPurpose, request: LlmRequest, ctx: LlmCallContext) {
      let text = '';
      const toolCalls: Extract<StreamEvent, { type: 'tool-call' }>[] = [];
      const it = stream(purpose, request, ctx);
      for (;;) {
        const step = await it.next();
        if (step.done) return { text, toolCalls, result: step.value };
        if (step.value.type === 'text-delta') text += step.value.text;
        else if (step.value.type === 'tool-call') toolCalls.push(step.value);
      }
    },
    breakerStates(): Record<string, BreakerState> {
      return breakers.states();
    },
    budget,
  };
}
