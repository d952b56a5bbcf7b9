/**
 * The life of an external tool call: parked as a pending action (by the executor), decided
 * by its own user by id (approve or reject, exactly once, before it expires), then run with
 * the exact arguments that were approved. Permission and arguments are checked again at
 * approval time. Each decision is audited with the approver; `onDecided` hands the outcome
 * to the chat layer so the agent's turn can continue.
 */

import type { ApprovalListQuery, ApprovalView } from '@mezzofy/protocol';
import { type AuditSource, writeAudit } from '../../audit/audit.repository.ts';
import type { Principal } from '../../auth/principal.ts';
import type { Database } from '../../db/database.ts';
import type { Executor } from '../../db/executor.ts';
import { toPage } from '../../db/pagination.ts';
import type { PendingActionRow } from '../../db/schema.ts';
import { AppError, notFound } from '../../errors.ts';
import type { Clock } from '../../infra/clock.ts';
import type { Logger } from '../../logging/logger.ts';
import { canonicalJson, sha256Hex } from '../canonical-json.ts';
import type { ToolOutcome } from '../tool.ts';
import type { AnyTool, ToolRegistry } from '../tool-registry.ts';
import { type RunLimits, runTool } from '../tool-runner.ts';
import {
  claimPendingAction,
  expirePendingActions,
  findPendingAction,
  finishPendingAction,
  insertPendingAction,
  listPendingActions,
} from './approvals.repository.ts';

/** Called once an action is decided and, if approved, run: the chat layer resumes the turn. */
export type DecidedHandler = (
  action: PendingActionRow,
  outcome: ToolOutcome,
) => Promise<void> | void;

/** The acting user's permissions as they are now (role changes take effect at once). */
export type CurrentPermissions = (userId: string) => Promise<ReadonlySet<string>>;

export interface ApprovalsServiceDeps {
  database: Database;
  registry: ToolRegistry;
  clock: Clock;
  log: Logger;
  limits: RunLimits & { approvalTtlSeconds: number };
  currentPermissions: CurrentPermissions;
  onDecided?: DecidedHandler;
}

export interface DecisionMeta {
  source: AuditSource;
  ip?: string | null;
}

/** What the executor parks: the validated call, canonical arguments and their hash. */
export interface ParkRequest {
  principal: Principal;
  tool: AnyTool;
  toolCallId: string | null;
  sessionId: string | null;
  agent: string | null;
  source: AuditSource;
  canonicalArguments: unknown;
  argumentsSha256: string;
  turnContext: Record<string, unknown> | null;
  /** The bounded `tool.call` audit details the executor built. */
  auditDetails: Record<string, unknown>;
}

export type ApprovalsService = ReturnType<typeof createApprovalsService>;

export function toApprovalView(row: PendingActionRow): ApprovalView {
  return {
    id: row.id,
    tool: row.tool,
    arguments: row.arguments,
    arguments_sha256: row.arguments_sha256,
    status: row.status as ApprovalView['status'],
    session_id: row.session_id,
    agent: row.agent,
    created_at: row.created_at.toISOString(),
    expires_at: row.expires_at.toISOString(),
    decided_at: row.decided_at?.toISOString() ?? null,
    decided_by: row.decided_by,
    result: row.result,
  };
}

const REJECTED_OUTPUT =
  'the user rejected this action; it was not carried out. Do not retry it unless the user asks again.';

export function createApprovalsService(deps: ApprovalsServiceDeps) {
  const { database, registry, clock, log, limits } = deps;
  const { db } = database;
  let onDecided: DecidedHandler | undefined = deps.onDecided;

  async function notify(action: PendingActionRow, outcome: ToolOutcome) {
    if (!onDecided) return;
    try {
      await onDecided(action, outcome);
    } catch (err) {
      log.error({ err, approvalId: action.id }, 'resuming the turn after a decision failed');
    }
  }

  /** Marks one overdue action expired (audited) and returns the 409 to throw. */
  async function expireOne(row: PendingActionRow, now: Date): Promise<AppError> {
    await db.transaction().execute(async (trx) => {
      const expired = await expirePendingActions(trx, now, { id: row.id });
      if (expired.length)
        await writeAudit(trx, {
          userId: row.user_id,
          department: null,
          action: 'tool.expired',
          source: 'system',
          details: { tool: row.tool, approval_id: row.id },
        });
    });
    return expiredError(row);
  }

  const expiredError = (row: PendingActionRow) =>
    new AppError(
      'approval_expired',
      `this approval expired at ${row.expires_at.toISOString()}; ask the assistant again`,
      { details: { approval_id: row.id } },
    );

  /** Why a claim failed: 404 for someone else's (or no) action, else 409. */
  async function claimFailure(principal: Principal, id: string): Promise<AppError> {
    const row = await findPendingAction(db, principal.id, id);
    if (!row) return notFound('approval');
    const now = clock();
    if (row.status === 'pending' && row.expires_at <= now) return expireOne(row, now);
    if (row.status === 'expired') return expiredError(row);
    return new AppError('conflict', `this approval was already decided (${row.status})`, {
      details: { approval_id: row.id, status: row.status },
    });
  }

  /**
   * Runs an approved action: the tool must still exist, the user must still hold its
   * permission, the stored arguments must still validate and hash to what was approved.
   * Returns the outcome, and the refusal to answer with when it never ran.
   */
  async function runApproved(
    row: PendingActionRow,
    actor: Principal,
    meta: DecisionMeta,
    auto: boolean,
  ): Promise<{ row: PendingActionRow; outcome: ToolOutcome; refusal?: AppError }> {
    let refusal: AppError | undefined;
    let input: unknown;
    const tool = registry.get(row.tool);
    if (!tool) {
      refusal = new AppError('conflict', `the tool ${row.tool} is no longer available`);
    } else {
      const current = await deps.currentPermissions(row.user_id);
      if (!current.has(tool.permission) || !actor.permissions.has(tool.permission)) {
        refusal = new AppError(
          'forbidden',
          `you may not use ${tool.name} any more (needs ${tool.permission}); nothing was sent`,
        );
      } else {
        const parsed = tool.inputSchema.safeParse(row.arguments);
        const storedHash = sha256Hex(canonicalJson(row.arguments));
        if (!parsed.success) {
          refusal = new AppError('conflict', 'the stored arguments are no longer valid');
        } else if (
          storedHash !== row.arguments_sha256 ||
          sha256Hex(canonicalJson(parsed.data)) !== row.arguments_sha256
        ) {
          refusal = new AppError(
            'conflict',
            'the arguments differ from the ones approved; ask for a new approval',
          );
        } else {
          input = parsed.data;
        }
      }
    }

    const outcome: ToolOutcome = refusal
      ? { status: 'error', output: `${row.tool} was not run: ${refusal.message}` }
      : await runTool(
          tool!,
          input,
          {
            principal: actor,
            sessionId: row.session_id,
            source: meta.source,
            signal: new AbortController().signal,
            log,
            approvalId: row.id,
          },
          limits,
        );

    const finished = await db.transaction().execute(async (trx) => {
      const done = await finishPendingAction(
        trx,
        row.id,
        outcome.status === 'ok' ? 'executed' : 'failed',
        { status: outcome.status, output: outcome.output },
      );
      await writeAudit(trx, {
        userId: row.user_id,
        department: actor.department,
        action: 'tool.executed',
        source: meta.source,
        details: {
          tool: row.tool,
          approval_id: row.id,
          args_sha256: row.arguments_sha256,
          status: outcome.status,
          approved_by: auto ? null : actor.id,
          auto_approved: auto,
          ...(refusal ? { refused: refusal.code } : {}),
        },
        ip: meta.ip ?? null,
      });
      return done ?? row;
    });
    return refusal ? { row: finished, outcome, refusal } : { row: finished, outcome };
  }

  /** The pending action of a call and its `tool.call` audit row, in the caller's transaction. */
  async function recordCall(
    trx: Executor,
    request: ParkRequest,
    status: 'pending' | 'approved',
    now: Date,
  ): Promise<PendingActionRow> {
    const row = await insertPendingAction(trx, {
      userId: request.principal.id,
      sessionId: request.sessionId,
      agent: request.agent,
      tool: request.tool.name,
      arguments: request.canonicalArguments,
      argumentsSha256: request.argumentsSha256,
      status,
      source: request.source,
      createdAt: now,
      expiresAt: new Date(now.getTime() + limits.approvalTtlSeconds * 1000),
      toolCallId: request.toolCallId,
      turnContext: request.turnContext,
    });
    await writeAudit(trx, {
      userId: request.principal.id,
      department: request.principal.department,
      action: 'tool.call',
      source: request.source,
      details: {
        ...request.auditDetails,
        status: status === 'pending' ? 'pending_approval' : 'auto_approved',
        approval_id: row.id,
      },
    });
    return row;
  }

  return {
    /** Sets who is told about decisions (the chat layer, once it exists). */
    setDecidedHandler(handler: DecidedHandler | undefined) {
      onDecided = handler;
    },

    /** Parks an external call: a pending action and its `tool.call` audit, one transaction. */
    async park(request: ParkRequest): Promise<PendingActionRow> {
      const now = clock();
      return db.transaction().execute(async (trx) => {
        const row = await recordCall(trx, request, 'pending', now);
        return row;
      });
    },

    /** A role configured for auto-approval: recorded as approved at once, then run. */
    async runAutoApproved(
      request: ParkRequest,
    ): Promise<{ row: PendingActionRow; outcome: ToolOutcome }> {
      const now = clock();
      const row = await db.transaction().execute(async (trx) => {
        const row = await recordCall(trx, request, 'approved', now);
        await writeAudit(trx, {
          userId: request.principal.id,
          department: request.principal.department,
          action: 'tool.approved',
          source: request.source,
          details: {
            tool: row.tool,
            approval_id: row.id,
            args_sha256: row.arguments_sha256,
            approved_by: null,
            auto_approved: true,
            role: request.principal.role,
          },
        });
        return row;
      });
      const { row: finished, outcome } = await runApproved(
        row,
        request.principal,
        { source: request.source },
        true,
      );
      return { row: finished, outcome };
    },

    async list(principal: Principal, query: ApprovalListQuery) {
      await expirePendingActions(db, clock(), { userId: principal.id });
      const rows = await listPendingActions(db, principal.id, query);
      return toPage(
        rows,
        query.limit,
        (r) => ({ k: r.cursor_key, id: r.id }),
        ({ cursor_key: _key, ...r }) => toApprovalView(r),
      );
    },

    async get(principal: Principal, id: string): Promise<ApprovalView> {
      const row = await findPendingAction(db, principal.id, id);
      if (!row) throw notFound('approval');
      const now = clock();
      if (row.status === 'pending' && row.expires_at <= now) {
        await expireOne(row, now);
        return toApprovalView((await findPendingAction(db, principal.id, id))!);
      }
      return toApprovalView(row);
    },

    /** Approves and runs the action; single-use under any concurrency. */
    async approve(principal: Principal, id: string, meta: DecisionMeta): Promise<ApprovalView> {
      const now = clock();
      const claimed = await db.transaction().execute(async (trx) => {
        const row = await claimPendingAction(trx, {
          id,
          userId: principal.id,
          to: 'approved',
          now,
        });
        if (row)
          await writeAudit(trx, {
            userId: principal.id,
            department: principal.department,
            action: 'tool.approved',
            source: meta.source,
            details: {
              tool: row.tool,
              approval_id: row.id,
              args_sha256: row.arguments_sha256,
              approved_by: principal.id,
              auto_approved: false,
            },
            ip: meta.ip ?? null,
          });
        return row;
      });
      if (!claimed) throw await claimFailure(principal, id);
      const { row, outcome, refusal } = await runApproved(claimed, principal, meta, false);
      await notify(row, outcome);
      if (refusal) throw refusal;
      return toApprovalView(row);
    },

    async reject(principal: Principal, id: string, meta: DecisionMeta): Promise<ApprovalView> {
      const now = clock();
      const row = await db.transaction().execute(async (trx) => {
        const claimed = await claimPendingAction(trx, {
          id,
          userId: principal.id,
          to: 'rejected',
          now,
        });
        if (!claimed) return undefined;
        const result = { status: 'error', output: REJECTED_OUTPUT };
        const done = await trx
          .updateTable('pending_actions')
          .set({ result: JSON.stringify(result) })
          .where('id', '=', claimed.id)
          .returningAll()
          .executeTakeFirstOrThrow();
        await writeAudit(trx, {
          userId: principal.id,
          department: principal.department,
          action: 'tool.rejected',
          source: meta.source,
          details: {
            tool: claimed.tool,
            approval_id: claimed.id,
            args_sha256: claimed.arguments_sha256,
            rejected_by: principal.id,
          },
          ip: meta.ip ?? null,
        });
        return done;
      });
      if (!row) throw await claimFailure(principal, id);
      await notify(row, { status: 'error', output: REJECTED_OUTPUT });
      return toApprovalView(row);
    },

    /** Marks every overdue pending action expired (the scheduled job); returns how many. */
    async expireDue(batch = 1000): Promise<number> {
      const now = clock();
      return db.transaction().execute(async (trx) => {
        const expired = await expirePendingActions(trx, now, { limit: batch });
        for (const row of expired) {
          await writeAudit(trx, {
            userId: row.user_id,
            department: null,
            action: 'tool.expired',
            source: 'scheduler',
            details: { tool: row.tool, approval_id: row.id },
          });
        }
        return expired.length;
      });
    },
  };
}
