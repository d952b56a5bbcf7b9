/** Reading the audit log (admins). Writing happens inside each service's transaction. */
import type { AuditQuery } from '@mezzofy/protocol';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database.ts';
import { toPage } from '../db/pagination.ts';
import { AppError } from '../errors.ts';
import { listAudit } from './audit.repository.ts';

export type AuditService = ReturnType<typeof createAuditService>;

export function createAuditService(deps: { database: Database }) {
  return {
    async list(actor: Principal, query: AuditQuery) {
      void actor;
      // As instants: '…00.5Z' is after '…00Z' though it sorts before it as text.
      if (query.from && query.to && Date.parse(query.from) > Date.parse(query.to)) {
        throw new AppError('validation_failed', "'from' must not be after 'to'");
      }
      const rows = await listAudit(deps.database.db, query);
      return toPage(
        rows,
        query.limit,
        (r) => ({ k: r.cursor_key, id: r.id }),
        ({ cursor_key: _key, ...r }) => ({ ...r, created_at: r.created_at.toISOString() }),
      );
    },
  };
}
