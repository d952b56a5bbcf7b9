/**
 * pending_actions: external tool calls waiting for their user's decision. Every state change
 * is one conditional UPDATE, so concurrent deciders cannot both win.
 */
import type { ApprovalStatus } from '@mezzofy/protocol';
import type { Executor } from '../../db/executor.ts';
import { newestFirst, timeKey } from '../../db/pagination.ts';
import type { PendingActionRow } from '../../db/schema.ts';

export interface NewPendingAction {
  userId: string;
  sessionId: string | null;
  agent: string | null;
  tool: string;
  arguments: unknown;
  argumentsSha256: string;
  status: 'pending' | 'approved';
  source: string;
  createdAt: Date;
  expiresAt: Date;
  toolCallId: string | null;
  turnContext: Record<string, unknown> | null;
}

export async function insertPendingAction(
  db: Executor,
  action: NewPendingAction,
): Promise<PendingActionRow> {
  return db
    .insertInto('pending_actions')
    .values({
      user_id: action.userId,
      session_id: action.sessionId,
      agent: action.agent,
      tool: action.tool,
      arguments: JSON.stringify(action.arguments),
      arguments_sha256: action.argumentsSha256,
      status: action.status,
      source: action.source,
      created_at: action.createdAt,
      expires_at: action.expiresAt,
      decided_at: action.status === 'approved' ? action.createdAt : null,
      tool_call_id: action.toolCallId,
      turn_context: action.turnContext ? JSON.stringify(action.turnContext) : null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export function findPendingAction(
  db: Executor,
  userId: string,
  id: string,
): Promise<PendingActionRow | undefined> {
  return db
    .selectFrom('pending_actions')
    .selectAll()
    .where('id', '=', id)
    .where('user_id', '=', userId)
    .executeTakeFirst();
}

/**
 * pending → approved/rejected, only for the owner, only before expiry. Exactly one of any
 * number of concurrent callers gets the row back.
 */
export function claimPendingAction(
  db: Executor,
  input: { id: string; userId: string; to: 'approved' | 'rejected'; now: Date },
): Promise<PendingActionRow | undefined> {
  return db
    .updateTable('pending_actions')
    .set({ status: input.to, decided_at: input.now, decided_by: input.userId })
    .where('id', '=', input.id)
    .where('user_id', '=', input.userId)
    .where('status', '=', 'pending')
    .where('expires_at', '>', input.now)
    .returningAll()
    .executeTakeFirst();
}

/** approved → executed/failed with the tool's outcome. */
export function finishPendingAction(
  db: Executor,
  id: string,
  status: 'executed' | 'failed',
  result: Record<string, unknown>,
): Promise<PendingActionRow | undefined> {
  return db
    .updateTable('pending_actions')
    .set({ status, result: JSON.stringify(result) })
    .where('id', '=', id)
    .where('status', '=', 'approved')
    .returningAll()
    .executeTakeFirst();
}

/** Marks pending actions past their expiry as expired (one user's, or everyone's). */
export function expirePendingActions(
  db: Executor,
  now: Date,
  options: { userId?: string; id?: string; limit?: number } = {},
): Promise<Pick<PendingActionRow, 'id' | 'user_id' | 'tool'>[]> {
  let due = db
    .selectFrom('pending_actions')
    .select('id')
    .where('status', '=', 'pending')
    .where('expires_at', '<=', now);
  if (options.userId) due = due.where('user_id', '=', options.userId);
  if (options.id) due = due.where('id', '=', options.id);
  due = due.limit(options.limit ?? 1000);
  return db
    .updateTable('pending_actions')
    .set({ status: 'expired', decided_at: now })
    .where('id', 'in', due)
    .where('status', '=', 'pending')
    .returning(['id', 'user_id', 'tool'])
    .execute();
}

export interface PendingActionFilter {
  status?: ApprovalStatus | undefined;
  limit: number;
  cursor?: string | undefined;
}

export function listPendingActions(
  db: Executor,
  userId: string,
  filter: PendingActionFilter,
): Promise<(PendingActionRow & { cursor_key: string })[]> {
  let q = db
    .selectFrom('pending_actions')
    .selectAll()
    .select(timeKey('created_at').as('cursor_key'))
    .where('user_id', '=', userId);
  if (filter.status) q = q.where('status', '=', filter.status);
  return newestFirst(q, filter.cursor, filter.limit).execute();
}
