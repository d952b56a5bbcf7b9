/**
 * The outbox: where mail, calendar events, Teams posts and lead contacts go once approved.
 * In the embedded default nothing leaves the server; real delivery (Microsoft Graph) will
 * read from here behind the same tools. Senders see their own items, admins see all.
 */
import type { AdminOutboxQuery, OutboxItemView, OutboxQuery } from '@mezzofy/protocol';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database.ts';
import { toPage } from '../db/pagination.ts';
import type { OutboxRow } from '../db/schema.ts';
import type { Clock } from '../infra/clock.ts';
import {
  insertEmailLog,
  insertOutboxItem,
  listOutbox,
  type NewOutboxItem,
} from './outbox.repository.ts';

export type OutboxService = ReturnType<typeof createOutboxService>;

export function toOutboxView(row: OutboxRow): OutboxItemView {
  return {
    id: row.id,
    user_id: row.user_id,
    channel: row.channel as OutboxItemView['channel'],
    recipient: row.recipient,
    subject: row.subject,
    payload: row.payload,
    status: row.status,
    pending_action_id: row.pending_action_id,
    created_at: row.created_at.toISOString(),
  };
}

export function createOutboxService(deps: { database: Database; clock: Clock }) {
  const { db } = deps.database;

  const page = (rows: (OutboxRow & { cursor_key: string })[], limit: number) =>
    toPage(
      rows,
      limit,
      (r) => ({ k: r.cursor_key, id: r.id }),
      ({ cursor_key: _key, ...r }) => toOutboxView(r),
    );

  return {
    /** Queues one item; mail also gets its email_log row (status `queued`), atomically. */
    async enqueue(
      item: Omit<NewOutboxItem, 'createdAt'>,
      mail?: { to: string; subject: string | null },
    ): Promise<OutboxItemView> {
      const row = await db.transaction().execute(async (trx) => {
        const row = await insertOutboxItem(trx, { ...item, createdAt: deps.clock() });
        if (mail)
          await insertEmailLog(trx, {
            userId: item.userId,
            to: mail.to,
            subject: mail.subject,
            status: 'queued',
          });
        return row;
      });
      return toOutboxView(row);
    },

    async listOwn(principal: Principal, query: OutboxQuery) {
      return page(await listOutbox(db, { ...query, userId: principal.id }), query.limit);
    },

    async listAll(actor: Principal, query: AdminOutboxQuery) {
      void actor;
      const { user_id: userId, ...rest } = query;
      return page(await listOutbox(db, { ...rest, userId }), query.limit);
    },
  };
}
