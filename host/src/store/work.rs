//! What the worker and the send/interrupt paths write: acquiring chats, heartbeats, recovery,
//! messages with their sequence numbers, status changes and the queue.

use sqlx::Row;

use super::chats::{CHAT_COLUMNS, MESSAGE_COLUMNS, chat_from, message_from, queued_from, to_json};
use super::{Backend, Chat, ChatStatus, Message, QueuedMessage, Store, StoreError, StoreResult, now_ms};
use crate::domain::{MessagePart, Role};

/// Most messages waiting behind a running turn.
pub const MAX_QUEUED: i64 = 20;

/// Token counts stored with a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct TokenUsage {
    #[serde(rename = "input_tokens")]
    pub input: i64,
    #[serde(rename = "output_tokens")]
    pub output: i64,
    #[serde(rename = "reasoning_tokens")]
    pub reasoning: i64,
    #[serde(rename = "cache_read_tokens")]
    pub cache_read: i64,
    #[serde(rename = "cache_creation_tokens")]
    pub cache_creation: i64,
    /// From the model's prices when the call was made.
    pub cost_usd: Option<f64>,
}

impl Store {
    /// Reserves `count` sequence numbers for the chat's events and returns them, durably: a
    /// number reserved here is never handed out again, whichever process dies when. `None`
    /// when there is no such chat.
    pub async fn reserve_seqs(&self, chat_id: &str, count: i64) -> StoreResult<Option<std::ops::RangeInclusive<i64>>> {
        let row = sqlx::query("UPDATE chats SET last_seq = last_seq + $1 WHERE id = $2 RETURNING last_seq")
            .bind(count)
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let last: i64 = row.try_get("last_seq")?;
        Ok(Some(last - count + 1..=last))
    }

    /// Whether a run of the chat was cut off without storing what it streamed; clears the mark.
    pub async fn take_cut_off(&self, chat_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE chats SET cut_off = 0 WHERE id = $1 AND cut_off <> 0")
            .bind(chat_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes the oldest pending chat for `worker_id` on `node_id`, if any. A chat whose
    /// workspace lives on another node is left to that node's replicas while one is registered.
    pub async fn acquire_chat(&self, worker_id: &str, node_id: &str) -> StoreResult<Option<Chat>> {
        // PostgreSQL: replicas skip rows another one is taking. SQLite: one writer at a time.
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let now = now_ms();
        let row = sqlx::query(&format!(
            "UPDATE chats SET status = 'running', worker_id = $1, started_at = $2, heartbeat_at = $2, last_error = NULL, updated_at = $2 \
             WHERE id = (SELECT id FROM chats c WHERE status = 'pending' AND archived = 0 AND NOT EXISTS ( \
                 SELECT 1 FROM chats r JOIN workspaces w ON w.id = COALESCE(c.workspace_id, r.workspace_id) \
                 WHERE r.id = c.root_chat_id AND w.node_id IS NOT NULL AND w.node_id <> $3 \
                 AND EXISTS (SELECT 1 FROM replicas p WHERE p.node_id = w.node_id)) \
             ORDER BY updated_at, id LIMIT 1 {lock}) \
             AND status = 'pending' RETURNING {CHAT_COLUMNS}"
        ))
        .bind(worker_id)
        .bind(now)
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(chat_from).transpose()
    }

    /// Records that `worker_id` still runs the chat; false when it no longer owns it.
    pub async fn heartbeat(&self, chat_id: &str, worker_id: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE chats SET heartbeat_at = $1 WHERE id = $2 AND worker_id = $3 AND status = 'running'")
                .bind(now_ms())
                .bind(chat_id)
                .bind(worker_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Running chats whose worker stopped heartbeating before `stale_before` go back to pending.
    pub async fn recover_stale(&self, stale_before: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE chats SET status = 'pending', worker_id = NULL, cut_off = 1, updated_at = $1 \
             WHERE status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $2) RETURNING id",
        )
        .bind(now_ms())
        .bind(stale_before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// On shutdown: this worker's running chats go back to pending, for another worker.
    pub async fn release_worker(&self, worker_id: &str) -> StoreResult<u64> {
        let done = sqlx::query("UPDATE chats SET status = 'pending', worker_id = NULL, cut_off = 1, updated_at = $1 WHERE worker_id = $2 AND status = 'running'")
            .bind(now_ms())
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Stores a message, numbered past every number reserved for the chat so far (by any
    /// process), so that a client that saw any earlier event is sent it. With `owner`, only if
    /// that worker still owns the chat (`None` is returned otherwise, and nothing is written).
    pub async fn insert_message(
        &self,
        chat_id: &str,
        owner: Option<&str>,
        role: Role,
        content: &[MessagePart],
        model: Option<&str>,
        usage: Option<TokenUsage>,
    ) -> StoreResult<Option<Message>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let touched = sqlx::query("UPDATE chats SET last_seq = last_seq + 1, updated_at = $1 WHERE id = $2 AND ($3 IS NULL OR worker_id = $3) RETURNING last_seq")
            .bind(now)
            .bind(chat_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(touched) = touched else { return Ok(None) };
        let seq: i64 = touched.try_get("last_seq")?;
        // Messages without a model call (user, tool, partial) store no counts.
        let count = |f: fn(&TokenUsage) -> i64| usage.as_ref().map(f);
        let row = sqlx::query(&format!(
            "INSERT INTO chat_messages (chat_id, seq, role, content, model, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(chat_id)
        .bind(seq)
        .bind(role.as_str())
        .bind(to_json(content))
        .bind(model)
        .bind(count(|u| u.input))
        .bind(count(|u| u.output))
        .bind(count(|u| u.reasoning))
        .bind(count(|u| u.cache_read))
        .bind(count(|u| u.cache_creation))
        // Never a NULL float: sqlx's Any driver prepares a NULL f64 with a type PostgreSQL then
        // refuses a real f64 for, on the same cached statement. Without counts the cost is moot.
        .bind(usage.as_ref().and_then(|u| u.cost_usd).unwrap_or(0.0))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(message_from(&row)?))
    }

    /// Sets a chat's status. `pending`, `waiting` and `error` release the worker.
    pub async fn set_status(&self, chat_id: &str, status: ChatStatus, last_error: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE chats SET status = $1, last_error = $2, worker_id = CASE WHEN $1 = 'running' THEN worker_id ELSE NULL END, updated_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(last_error)
            .bind(now_ms())
            .bind(chat_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An interrupted running chat: waiting, still owned by its worker until it has stored the
    /// partial step.
    pub async fn mark_interrupted(&self, chat_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE chats SET status = 'waiting', last_error = NULL, updated_at = $1 WHERE id = $2 AND status = 'running'")
            .bind(now_ms())
            .bind(chat_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Queues a message behind the running turn; `None` when the queue is full.
    pub async fn enqueue(&self, chat_id: &str, content: &[MessagePart]) -> StoreResult<Option<QueuedMessage>> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM chat_queued_messages WHERE chat_id = $1")
            .bind(chat_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        if count >= MAX_QUEUED {
            return Ok(None);
        }
        let row = sqlx::query("INSERT INTO chat_queued_messages (chat_id, content, created_at) VALUES ($1, $2, $3) RETURNING id, chat_id, content, created_at")
            .bind(chat_id)
            .bind(to_json(content))
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(queued_from(&row)?))
    }

    /// Removes and returns the oldest queued message.
    pub async fn pop_queued(&self, chat_id: &str) -> StoreResult<Option<QueuedMessage>> {
        let row = sqlx::query(
            "DELETE FROM chat_queued_messages WHERE id = (SELECT id FROM chat_queued_messages WHERE chat_id = $1 ORDER BY promoted DESC, id LIMIT 1) \
             RETURNING id, chat_id, content, created_at",
        )
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(queued_from).transpose()
    }

    /// Deletes a queued message; false when the chat has no such queued message.
    pub async fn delete_queued(&self, chat_id: &str, queued_id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM chat_queued_messages WHERE id = $1 AND chat_id = $2")
            .bind(queued_id)
            .bind(chat_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a queued message to the front of the queue; false when there is no such message.
    pub async fn promote_queued(&self, chat_id: &str, queued_id: i64) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let top: i64 =
            sqlx::query("SELECT COALESCE(MAX(promoted), 0) AS top FROM chat_queued_messages WHERE chat_id = $1")
                .bind(chat_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("top")?;
        let done = sqlx::query("UPDATE chat_queued_messages SET promoted = $1 WHERE id = $2 AND chat_id = $3")
            .bind(top + 1)
            .bind(queued_id)
            .bind(chat_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a user message, deletes every later message and the queue, and makes the chat
    /// pending (taking it from any worker). The edited message is numbered like a new one.
    pub async fn edit_user_message(
        &self,
        chat_id: &str,
        message_id: i64,
        content: &[MessagePart],
    ) -> StoreResult<Message> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let seq: i64 = sqlx::query("UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
            .bind(chat_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("no chat `{chat_id}`")))?
            .try_get("last_seq")?;
        let row = sqlx::query(&format!(
            "UPDATE chat_messages SET content = $1, seq = $2 WHERE id = $3 AND chat_id = $4 AND role = 'user' RETURNING {MESSAGE_COLUMNS}"
        ))
        .bind(to_json(content))
        .bind(seq)
        .bind(message_id)
        .bind(chat_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!("message {message_id} is not a user message of this chat")));
        };
        sqlx::query("DELETE FROM chat_messages WHERE chat_id = $1 AND id > $2")
            .bind(chat_id)
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM chat_queued_messages WHERE chat_id = $1").bind(chat_id).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE chats SET status = 'pending', worker_id = NULL, last_error = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(chat_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        message_from(&row)
    }

    /// The role of a chat's message, if it exists.
    pub async fn message_role(&self, chat_id: &str, message_id: i64) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT role FROM chat_messages WHERE id = $1 AND chat_id = $2")
            .bind(message_id)
            .bind(chat_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("role")?),
            None => None,
        })
    }

    /// Archives or unarchives a chat and all its descendants; returns their ids.
    pub async fn set_archived(&self, chat_id: &str, archived: bool) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM chats WHERE id = $1 UNION ALL SELECT c.id FROM chats c JOIN tree t ON c.parent_chat_id = t.id) \
             UPDATE chats SET archived = $2, updated_at = $3 WHERE id IN (SELECT id FROM tree) RETURNING id",
        )
        .bind(chat_id)
        .bind(i64::from(archived))
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// Every running chat goes back to pending (a lone SQLite server starting: nobody else
    /// can be running them).
    pub async fn recover_all_running(&self) -> StoreResult<u64> {
        let done = sqlx::query("UPDATE chats SET status = 'pending', worker_id = NULL, cut_off = 1, updated_at = $1 WHERE status = 'running'")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Sets the status of a chat `worker_id` still runs (releasing it unless `running`);
    /// false when the worker no longer owns it. `cut_off` marks a run that streamed parts it
    /// did not store.
    pub async fn settle(
        &self,
        chat_id: &str,
        worker_id: &str,
        status: ChatStatus,
        last_error: Option<&str>,
        cut_off: bool,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE chats SET status = $1, last_error = $2, worker_id = NULL, cut_off = CASE WHEN $3 = 1 THEN 1 ELSE cut_off END, updated_at = $4 \
             WHERE id = $5 AND worker_id = $6",
        )
        .bind(status.as_str())
        .bind(last_error)
        .bind(i64::from(cut_off))
        .bind(now_ms())
        .bind(chat_id)
        .bind(worker_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The workers that hold running chats.
    pub async fn running_workers(&self) -> StoreResult<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT worker_id FROM chats WHERE status = 'running' AND worker_id IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| r.try_get("worker_id").map_err(StoreError::from)).collect()
    }

    /// The status and owner of a chat, fresh from the database.
    pub async fn chat_state(&self, chat_id: &str) -> StoreResult<Option<(ChatStatus, Option<String>)>> {
        Ok(self.chat(chat_id).await?.map(|c| (c.status, c.worker_id)))
    }
}
