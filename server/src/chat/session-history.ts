/**
 * The session manager's history: a session's earlier turns as the model reads them, fitted to
 * the context budget (`chat.history_max_chars`).
 */
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import type { ChatMessage } from '../llm/types.ts';
import type { MessageRow, SessionRow } from './chat.repository.ts';
import { buildHistory } from './history.ts';

export interface FitHistoryInput {
  principal: Principal;
  session: SessionRow;
  /** The session's stored messages, oldest first (those the new turn follows). */
  rows: MessageRow[];
  source: AuditSource;
  signal?: AbortSignal;
}

export interface SessionHistory {
  /** Earlier messages as the model reads them, fitted to the budget. */
  fit(input: FitHistoryInput): Promise<ChatMessage[]>;
}

export function createSessionHistory(deps: { maxChars: number }): SessionHistory {
  return {
    async fit({ rows }) {
      return buildHistory(rows, deps.maxChars);
    },
  };
}
