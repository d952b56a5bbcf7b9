-- Chat sessions across processes, and model-written summaries of older turns.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17).
--
-- turn_token / turn_expires_at: a lease on the session held by the process running its
-- turn, so one turn per session runs at a time across API processes (docs/adr/0005). The
-- lease expires on its own if that process dies; a cancel reaches the holder through pub/sub.
--
-- summary / summary_through: the model's summary of the turns too old to fit the history
-- budget, and the created_at of the last message it covers, so later turns summarise only
-- what newly fell out of the budget.

ALTER TABLE chat_sessions ADD COLUMN turn_token UUID;
ALTER TABLE chat_sessions ADD COLUMN turn_expires_at TIMESTAMPTZ;
ALTER TABLE chat_sessions ADD COLUMN summary TEXT;
ALTER TABLE chat_sessions ADD COLUMN summary_through TIMESTAMPTZ;
