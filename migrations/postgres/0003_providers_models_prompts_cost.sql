-- Providers and model configs administered through the API (and seeded from the config file
-- and environment), prompts, and the cost of each model call.

CREATE TABLE providers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,             -- 'openai' or 'anthropic'
    base_url    TEXT,
    api_key     TEXT,                      -- sealed (host/src/secrets.rs), never the key itself
    source      TEXT NOT NULL,             -- 'api', or 'config' (re-applied at every start)
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE model_configs (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,   -- what chats name
    provider_id           TEXT NOT NULL REFERENCES providers(id),
    model                 TEXT NOT NULL,          -- the provider's name for the model
    context_window        BIGINT NOT NULL,
    max_output_tokens     BIGINT,
    thinking_budget       BIGINT,
    compaction_threshold  DOUBLE PRECISION NOT NULL,            -- share of the context window, 0 to 1
    input_price           DOUBLE PRECISION NOT NULL DEFAULT 0,  -- USD per million tokens
    output_price          DOUBLE PRECISION NOT NULL DEFAULT 0,
    cache_read_price      DOUBLE PRECISION NOT NULL DEFAULT 0,
    cache_write_price     DOUBLE PRECISION NOT NULL DEFAULT 0,
    is_default            BIGINT NOT NULL DEFAULT 0,
    for_titles            BIGINT NOT NULL DEFAULT 0,
    source                TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- Deployment-wide settings (the system prompt).
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

ALTER TABLE users ADD COLUMN prompt TEXT;
ALTER TABLE chat_messages ADD COLUMN cost_usd DOUBLE PRECISION;
CREATE INDEX chat_messages_by_time ON chat_messages (created_at);
