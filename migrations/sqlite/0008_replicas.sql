-- The server processes sharing this database, so that they can reach each other: each
-- registers at start, heartbeats, and leaves at shutdown; an entry whose heartbeat is older than
-- the stale window is a replica that vanished. `id` is the replica's worker id (the value of
-- `chats.worker_id` for the chats it runs), `relay_address` where the others reach it.
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    node_id       TEXT NOT NULL,
    relay_address TEXT,
    version       TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

-- The machine whose disk holds a workspace's files (its data directory's node id): only a
-- replica on that node runs the chats that use it. NULL for workspaces made before replicas.
ALTER TABLE workspaces ADD COLUMN node_id TEXT;
