-- Plugins admins upload through the API, stored by the SHA-256 of their component (content
-- addressed: the same bytes uploaded twice are one plugin). `name` and `version` are what the
-- component's `describe` said when it was first checked (NULL while `state` is `checking`);
-- a component that failed that check is kept as `refused` with its `problem`, so the admin
-- sees why. `limits` (a JSON object of limit overrides) and `settings` (a JSON object the
-- plugin reads through its `settings` capability) are the admin's configuration; `imports` is a
-- JSON array.
CREATE TABLE uploaded_plugins (
    sha256        TEXT PRIMARY KEY,
    name          TEXT,
    version       TEXT,
    state         TEXT NOT NULL,
    problem       TEXT,
    enabled       BIGINT NOT NULL DEFAULT 1,
    imports       TEXT NOT NULL,
    limits        TEXT NOT NULL DEFAULT '{}',
    settings      TEXT NOT NULL DEFAULT '{}',
    size_bytes    BIGINT NOT NULL,
    component     BYTEA NOT NULL,
    uploaded_by   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX uploaded_plugins_name ON uploaded_plugins (name);
