-- A message's sequence number is unique in its chat. The numbering happens in the insert's
-- transaction (from `chats.last_seq`); the database, not one process's lock, now guarantees it,
-- which several replicas numbering the same chat rely on.
CREATE UNIQUE INDEX chat_messages_seq_unique ON chat_messages (chat_id, seq);

-- Subagent queries walk chats by parent; usage, workspace sharing and the active-subagent
-- count look chats up by their root.
CREATE INDEX chats_by_parent ON chats (parent_chat_id);
CREATE INDEX chats_by_root ON chats (root_chat_id);
