-- Pending actions of external tools (awaiting a person's approval) and the outbox that mail,
-- calendar, Teams and lead tools deliver to until real delivery is wired in.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17).

CREATE TABLE pending_actions (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           UUID NOT NULL REFERENCES users(id),  -- the acting user; only they decide
    session_id        UUID,
    agent             TEXT,
    tool              TEXT NOT NULL,
    arguments         JSONB NOT NULL,                      -- canonical (validated, keys sorted)
    arguments_sha256  TEXT NOT NULL,                       -- of the canonical JSON text
    status            TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending','approved','rejected','expired','executed','failed')),
    source            TEXT NOT NULL DEFAULT 'api',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at        TIMESTAMPTZ NOT NULL,
    decided_at        TIMESTAMPTZ,
    decided_by        UUID REFERENCES users(id),           -- NULL: expired or auto-approved
    result            JSONB,                               -- { status, output } once run
    tool_call_id      TEXT,                                -- the model's call id, to resume
    turn_context      JSONB                                -- what the chat layer needs to resume
);
CREATE INDEX idx_pending_actions_user ON pending_actions (user_id, created_at DESC, id DESC);
CREATE INDEX idx_pending_actions_expiry ON pending_actions (expires_at) WHERE status = 'pending';

CREATE TABLE outbox (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            UUID NOT NULL REFERENCES users(id),  -- the sender
    channel            TEXT NOT NULL CHECK (channel IN ('email','calendar','teams','lead_contact','crm_bulk')),
    recipient          TEXT NOT NULL,                       -- summary: addresses, channel, lead
    subject            TEXT,
    payload            JSONB NOT NULL,
    status             TEXT NOT NULL DEFAULT 'queued',      -- queued | sent | failed
    pending_action_id  UUID REFERENCES pending_actions(id),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_outbox_user ON outbox (user_id, created_at DESC, id DESC);
CREATE INDEX idx_outbox_created ON outbox (created_at DESC, id DESC);
