-- A promoted queued message runs before the others, whatever its age.
ALTER TABLE chat_queued_messages ADD COLUMN promoted BIGINT NOT NULL DEFAULT 0;
