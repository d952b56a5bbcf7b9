-- Chat over REST: idempotent sends. A client may retry POST /chat/send with the same
-- client_message_id; the unique index makes the second insert lose across processes too.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17).

ALTER TABLE conversations ADD COLUMN client_message_id TEXT;

CREATE UNIQUE INDEX idx_conversations_client_message
    ON conversations (user_id, client_message_id)
    WHERE client_message_id IS NOT NULL;
