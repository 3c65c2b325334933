-- A run of the chat stopped without storing what it had streamed (the server died or shut
-- down mid-turn): the next run first tells clients to drop those parts.
-- `chats.last_seq` is from now on the highest sequence number handed out or reserved for the
-- chat, not only the last stored message's: servers reserve numbers there before using them.

ALTER TABLE chats ADD COLUMN cut_off BIGINT NOT NULL DEFAULT 0;
