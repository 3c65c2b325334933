-- Workspaces: a place with files and processes that chats work in, made from a template.
-- `status` follows created -> starting -> ready | start_error | start_timeout, and stopped.

CREATE TABLE workspaces (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    template_id  TEXT NOT NULL,
    parameters   TEXT NOT NULL,             -- JSON object of the validated parameter values
    network      BIGINT NOT NULL DEFAULT 0, -- the template lets its commands reach the network
    backend      TEXT NOT NULL,             -- 'local'
    status       TEXT NOT NULL,
    detail       TEXT,                      -- the startup script's outcome, or why it failed
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE INDEX chats_by_workspace ON chats (workspace_id);
