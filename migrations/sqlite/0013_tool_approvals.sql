-- Tool calls the policy says need a person's approval (`require_approval`), one row per call
-- (the chat and the model's call id). `status` is `pending` until the chat's owner answers
-- (`approved`, `denied`) or `deadline_at` passes (`expired`), or the turn ends first
-- (`cancelled`). `scope` is `once` or `chat` (the tool runs in this chat without asking again:
-- a row in `chat_tool_approvals`). `started_at` is set when an approved call starts, so that a
-- restart never runs an approved call twice. `arguments` is JSON text; `rule` the `@id`s of the
-- rules that asked.
CREATE TABLE tool_approvals (
    id            TEXT PRIMARY KEY,
    chat_id       TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    root_chat_id  TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    tool_call_id  TEXT NOT NULL,
    tool          TEXT NOT NULL,
    arguments     TEXT NOT NULL,
    rule          TEXT NOT NULL,
    status        TEXT NOT NULL,
    scope         TEXT,
    reason        TEXT,
    answered_by   TEXT,
    created_at    BIGINT NOT NULL,
    deadline_at   BIGINT NOT NULL,
    answered_at   BIGINT,
    started_at    BIGINT,
    UNIQUE (chat_id, tool_call_id)
);
CREATE INDEX tool_approvals_pending ON tool_approvals (owner_id, status);

-- Tools a chat's owner approved "for this chat": their calls in it run without asking.
CREATE TABLE chat_tool_approvals (
    chat_id      TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    tool         TEXT NOT NULL,
    approved_by  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (chat_id, tool)
);
