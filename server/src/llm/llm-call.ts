/**
 * What a model call takes and gives back: the caller's context (who pays), the events a
 * call streams and its final result. The manager (llm-manager.ts) produces them.
 */
import type { Department } from '@mezzofy/protocol';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { AttemptSummary } from './llm-errors.ts';
import type { ChatRequest, StreamEvent } from './types.ts';
import type { UsageRow } from './usage.repository.ts';

export type FallbackReason =
  | 'rate_limited'
  | 'overloaded'
  | 'server_error'
  | 'timeout'
  | 'connection'
  | 'circuit_open'
  | 'budget_downgrade';

/** A model request without the model: the manager picks it. */
export type LlmRequest = Omit<ChatRequest, 'model' | 'signal'>;

export interface LlmCallContext {
  /** Who asked; null for work no user started (a webhook). */
  userId: string | null;
  /**
   * Who pays. A user's own department, whichever agent answers; for work run by a schedule
   * or a webhook, the department that owns that schedule or webhook.
   */
  department: Department;
  source: AuditSource;
  sessionId?: string | null;
  /** Aborting cancels the upstream request; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * An answer that ends the turn (no tool calls) hands its llm_usage row here instead of
   * writing it, and the caller stores it in the statement that stores the answer: one
   * statement less per chat turn, and no wider window for losing the row than writing it
   * first. Failed and tool-calling attempts are written as they happen, and so is every
   * attempt while the department has a budget (its alerts read the row at once).
   */
  deferUsage?: (row: UsageRow) => void;
}

export interface AnsweredBy {
  provider: string;
  model: string;
  /** How people call the provider: "Claude", "Kimi". */
  provider_label: string;
  /** Why this is not the primary model; null when it is. */
  fallback_reason: FallbackReason | null;
  /** The model that would have answered (the first candidate), when fallback_reason is set. */
  primary: { provider: string; model: string; provider_label: string } | null;
}

export interface LlmResult extends AnsweredBy {
  call_id: string;
  usage: { input_tokens: number; output_tokens: number };
  /** This answer's cost; failed attempts before it are in llm_usage too. */
  cost_usd: number;
  finish_reason: Extract<StreamEvent, { type: 'finish' }>['reason'] | null;
  /** Every attempt of this call, in order (skipped open circuits included). */
  attempts: AttemptSummary[];
}

export type LlmEvent =
  | StreamEvent
  /** Once, before the answering model's first event. */
  | ({ type: 'start'; call_id: string } & AnsweredBy)
  /** Last event: the same value the generator returns. */
  | { type: 'result'; result: LlmResult };
