/** outbox: messages, events and posts the tools produced, waiting for delivery. */
import type { OutboxChannel } from '@mezzofy/protocol';
import type { Executor } from '../db/executor.ts';
import { newestFirst, timeKey } from '../db/pagination.ts';
import type { OutboxRow } from '../db/schema.ts';

export interface NewOutboxItem {
  userId: string;
  channel: OutboxChannel;
  recipient: string;
  subject: string | null;
  payload: Record<string, unknown>;
  pendingActionId: string | null;
  createdAt: Date;
}

export function insertOutboxItem(db: Executor, item: NewOutboxItem): Promise<OutboxRow> {
  return db
    .insertInto('outbox')
    .values({
      user_id: item.userId,
      channel: item.channel,
      recipient: item.recipient,
      subject: item.subject,
      payload: JSON.stringify(item.payload),
      pending_action_id: item.pendingActionId,
      created_at: item.createdAt,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export interface OutboxFilter {
  userId?: string | undefined;
  channel?: OutboxChannel | undefined;
  limit: number;
  cursor?: string | undefined;
}

export function listOutbox(
  db: Executor,
  filter: OutboxFilter,
): Promise<(OutboxRow & { cursor_key: string })[]> {
  let q = db.selectFrom('outbox').selectAll().select(timeKey('created_at').as('cursor_key'));
  if (filter.userId) q = q.where('user_id', '=', filter.userId);
  if (filter.channel) q = q.where('channel', '=', filter.channel);
  return newestFirst(q, filter.cursor, filter.limit).execute();
}

/** The mail log row the seed schema keeps for every message. */
export async function insertEmailLog(
  db: Executor,
  row: { userId: string; to: string; subject: string | null; status: string },
): Promise<void> {
  await db
    .insertInto('email_log')
    .values({ user_id: row.userId, to_address: row.to, subject: row.subject, status: row.status })
    .execute();
}
