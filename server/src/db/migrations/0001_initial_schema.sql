-- Initial schema: every table and index of the seed's migration, plus what auth needs.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17/18). See docs/adr/0002.

CREATE TABLE users (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email               TEXT UNIQUE NOT NULL,
    password_hash       TEXT NOT NULL,
    name                TEXT NOT NULL,
    department          TEXT NOT NULL CHECK (department IN ('finance','sales','marketing','support','management')),
    role                TEXT NOT NULL,
    is_active           BOOLEAN NOT NULL DEFAULT true,
    timezone            TEXT NOT NULL DEFAULT 'Asia/Singapore',
    locale              TEXT NOT NULL DEFAULT 'en' CHECK (locale IN ('en','zh','ms')),
    password_changed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    deactivated_at      TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
-- E-mail is unique whatever its case.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX idx_users_created ON users (created_at DESC, id DESC);

-- A chat session (the seed keeps only a session_id on each message): title, agent, soft delete.
CREATE TABLE chat_sessions (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL REFERENCES users(id),
    title       TEXT,
    agent       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX idx_chat_sessions_user ON chat_sessions (user_id, updated_at DESC) WHERE deleted_at IS NULL;

CREATE TABLE conversations (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID REFERENCES users(id),
    session_id  UUID NOT NULL REFERENCES chat_sessions(id),
    role        TEXT NOT NULL,          -- 'user' | 'assistant' | 'tool'
    content     TEXT NOT NULL,
    metadata    JSONB,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE sales_leads (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    company_name    TEXT NOT NULL,
    contact_name    TEXT,
    contact_email   TEXT,
    contact_phone   TEXT,
    industry        TEXT,
    location        TEXT,
    source          TEXT,              -- linkedin, website, referral, event
    status          TEXT NOT NULL DEFAULT 'new', -- new, contacted, qualified, proposal, closed_won, closed_lost
    assigned_to     UUID REFERENCES users(id),
    notes           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_contacted  TIMESTAMPTZ,
    follow_up_date  TIMESTAMPTZ
);

CREATE TABLE artifacts (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID REFERENCES users(id),
    session_id  UUID,
    type        TEXT NOT NULL,          -- pdf, pptx, docx, csv, xlsx, image
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    size_bytes  BIGINT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    user_id     UUID REFERENCES users(id),  -- NULL for system/scheduler actions
    department  TEXT,
    action      TEXT NOT NULL,
    source      TEXT NOT NULL DEFAULT 'mobile',      -- mobile | web | webhook | scheduler | teams | system
    details     JSONB,
    ip_address  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Every model call, failed attempts too; cost priced at call time (see docs/adr/0002).
CREATE TABLE llm_usage (
    id              BIGSERIAL PRIMARY KEY,
    model           TEXT NOT NULL,
    provider        TEXT,
    department      TEXT,
    user_id         UUID REFERENCES users(id),
    input_tokens    INTEGER,
    output_tokens   INTEGER,
    cost_usd        NUMERIC(14, 6) NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'ok',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX idx_llm_usage_dept ON llm_usage (department, created_at);

CREATE TABLE email_log (
    id          BIGSERIAL PRIMARY KEY,
    user_id     UUID REFERENCES users(id),
    to_address  TEXT NOT NULL,
    subject     TEXT,
    status      TEXT,                  -- sent, failed, bounced
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE scheduled_jobs (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID REFERENCES users(id),
    name        TEXT NOT NULL,
    agent       TEXT NOT NULL,          -- finance, sales, marketing, support, management
    message     TEXT NOT NULL,          -- natural-language task description
    schedule    TEXT NOT NULL,          -- cron expression (e.g. "0 9 * * 1" = Monday 9AM)
    deliver_to  JSONB NOT NULL,         -- {"teams_channel": "sales", "email": ["ceo@mezzofy.com"]}
    is_active   BOOLEAN NOT NULL DEFAULT true,
    last_run    TIMESTAMPTZ,
    next_run    TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE webhook_events (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source       TEXT NOT NULL,          -- mezzofy, teams, custom
    event_type   TEXT NOT NULL,          -- customer_signed_up, support_ticket_created, ...
    payload      JSONB NOT NULL,
    status       TEXT NOT NULL DEFAULT 'received', -- received, processing, completed, failed
    task_id      TEXT,                   -- queue job id for tracking
    result       JSONB,                  -- agent processing result
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    processed_at TIMESTAMPTZ
);

-- A login session = one refresh-token family. Revoking it ends its access tokens too.
CREATE TABLE auth_sessions (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID NOT NULL REFERENCES users(id),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at    TIMESTAMPTZ NOT NULL,      -- absolute lifetime
    last_used_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    revoked_at    TIMESTAMPTZ,
    revoke_reason TEXT,
    ip_address    TEXT,
    user_agent    TEXT
);
CREATE INDEX idx_auth_sessions_user_active ON auth_sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX idx_auth_sessions_expires ON auth_sessions (expires_at);

-- Refresh tokens: only their SHA-256 is stored; each use rotates to a new one.
CREATE TABLE refresh_tokens (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   UUID NOT NULL REFERENCES auth_sessions(id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ,              -- set when rotated
    replaced_by  UUID,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX idx_refresh_tokens_session ON refresh_tokens (session_id);
CREATE INDEX idx_refresh_tokens_expires ON refresh_tokens (expires_at);

-- Failed-login counters for the lockout policy (per account, per account+IP).
CREATE TABLE login_failures (
    key               TEXT PRIMARY KEY,
    failures          INTEGER NOT NULL,
    window_started_at TIMESTAMPTZ NOT NULL,
    locked_until      TIMESTAMPTZ
);

-- Phones and browsers that receive push notifications.
CREATE TABLE push_devices (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       UUID NOT NULL REFERENCES users(id),
    token         TEXT NOT NULL UNIQUE,
    platform      TEXT NOT NULL CHECK (platform IN ('ios','android','web')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    disabled_at   TIMESTAMPTZ
);
CREATE INDEX idx_push_devices_user ON push_devices (user_id) WHERE disabled_at IS NULL;

-- The seed's indexes.
CREATE INDEX idx_conversations_session ON conversations(session_id, created_at);
CREATE INDEX idx_conversations_user ON conversations(user_id, created_at DESC);
CREATE INDEX idx_leads_status ON sales_leads(status, assigned_to);
CREATE INDEX idx_leads_company ON sales_leads(company_name);
CREATE INDEX idx_leads_followup ON sales_leads(follow_up_date) WHERE follow_up_date IS NOT NULL;
CREATE INDEX idx_artifacts_user ON artifacts(user_id, created_at DESC);
CREATE INDEX idx_audit_user ON audit_log(user_id, created_at DESC);
CREATE INDEX idx_audit_action ON audit_log(action, created_at DESC);
CREATE INDEX idx_audit_created ON audit_log(created_at DESC, id DESC);
CREATE INDEX idx_scheduled_active ON scheduled_jobs(is_active, next_run);
CREATE INDEX idx_webhook_events_source ON webhook_events(source, created_at DESC);
CREATE INDEX idx_webhook_events_status ON webhook_events(status) WHERE status != 'completed';
