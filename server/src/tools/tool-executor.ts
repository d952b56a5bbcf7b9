/**
 * The one way a tool runs. For every call: the tool must be one the agent offers, the
 * arguments must validate, the acting user must hold the tool's permission now (not just
 * when the turn began); read tools then run under a time limit and a result cap, external
 * tools are parked for the user's approval (or run at once for an auto-approved role).
 * Every call leaves one `tool.call` audit row; every failure goes back to the model as text.
 */
import type { AuditEntry } from '../audit/audit.repository.ts';
import type { PendingActionRow } from '../db/schema.ts';
import type { ParkRequest } from './approvals/approvals.service.ts';
import { canonicalJson, canonicalValue, sha256Hex } from './canonical-json.ts';
import type { ToolCall, ToolContext, ToolExecutor, ToolOutcome } from './tool.ts';
import type { AnyTool, ToolRegistry } from './tool-registry.ts';
import { formatIssues, type RunLimits, runTool } from './tool-runner.ts';

/** Audit details keep at most this much of the arguments, as canonical JSON. */
const ARGS_SUMMARY_CHARS = 300;

/** What callers may add to a ToolContext so a parked action can resume its turn. */
export interface ExecutionContext extends ToolContext {
  /** The agent running the turn, stored with a pending action. */
  agent?: string | undefined;
  /** Opaque state the chat layer needs to continue the turn after the decision. */
  turnContext?: Record<string, unknown> | undefined;
}

export interface ToolExecutorDeps {
  registry: ToolRegistry;
  approvals: {
    park(request: ParkRequest): Promise<PendingActionRow>;
    runAutoApproved(request: ParkRequest): Promise<{ row: PendingActionRow; outcome: ToolOutcome }>;
  };
  limits: RunLimits & { autoApproveRoles: readonly string[] };
  /** Writes one audit row (outside a change's transaction: a read call changes nothing). */
  audit: (entry: AuditEntry) => Promise<void>;
  /** The user's permissions as they are now; without it, the principal's are used. */
  currentPermissions?: (userId: string) => Promise<ReadonlySet<string>>;
}

export function summarizeArguments(canonical: string): string {
  return canonical.length > ARGS_SUMMARY_CHARS
    ? `${canonical.slice(0, ARGS_SUMMARY_CHARS)}…(${canonical.length} chars)`
    : canonical;
}

const WAITING =
  "waiting for the user's approval; nothing has been done yet. Tell the user what you asked to do and that it needs their approval. Do not retry this call.";

export function createToolExecutor(deps: ToolExecutorDeps): ToolExecutor {
  const { registry, limits } = deps;

  async function audit(ctx: ToolContext, details: Record<string, unknown>): Promise<void> {
    try {
      await deps.audit({
        userId: ctx.principal.id,
        department: ctx.principal.department,
        action: 'tool.call',
        source: ctx.source,
        details,
      });
    } catch (err) {
      ctx.log.error({ err, tool: details.tool }, 'tool call audit failed');
      throw err;
    }
  }

  async function refuse(
    ctx: ToolContext,
    base: Record<string, unknown>,
    reason: string,
    output: string,
  ): Promise<ToolOutcome> {
    await audit(ctx, { ...base, status: 'error', reason });
    return { status: 'error', output };
  }

  async function mayUse(tool: AnyTool, ctx: ToolContext): Promise<boolean> {
    if (!ctx.principal.permissions.has(tool.permission)) return false;
    if (!deps.currentPermissions) return true;
    return (await deps.currentPermissions(ctx.principal.id)).has(tool.permission);
  }

  return {
    specs(toolNames) {
      return toolNames.map((name) => registry.spec(name));
    },

    async execute(call: ToolCall, ctx: ExecutionContext, allowed): Promise<ToolOutcome> {
      const started = performance.now();
      const name = String(call.name).slice(0, 100);
      const tool = registry.get(name);
      const base: Record<string, unknown> = {
        tool: name,
        tool_call_id: String(call.id).slice(0, 200),
        ...(ctx.sessionId ? { session_id: ctx.sessionId } : {}),
        ...(ctx.agent ? { agent: ctx.agent } : {}),
      };
      if (!tool || !allowed.includes(name)) {
        return refuse(
          ctx,
          base,
          tool ? 'not_allowed' : 'unknown_tool',
          `there is no tool named "${name}" here; use only the tools you were given: ${allowed.join(', ') || '(none)'}`,
        );
      }
      base.effect = tool.effect;

      const parsed = tool.inputSchema.safeParse(call.input ?? {});
      if (!parsed.success) {
        return refuse(
          ctx,
          base,
          'invalid_arguments',
          `the arguments for ${tool.name} are not valid; fix them and call again:\n${formatIssues(parsed.error)}`,
        );
      }
      const canonical = canonicalJson(parsed.data);
      base.args_sha256 = sha256Hex(canonical);
      base.args_summary = summarizeArguments(canonical);

      if (!(await mayUse(tool, ctx))) {
        return refuse(
          ctx,
          base,
          'forbidden',
          `you may not use ${tool.name}: the user's role lacks the ${tool.permission} permission. Tell the user instead of retrying.`,
        );
      }

      if (tool.effect === 'external') {
        const request: ParkRequest = {
          principal: ctx.principal,
          tool,
          toolCallId: base.tool_call_id as string,
          sessionId: ctx.sessionId,
          agent: ctx.agent ?? null,
          source: ctx.source,
          canonicalArguments: canonicalValue(parsed.data),
          argumentsSha256: base.args_sha256 as string,
          turnContext: ctx.turnContext ?? null,
          auditDetails: base,
        };
        if (limits.autoApproveRoles.includes(ctx.principal.role)) {
          const { outcome } = await deps.approvals.runAutoApproved(request);
          return outcome;
        }
        const action = await deps.approvals.park(request);
        return {
          status: 'pending_approval',
          approvalId: action.id,
          output: `${tool.name}: ${WAITING} (approval id ${action.id})`,
        };
      }

      const outcome = await runTool(tool, parsed.data, ctx, limits);
      await audit(ctx, {
        ...base,
        status: outcome.status,
        duration_ms: Math.round(performance.now() - started),
        ...(outcome.status === 'error' ? { error: outcome.output.slice(0, 300) } : {}),
      });
      return outcome;
    },
  };
}
