//! Chat trees, as the agent tools see them: children, ancestry, counts for the limits, and
//! the report a child leaves.

use sqlx::Row;

use super::chats::{CHAT_COLUMNS, chat_from};
use super::{Chat, Store, StoreError, StoreResult};
use crate::domain::parts::MessagePart;

impl Store {
    /// The chats `parent_id` spawned, oldest first.
    pub async fn children(&self, parent_id: &str) -> StoreResult<Vec<Chat>> {
        let rows =
            sqlx::query(&format!("SELECT {CHAT_COLUMNS} FROM chats WHERE parent_chat_id = $1 ORDER BY created_at, id"))
                .bind(parent_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(chat_from).collect()
    }

    /// Every chat below `chat_id` (children, their children, ...).
    pub async fn descendants(&self, chat_id: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM chats WHERE parent_chat_id = $1 UNION ALL SELECT c.id FROM chats c JOIN tree t ON c.parent_chat_id = t.id) \
             SELECT id FROM tree",
        )
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// Whether `chat` is below `ancestor_id` in its tree.
    pub async fn is_descendant(&self, chat: &Chat, ancestor_id: &str) -> StoreResult<bool> {
        let mut parent = chat.parent_chat_id.clone();
        let mut steps = 0;
        while let Some(id) = parent {
            if id == ancestor_id {
                return Ok(true);
            }
            steps += 1;
            if steps > 1024 {
                return Err(StoreError::Corrupt(format!("chat {} has a cycle of parents", chat.id)));
            }
            parent = sqlx::query("SELECT parent_chat_id FROM chats WHERE id = $1")
                .bind(&id)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| row.try_get("parent_chat_id"))
                .transpose()?
                .flatten();
        }
        Ok(false)
    }

    /// Chats of a tree (not its root) whose turn is pending or running.
    pub async fn active_descendants_of_root(&self, root_chat_id: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM chats WHERE root_chat_id = $1 AND id <> $1 AND archived = 0 AND status IN ('pending', 'running')",
        )
        .bind(root_chat_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Children of `parent_id` made at or after `since` (milliseconds since the epoch).
    pub async fn children_since(&self, parent_id: &str, since: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM chats WHERE parent_chat_id = $1 AND created_at >= $2",
        )
        .bind(parent_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// When the chat's current turn began: the time of its latest user message.
    pub async fn turn_started_at(&self, chat_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(MAX(created_at), 0) AS BIGINT) AS t FROM chat_messages WHERE chat_id = $1 AND role = 'user'")
            .bind(chat_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("t")?)
    }

    /// The text of the chat's latest assistant message that has any.
    pub async fn last_assistant_text(&self, chat_id: &str) -> StoreResult<Option<String>> {
        let rows = sqlx::query(
            "SELECT content FROM chat_messages WHERE chat_id = $1 AND role = 'assistant' ORDER BY seq DESC LIMIT 20",
        )
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let content: String = row.try_get("content")?;
            let parts: Vec<MessagePart> =
                serde_json::from_str(&content).map_err(|e| StoreError::Corrupt(format!("message content: {e}")))?;
            let text: Vec<&str> = parts
                .iter()
                .filter_map(|part| match part {
                    MessagePart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .filter(|t| !t.trim().is_empty())
                .collect();
            if !text.is_empty() {
                return Ok(Some(text.join("\n")));
            }
        }
        Ok(None)
    }
}
