/**
 * What a model call can end in, as AppErrors the API answers with: not configured (503
 * llm_not_configured, naming what to set), refused by the provider for a reason retrying
 * cannot fix (400/401/403: our bug or our key), every candidate unavailable, or an answer
 * that broke off after it had started (the turn failed; nothing is restarted silently).
 */
import type { ErrorCode } from '@mezzofy/protocol';
import { AppError } from '../errors.ts';
import { type LlmConfig, type ModelRef, refKey } from './llm-config.ts';
import type { ModelPurpose, ProviderError } from './types.ts';

export type LlmFailure = 'not_configured' | 'rejected' | 'unavailable' | 'turn_failed';

export class LlmError extends AppError {
  override name = 'LlmError';
  readonly reason: LlmFailure;
  /** The provider error that decided it, if one did. */
  readonly providerError: ProviderError | undefined;

  constructor(
    code: ErrorCode,
    reason: LlmFailure,
    message: string,
    options: {
      details?: Record<string, unknown>;
      cause?: ProviderError;
      headers?: Record<string, string>;
    } = {},
  ) {
    super(code, message, {
      details: { reason, ...options.details },
      cause: options.cause,
      headers: options.headers ?? {},
    });
    this.reason = reason;
    this.providerError = options.cause;
  }
}

const or = (items: string[]) =>
  items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`;

/** Says what to set: the key env vars of the providers the purpose's models need. */
export function notConfigured(
  config: LlmConfig,
  purpose: ModelPurpose,
  missingAdapters: string[] = [],
): LlmError {
  const refs = config.models[purpose];
  let hint: string;
  if (refs.length === 0) {
    hint = `llm.models.${purpose} is empty; list at least one "provider/model"`;
  } else if (missingAdapters.length) {
    hint = `no client for provider(s) ${missingAdapters.join(', ')} in this build`;
  } else {
    const needs = [...new Set(refs.map((r) => r.provider))]
      .map((name) => config.providers[name])
      .filter((p) => p !== undefined && !p.enabled)
      .map((p) => `${p!.key_env} (${p!.label})`);
    hint = `set ${or(needs)}${
      config.models_configured[purpose]
        ? ''
        : ', or point OPENAI_BASE_URL at an OpenAI-compatible server such as Ollama'
    }`;
  }
  return new LlmError(
    'llm_not_configured',
    'not_configured',
    `no language model is configured for ${purpose}: ${hint}`,
    { details: { purpose, models: refs.map(refKey) } },
  );
}

/** 400/401/403 and unreadable answers: no retry, no failover, and a message that says why. */
export function rejected(
  config: LlmConfig,
  ref: ModelRef,
  err: ProviderError,
  callId: string,
): LlmError {
  const provider = config.providers[ref.provider];
  const label = provider?.label ?? ref.provider;
  const status = err.status ? ` (HTTP ${err.status})` : '';
  const message =
    err.kind === 'auth'
      ? `${label} refused our API key for ${refKey(ref)}${status}: check ${provider?.key_env ?? 'the API key'} — ${err.message}`
      : err.kind === 'bad_request'
        ? `${refKey(ref)} rejected the request as invalid${status}: ${err.message} (a server bug, not retried)`
        : `${refKey(ref)} answered something the server could not read: ${err.message}`;
  return new LlmError('llm_unavailable', 'rejected', message, {
    cause: err,
    details: {
      call_id: callId,
      provider: ref.provider,
      model: ref.model,
      kind: err.kind,
      status: err.status,
    },
  });
}

export interface AttemptSummary {
  provider: string;
  model: string;
  /** 'ok', the ProviderErrorKind of a failed attempt, or 'circuit_open' (skipped, not called). */
  outcome: string;
}

export function unavailable(
  purpose: ModelPurpose,
  attempts: AttemptSummary[],
  retryInS: number | null,
  callId: string,
  last?: ProviderError,
): LlmError {
  const byModel = new Map<string, string[]>();
  for (const a of attempts) {
    const key = `${a.provider}/${a.model}`;
    byModel.set(key, [...(byModel.get(key) ?? []), a.outcome.replace('_', ' ')]);
  }
  const summary = [...byModel].map(([k, v]) => `${k}: ${v.join(', ')}`).join('; ');
  const retry = retryInS ? `; try again in ${retryInS} s` : '; try again shortly';
  return new LlmError(
    'llm_unavailable',
    'unavailable',
    `no model could answer (${purpose}) — ${summary}${retry}`,
    {
      ...(last ? { cause: last } : {}),
      details: { call_id: callId, purpose, attempts },
      ...(retryInS ? { headers: { 'retry-after': String(retryInS) } } : {}),
    },
  );
}

export function turnFailed(
  config: LlmConfig,
  ref: ModelRef,
  err: ProviderError,
  callId: string,
): LlmError {
  const label = config.providers[ref.provider]?.label ?? ref.provider;
  return new LlmError(
    'llm_unavailable',
    'turn_failed',
    `the answer from ${label} (${refKey(ref)}) broke off after it had started (${err.kind}: ${err.message}); the turn failed and was not restarted — ask again`,
    {
      cause: err,
      details: { call_id: callId, provider: ref.provider, model: ref.model, kind: err.kind },
    },
  );
}
