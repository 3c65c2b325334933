-- Secrets admins store for plugins (API keys, tokens). The value is sealed with the server's
-- secret key, bound to the secret's name; `plugins` (who may ask for it) and `hosts` (where it
-- may be sent) are JSON arrays of strings.
CREATE TABLE plugin_secrets (
    name          TEXT PRIMARY KEY,
    sealed_value  TEXT NOT NULL,
    plugins       TEXT NOT NULL,
    hosts         TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
