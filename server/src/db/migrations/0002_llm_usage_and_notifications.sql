-- LLM usage detail, department budget alerts and in-app notifications.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17). See docs/adr/0004.

-- One row per model call attempt (failed ones too). The seed's columns stay as they are.
ALTER TABLE llm_usage ADD COLUMN purpose         TEXT;          -- chat | vision | routing | long_document
ALTER TABLE llm_usage ADD COLUMN source          TEXT;          -- mobile | web | api | webhook | scheduler | teams | system
ALTER TABLE llm_usage ADD COLUMN session_id      UUID;          -- chat session, when there is one
ALTER TABLE llm_usage ADD COLUMN call_id         UUID;          -- groups the attempts of one call
ALTER TABLE llm_usage ADD COLUMN attempt         INTEGER;       -- 1-based, across candidates
ALTER TABLE llm_usage ADD COLUMN error_kind      TEXT;          -- ProviderErrorKind when status is not 'ok'
ALTER TABLE llm_usage ADD COLUMN error_message   TEXT;
ALTER TABLE llm_usage ADD COLUMN fallback_reason TEXT;          -- why this is not the primary model
ALTER TABLE llm_usage ADD COLUMN latency_ms      INTEGER;       -- whole attempt
ALTER TABLE llm_usage ADD COLUMN ttfb_ms         INTEGER;       -- to the first stream event
ALTER TABLE llm_usage ADD CONSTRAINT llm_usage_status_check
    CHECK (status IN ('ok', 'error', 'aborted'));
CREATE INDEX idx_llm_usage_created ON llm_usage (created_at);
CREATE INDEX idx_llm_usage_user ON llm_usage (user_id, created_at);

-- A budget alert is raised once per department, month (billing time zone) and level; the
-- primary key makes concurrent callers agree on who raises it.
CREATE TABLE budget_alerts (
    department  TEXT NOT NULL,
    month       TEXT NOT NULL,               -- YYYY-MM in the billing time zone
    level       TEXT NOT NULL CHECK (level IN ('warning', 'exceeded')),
    spent_usd   NUMERIC(14, 6) NOT NULL,
    budget_usd  NUMERIC(14, 6) NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (department, month, level)
);

-- Messages for one user, read by the app (unread first).
CREATE TABLE notifications (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL,               -- budget_warning | budget_exceeded | ...
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    data        JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    read_at     TIMESTAMPTZ
);
CREATE INDEX idx_notifications_unread ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;
CREATE INDEX idx_notifications_user ON notifications (user_id, created_at DESC, id DESC);
