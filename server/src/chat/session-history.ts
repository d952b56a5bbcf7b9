/**
 * The session manager's history: a session's earlier turns as the model reads them, fitted to
 * the context budget (`chat.history_max_chars`). Turns that fall out of the budget are
 * summarised by the `summary` model (summarizer.ts) and the summary is stored on the session
 * (`chat_sessions.summary`, `summary_through`), so later turns only summarise the turns that
 * newly fall out, and turns a summary covers are never sent again. The plan is history.ts's.
 *
 * When no summary can be made (no model, a provider error, the time limit, an empty answer)
 * the turn gets the stored summary and the dropped turns' first lines, and nothing is
 * stored. Only the turn's cancellation is rethrown.
 *
 * `fit` writes the session row with `database.db`: the caller must not hold a lock on that row
 * in a transaction of its own while it waits.
 */
import type { AuditSource } from '../audit/audit.repository.ts';
import type { Principal } from '../auth/principal.ts';
import type { Database } from '../db/database.ts';
import type { LlmManager } from '../llm/llm-manager.ts';
import type { ChatMessage } from '../llm/types.ts';
import type { Logger } from '../logging/logger.ts';
import type { MessageRow, SessionRow } from './chat.repository.ts';
import {
  fallbackSummaryText,
  needsSummary,
  planHistory,
  renderHistory,
  type StoredSummary,
  summaryCap,
  summaryText,
  turnsOf,
} from './history.ts';
import { createSummarizer } from './summarizer.ts';

export interface FitHistoryInput {
  principal: Principal;
  /**
   * The session as its turn's lease returned it (chat.service): fresh, and only the lease
   * holder writes the summary, so its summary is the stored one.
   */
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

export interface SessionHistoryDeps {
  /** chat.history_max_chars. */
  maxChars: number;
  /** Model summaries, kept on the session. Without: the first lines of dropped turns. */
  summaries?: {
    database: Database;
    llm: Pick<LlmManager, 'stream' | 'configured'>;
    log: Logger;
    /** chat.summary_timeout_ms. */
    timeoutMs: number;
    /** chat.summary_max_tokens. */
    maxOutputTokens: number;
  };
}

const storedOf = (row: Pick<SessionRow, 'summary' | 'summary_through'>): StoredSummary | null =>
  row.summary && row.summary_through ? { text: row.summary, through: row.summary_through } : null;

export function createSessionHistory(deps: SessionHistoryDeps): SessionHistory {
  const { maxChars, summaries } = deps;
  const summarizer = summaries && createSummarizer(summaries);

  /** Stores a summary unless another writer already stored one reaching further. */
  async function store(sessionId: string, summary: string, through: Date): Promise<void> {
    if (!summaries) return;
    try {
      await summaries.database.db
        .updateTable('chat_sessions')
        .set({ summary, summary_through: through })
        .where('id', '=', sessionId)
        .where((eb) =>
          eb.or([eb('summary_through', 'is', null), eb('summary_through', '<=', through)]),
        )
        .execute();
    } catch (err) {
      summaries.log.warn({ err, session_id: sessionId }, 'storing the session summary failed');
    }
  }

  return {
    async fit({ principal, session, rows, source, signal }) {
      const turns = turnsOf(rows);
      if (turns.length === 0) return [];
      const plan = planHistory(turns, maxChars, storedOf(session));
      const previous = plan.previous?.text ?? null;
      if (!needsSummary(plan) || !summarizer)
        return renderHistory(plan.kept, fallbackSummaryText(previous, plan.dropped));

      const summary = await summarizer.summarise({
        previous,
        turns: plan.dropped,
        maxChars: summaryCap(maxChars),
        ctx: {
          userId: principal.id,
          department: principal.department,
          source,
          sessionId: session.id,
        },
        signal,
      });
      if (summary === null)
        return renderHistory(plan.kept, fallbackSummaryText(previous, plan.dropped));
      if (plan.through) await store(session.id, summary, plan.through);
      return renderHistory(plan.kept, summaryText(summary));
    },
  };
}
