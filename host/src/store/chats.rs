//! Chats, their messages and their queues.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, StoreResult, new_id, now_ms};
pub use crate::domain::ChatStatus;
use crate::domain::{ChatKind, MessagePart, Role};

/// A chat's metadata (no messages).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Chat {
    pub id: String,
    pub owner_id: String,
    pub parent_chat_id: Option<String>,
    pub root_chat_id: String,
    pub kind: ChatKind,
    pub workspace_id: Option<String>,
    pub title: String,
    pub model: Option<String>,
    pub status: ChatStatus,
    pub last_error: Option<String>,
    pub archived: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    /// The sequence number of the chat's latest durable event.
    pub last_seq: i64,
    #[serde(skip)]
    pub worker_id: Option<String>,
}

pub(super) const CHAT_COLUMNS: &str = "id, owner_id, parent_chat_id, root_chat_id, kind, workspace_id, title, model, status, \
     last_error, archived, created_at, updated_at, last_seq, worker_id";

pub(super) fn chat_from(row: &AnyRow) -> StoreResult<Chat> {
    Ok(Chat {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        parent_chat_id: row.try_get("parent_chat_id")?,
        root_chat_id: row.try_get("root_chat_id")?,
        kind: super::parse_stored("chat kind", &row.try_get::<String, _>("kind")?)?,
        workspace_id: row.try_get("workspace_id")?,
        title: row.try_get("title")?,
        model: row.try_get("model")?,
        status: super::parse_stored("chat status", &row.try_get::<String, _>("status")?)?,
        last_error: row.try_get("last_error")?,
        archived: row.try_get::<i64, _>("archived")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seq: row.try_get("last_seq")?,
        worker_id: row.try_get("worker_id")?,
    })
}

/// A durable message.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Message {
    pub id: i64,
    pub chat_id: String,
    /// The chat event sequence number at which this message was published.
    pub seq: i64,
    pub role: Role,
    pub content: Vec<MessagePart>,
    pub model: Option<String>,
    /// Tokens and cost of the model call that produced this message (assistant messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::TokenUsage>,
    pub created_at: i64,
}

/// The columns [`message_from`] reads.
pub(super) const MESSAGE_COLUMNS: &str = "id, chat_id, seq, role, content, model, input_tokens, output_tokens, reasoning_tokens, \
    cache_read_tokens, cache_creation_tokens, cost_usd, created_at";

impl Message {
    /// The message as API clients see it.
    pub fn public(&self) -> Message {
        Message { content: self.content.iter().map(MessagePart::public).collect(), ..self.clone() }
    }
}

pub(super) fn message_from(row: &AnyRow) -> StoreResult<Message> {
    let content: String = row.try_get("content")?;
    Ok(Message {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        seq: row.try_get("seq")?,
        role: super::parse_stored("message role", &row.try_get::<String, _>("role")?)?,
        content: serde_json::from_str(&content).map_err(|e| StoreError::Corrupt(format!("message content: {e}")))?,
        model: row.try_get("model")?,
        usage: usage_from(row)?,
        created_at: row.try_get("created_at")?,
    })
}

fn usage_from(row: &AnyRow) -> StoreResult<Option<super::TokenUsage>> {
    let Some(input) = row.try_get::<Option<i64>, _>("input_tokens")? else { return Ok(None) };
    let count = |column: &str| row.try_get::<Option<i64>, _>(column).map(Option::unwrap_or_default);
    Ok(Some(super::TokenUsage {
        input,
        output: count("output_tokens")?,
        reasoning: count("reasoning_tokens")?,
        cache_read: count("cache_read_tokens")?,
        cache_creation: count("cache_creation_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
    }))
}

/// A message waiting for the running turn to end.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct QueuedMessage {
    pub id: i64,
    pub chat_id: String,
    pub content: Vec<MessagePart>,
    pub created_at: i64,
}

pub(super) fn queued_from(row: &AnyRow) -> StoreResult<QueuedMessage> {
    let content: String = row.try_get("content")?;
    Ok(QueuedMessage {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        content: serde_json::from_str(&content).map_err(|e| StoreError::Corrupt(format!("queued content: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

/// What creating a chat needs.
pub struct NewChat {
    pub owner_id: String,
    pub parent_chat_id: Option<String>,
    pub root_chat_id: Option<String>,
    pub kind: ChatKind,
    pub workspace_id: Option<String>,
    pub title: String,
    pub model: Option<String>,
    pub content: Vec<MessagePart>,
}

impl NewChat {
    /// A chat a person starts with `content`; its title is made from it until a model names it.
    pub fn root(
        owner_id: &str,
        content: Vec<MessagePart>,
        model: Option<String>,
        workspace_id: Option<String>,
    ) -> NewChat {
        NewChat {
            owner_id: owner_id.to_string(),
            parent_chat_id: None,
            root_chat_id: None,
            kind: ChatKind::Root,
            workspace_id,
            title: crate::domain::parts::fallback_title(&content),
            model,
            content,
        }
    }

    /// A child of `parent` (same owner, tree and model), started with `prompt`. It finds its
    /// workspace through its root chat. A blank `title` is made from the prompt.
    pub fn child_of(parent: &Chat, kind: ChatKind, title: Option<&str>, prompt: &str) -> NewChat {
        let content = vec![MessagePart::text(prompt)];
        let title = match title.map(str::trim).filter(|t| !t.is_empty()) {
            Some(title) => title.chars().take(80).collect(),
            None => crate::domain::parts::fallback_title(&content),
        };
        NewChat {
            owner_id: parent.owner_id.clone(),
            parent_chat_id: Some(parent.id.clone()),
            root_chat_id: Some(parent.root_chat_id.clone()),
            kind,
            workspace_id: None,
            title,
            model: parent.model.clone(),
            content,
        }
    }
}

pub(super) fn to_json(content: &[MessagePart]) -> String {
    serde_json::to_string(content).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Creates a chat with its first user message, pending for a worker.
    pub async fn create_chat(&self, new: NewChat) -> StoreResult<(Chat, Message)> {
        let id = new_id();
        let now = now_ms();
        let root = new.root_chat_id.clone().unwrap_or_else(|| id.clone());
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO chats (id, owner_id, parent_chat_id, root_chat_id, kind, workspace_id, title, model, status, archived, last_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, 1, $9, $9)",
        )
        .bind(&id)
        .bind(&new.owner_id)
        .bind(&new.parent_chat_id)
        .bind(&root)
        .bind(new.kind.as_str())
        .bind(&new.workspace_id)
        .bind(&new.title)
        .bind(&new.model)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let message_id: i64 = sqlx::query(
            "INSERT INTO chat_messages (chat_id, seq, role, content, created_at) VALUES ($1, 1, 'user', $2, $3) RETURNING id",
        )
        .bind(&id)
        .bind(to_json(&new.content))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        // Read back inside the transaction: once committed, a worker may already have
        // claimed the chat, and the creator must see it as it was created.
        let row = sqlx::query(&format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let chat = chat_from(&row)?;
        tx.commit().await?;
        let message = Message {
            id: message_id,
            chat_id: id,
            seq: 1,
            role: Role::User,
            content: new.content,
            model: None,
            usage: None,
            created_at: now,
        };
        Ok((chat, message))
    }

    /// Sets a chat's title; returns the updated chat.
    pub async fn set_title(&self, id: &str, title: &str) -> StoreResult<Option<Chat>> {
        sqlx::query("UPDATE chats SET title = $1, updated_at = $2 WHERE id = $3")
            .bind(title)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.chat(id).await
    }

    /// A chat by id, whoever owns it (for the worker; the API uses [`Store::owned_chat`]).
    /// How many ancestors a chat has: 0 for a root chat.
    pub async fn chat_depth(&self, chat: &Chat) -> StoreResult<i64> {
        let mut depth = 0;
        let mut parent = chat.parent_chat_id.clone();
        while let Some(id) = parent {
            depth += 1;
            if depth > 1024 {
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
        Ok(depth)
    }

    pub async fn chat(&self, id: &str) -> StoreResult<Option<Chat>> {
        let row = sqlx::query(&format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(chat_from).transpose()
    }

    /// A chat by id if `owner_id` owns it.
    pub async fn owned_chat(&self, owner_id: &str, id: &str) -> StoreResult<Option<Chat>> {
        let row = sqlx::query(&format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = $1 AND owner_id = $2"))
            .bind(id)
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(chat_from).transpose()
    }

    /// An owner's chats, most recently updated first.
    pub async fn list_chats(&self, owner_id: &str, archived: bool, limit: i64, offset: i64) -> StoreResult<Vec<Chat>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHAT_COLUMNS} FROM chats WHERE owner_id = $1 AND archived = $2 ORDER BY updated_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(owner_id)
        .bind(i64::from(archived))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(chat_from).collect()
    }

    /// A chat's messages with a sequence number above `after_seq`, in order.
    pub async fn messages(&self, chat_id: &str, after_seq: i64) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE chat_id = $1 AND seq > $2 ORDER BY id"
        ))
        .bind(chat_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from).collect()
    }

    /// The number of the chat's latest stored message (0 when it has none).
    pub async fn last_message_seq(&self, chat_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM chat_messages WHERE chat_id = $1")
            .bind(chat_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("seq")?)
    }

    pub async fn queued_messages(&self, chat_id: &str) -> StoreResult<Vec<QueuedMessage>> {
        let rows = sqlx::query(
            "SELECT id, chat_id, content, created_at FROM chat_queued_messages WHERE chat_id = $1 ORDER BY id",
        )
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(queued_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas number a chat's messages each in their own process: the database itself must
    /// refuse a second message with a number already used.
    #[tokio::test]
    async fn the_database_refuses_two_messages_with_one_number_in_a_chat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let owner = store.create_user("alice", false).await.unwrap();
        let (chat, first) =
            store.create_chat(NewChat::root(&owner.id, vec![MessagePart::text("hi")], None, None)).await.unwrap();
        let duplicate = sqlx::query(
            "INSERT INTO chat_messages (chat_id, seq, role, content, created_at) VALUES ($1, $2, 'user', '[]', 0)",
        )
        .bind(&chat.id)
        .bind(first.seq)
        .execute(&store.pool)
        .await;
        assert!(duplicate.is_err(), "a second message numbered {} was stored", first.seq);
        let other =
            store.create_chat(NewChat::root(&owner.id, vec![MessagePart::text("hi")], None, None)).await.unwrap().1;
        assert_eq!(other.seq, first.seq, "numbers are per chat: another chat uses the same one");
    }
}
