-- Users, API tokens, chats, messages and queued messages.
-- Times are milliseconds since the Unix epoch; message content is JSON text.
-- Flags are BIGINT 0/1: sqlx's Any driver cannot decode SQLite booleans.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    is_admin    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label        TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL
);

CREATE TABLE chats (
    id              TEXT PRIMARY KEY,
    owner_id        TEXT NOT NULL REFERENCES users(id),
    parent_chat_id  TEXT REFERENCES chats(id),
    root_chat_id    TEXT NOT NULL,
    kind            TEXT NOT NULL,
    workspace_id    TEXT,
    title           TEXT NOT NULL,
    model           TEXT,
    status          TEXT NOT NULL,
    worker_id       TEXT,
    started_at      BIGINT,
    heartbeat_at    BIGINT,
    last_error      TEXT,
    archived        BIGINT NOT NULL DEFAULT 0,
    last_seq        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX chats_by_owner ON chats (owner_id, archived, updated_at);
CREATE INDEX chats_by_status ON chats (status, updated_at);

CREATE TABLE chat_messages (
    id                     BIGSERIAL PRIMARY KEY,
    chat_id                TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq                    BIGINT NOT NULL,
    role                   TEXT NOT NULL,
    content                TEXT NOT NULL,
    content_version        BIGINT NOT NULL DEFAULT 1,
    model                  TEXT,
    input_tokens           BIGINT,
    output_tokens          BIGINT,
    reasoning_tokens       BIGINT,
    cache_read_tokens      BIGINT,
    cache_creation_tokens  BIGINT,
    created_at             BIGINT NOT NULL
);
CREATE INDEX chat_messages_by_chat ON chat_messages (chat_id, id);

CREATE TABLE chat_queued_messages (
    id          BIGSERIAL PRIMARY KEY,
    chat_id     TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    content     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX chat_queued_messages_by_chat ON chat_queued_messages (chat_id, id);
