/** audit_log: written inside the transaction of the change it records. */
import type { AuditQuery } from '@mezzofy/protocol';
import { sql } from 'kysely';
import type { Executor } from '../db/executor.ts';
import { cursorShapes, decodeCursor, timeKey } from '../db/pagination.ts';
import type { AuditRow } from '../db/schema.ts';

export type AuditSource = 'mobile' | 'web' | 'api' | 'webhook' | 'scheduler' | 'teams' | 'system';

export interface AuditEntry {
  userId: string | null;
  department: string | null;
  action: string;
  source?: AuditSource;
  details?: Record<string, unknown>;
  ip?: string | null;
}

export async function writeAudit(db: Executor, entry: AuditEntry): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({
      user_id: entry.userId,
      department: entry.department,
      action: entry.action,
      source: entry.source ?? 'api',
      details: entry.details ? JSON.stringify(entry.details) : null,
      ip_address: entry.ip ?? null,
    })
    .execute();
}

/** Each row carries `cursor_key`, its created_at to the microsecond, for the next cursor. */
export async function listAudit(
  db: Executor,
  query: AuditQuery,
): Promise<(AuditRow & { cursor_key: string })[]> {
  const cursor = decodeCursor(query.cursor, { k: cursorShapes.timeKey, id: cursorShapes.integer });
  let q = db.selectFrom('audit_log').selectAll().select(timeKey('created_at').as('cursor_key'));
  if (query.user_id) q = q.where('user_id', '=', query.user_id);
  if (query.action) q = q.where('action', '=', query.action);
  if (query.from) q = q.where('created_at', '>=', new Date(query.from));
  if (query.to) q = q.where('created_at', '<', new Date(query.to));
  if (cursor) {
    q = q.where(
      sql<boolean>`(created_at, id) < (${String(cursor.k)}::timestamptz, ${Number(cursor.id)})`,
    );
  }
  return q
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(query.limit + 1)
    .execute();
}
