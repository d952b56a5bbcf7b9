/**
 * A tool is the model-facing wrapper around a capability: a zod input schema (sent to the
 * model as JSON Schema; every field `.describe()`d), an effect, the permission it needs and
 * `execute`. Tools never check permissions, audit or ask for approval themselves: the
 * executor does that for every call (tool-executor.ts).
 */
import type { z } from 'zod';
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import type { ToolSpec } from '../llm/types.ts';
import type { Logger } from '../logging/logger.ts';

/**
 * `read`: looks things up, runs at once. `external`: acts in the world in the user's name
 * (sends mail, changes a calendar, posts to Teams, contacts a lead, bulk CRM changes) —
 * never runs until the user approves the exact arguments.
 */
export type ToolEffect = 'read' | 'external';

export interface ToolContext {
  /** The acting user (for schedules and webhooks: the owner the job runs as). */
  principal: Principal;
  sessionId: string | null;
  source: AuditSource;
  /** Aborted on cancel or time limit; long work must stop when it fires. */
  signal: AbortSignal;
  log: Logger;
}

export interface Tool<Input = unknown> {
  /** snake_case, unique across the registry. */
  name: string;
  description: string;
  inputSchema: z.ZodType<Input>;
  effect: ToolEffect;
  /** Permission from roles.yaml the acting user needs, checked at execution time. */
  permission: string;
  /** Overrides the executor's default time limit. */
  timeoutMs?: number;
  /** Returns JSON-serialisable data (or a string) for the model; throws for failures. */
  execute(input: Input, ctx: ToolContext): Promise<unknown>;
}

/** A tool call as the model made it. */
export interface ToolCall {
  id: string;
  name: string;
  input: Record<string, unknown>;
}

/** A file a tool produced (stored in `artifacts`), announced to the user as it is made. */
export interface ArtifactRef {
  id: string;
  name: string;
  /** The kind of file: pdf, pptx, docx, csv, xlsx, png, … */
  type: string;
  size_bytes: number | null;
}

const ARTIFACTS = Symbol('tool result with artifacts');

/** A tool's result plus the files it produced: `return withArtifacts(data, [ref])`. */
export interface ResultWithArtifacts {
  readonly [ARTIFACTS]: true;
  data: unknown;
  artifacts: ArtifactRef[];
}

export function withArtifacts(data: unknown, artifacts: ArtifactRef[]): ResultWithArtifacts {
  return { [ARTIFACTS]: true, data, artifacts };
}

export function isResultWithArtifacts(value: unknown): value is ResultWithArtifacts {
  return typeof value === 'object' && value !== null && ARTIFACTS in value;
}

/** What the model reads back; `output` is always text, size-capped. */
export type ToolOutcome =
  | { status: 'ok'; output: string; artifacts?: ArtifactRef[] }
  /** Expected failures (bad arguments, permission, timeout, tool error) as readable text. */
  | { status: 'error'; output: string }
  /** External effect: nothing ran; a pending action waits for the user's decision. */
  | { status: 'pending_approval'; approvalId: string; output: string };

export interface ToolExecutor {
  /** JSON-Schema specs of the named tools, for the model request. Unknown names throw. */
  specs(toolNames: readonly string[]): ToolSpec[];
  /** Validates, checks permission, applies limits, audits, and runs or parks the call. */
  execute(call: ToolCall, ctx: ToolContext, allowed: readonly string[]): Promise<ToolOutcome>;
}
