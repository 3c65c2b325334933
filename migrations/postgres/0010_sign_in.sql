-- Signing in from a browser: a password per user (an Argon2id hash in PHC form; NULL: the user
-- signs in with API tokens only), browser sessions (only the SHA-256 of the cookie's value is
-- kept, beside the session's CSRF token).
ALTER TABLE users ADD COLUMN password_hash TEXT;

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
