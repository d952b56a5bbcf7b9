/**
 * What a department agent is and what one turn of it streams. The base loop
 * (base-agent.ts) runs any AgentDefinition: system prompt from the agent's instructions,
 * its skills' instructions, the brand/knowledge context and the user's local date and time;
 * then the model ⇄ tools loop with a step limit, a time limit and cancellation.
 */
import type { Department } from '@mezzofy/protocol';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import type { AnsweredBy, LlmCallContext, LlmResult } from '../llm/llm-call.ts';
import type { ChatMessage } from '../llm/types.ts';
import type { ArtifactRef } from '../tools/tool.ts';

export const AGENT_NAMES = ['finance', 'sales', 'marketing', 'support', 'management'] as const;
export type AgentName = (typeof AGENT_NAMES)[number];

export interface AgentDefinition {
  name: AgentName;
  department: Department;
  /** Shown in the app's agent picker. */
  title: string;
  description: string;
  /** The agent's own system instructions. */
  instructions: string;
  /** Skill names (skills/available/<name>.yaml) this agent uses. */
  skills: readonly string[];
  /** Tool names this agent may offer to the model; exactly these are sent. */
  tools: readonly string[];
  /** Keywords (en, zh, ms) for the router's fast path. */
  keywords: readonly string[];
}

export interface TurnInput {
  principal: Principal;
  agent: AgentName;
  sessionId: string | null;
  /** Earlier turns, already fitted to the context budget. */
  history: ChatMessage[];
  /** This turn's user message (text, images, extracted documents). */
  message: ChatMessage;
  source: AuditSource;
  /** Cancel: aborts the upstream model request; no tool starts after it fires. */
  signal: AbortSignal;
  /** The usage row of the answer that ends the turn, for its caller to store (LlmCallContext). */
  deferUsage?: LlmCallContext['deferUsage'];
  /**
   * false: nobody reads the turn as it is written (REST), so the model is asked for whole
   * answers, not streams. The events are the same. Default true.
   */
  stream?: boolean;
}

export type TurnFinish = 'stop' | 'awaiting_approval' | 'step_limit' | 'time_limit' | 'cancelled';

/** Streamed by a turn, in order; the app renders them as they come. */
export type AgentEvent =
  | { type: 'status'; text: string }
  | ({ type: 'model-start' } & AnsweredBy)
  | { type: 'text-delta'; text: string }
  | { type: 'tool-call-start'; id: string; name: string; input: Record<string, unknown> }
  | {
      type: 'tool-call-end';
      id: string;
      name: string;
      status: 'ok' | 'error' | 'pending_approval';
      approval_id?: string;
    }
  /** A file a tool made in this turn (a report, a deck, a spreadsheet). */
  | { type: 'artifact-created'; tool_call_id: string; artifact: ArtifactRef }
  | {
      type: 'message-end';
      finish: TurnFinish;
      /** The full assistant text of the turn. */
      text: string;
      /** The last model call's provider/model/fallback_reason (null if no model answered). */
      answered_by: AnsweredBy | null;
      usage: { input_tokens: number; output_tokens: number; cost_usd: number };
      /** Messages to persist for this turn (assistant text, tool calls and results). */
      transcript: ChatMessage[];
      calls: LlmResult[];
    };

export interface AgentRunner {
  run(input: TurnInput): AsyncGenerator<AgentEvent, void, undefined>;
}
