//! Tool calls waiting for a person's approval, their answers, and the tools a person approved
//! for a whole chat. Every state change is a conditional update, so that two replicas (or a
//! person and a deadline) answering at once leave exactly one answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult, new_id, now_ms};

/// Where an approval stands.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for the chat's owner.
    Pending,
    Approved,
    Denied,
    /// Nobody answered before its deadline: the call did not run.
    Expired,
    /// The turn ended (the person interrupted it) before an answer.
    Cancelled,
}

/// How far an approval reaches.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ApprovalScope {
    /// This call only.
    Once,
    /// This call, and every later call of the same tool in the same chat.
    Chat,
}

/// A tool call that the policy says needs a person's approval.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ToolApproval {
    pub id: String,
    pub chat_id: String,
    pub root_chat_id: String,
    /// Who answers: the owner of the chat (and of its root chat).
    pub owner_id: String,
    /// The model's id of the call, as in the chat's messages.
    pub tool_call_id: String,
    pub tool: String,
    pub arguments: Value,
    /// The `@id`s of the rules that asked for approval.
    pub rule: String,
    pub status: ApprovalStatus,
    pub scope: Option<ApprovalScope>,
    /// The person's reason for a denial, which the model reads.
    pub reason: Option<String>,
    pub answered_by: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// When it turns into a denial if nobody answers.
    pub deadline_at: i64,
    pub answered_at: Option<i64>,
    /// When the approved call started (set once: a restart never runs it twice).
    #[serde(skip)]
    pub started_at: Option<i64>,
}

/// What a step asks: one call needing approval.
pub struct NewApproval<'a> {
    pub chat_id: &'a str,
    pub root_chat_id: &'a str,
    pub owner_id: &'a str,
    pub tool_call_id: &'a str,
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub rule: &'a str,
    pub deadline_at: i64,
}

const COLUMNS: &str = "id, chat_id, root_chat_id, owner_id, tool_call_id, tool, arguments, rule, status, scope, \
     reason, answered_by, created_at, deadline_at, answered_at, started_at";

fn approval_from(row: &AnyRow) -> StoreResult<ToolApproval> {
    let arguments: String = row.try_get("arguments")?;
    let scope: Option<String> = row.try_get("scope")?;
    Ok(ToolApproval {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        root_chat_id: row.try_get("root_chat_id")?,
        owner_id: row.try_get("owner_id")?,
        tool_call_id: row.try_get("tool_call_id")?,
        tool: row.try_get("tool")?,
        arguments: serde_json::from_str(&arguments).unwrap_or(Value::String(arguments)),
        rule: row.try_get("rule")?,
        status: super::parse_stored("approval status", &row.try_get::<String, _>("status")?)?,
        scope: scope.map(|s| super::parse_stored("approval scope", &s)).transpose()?,
        reason: row.try_get("reason")?,
        answered_by: row.try_get("answered_by")?,
        created_at: row.try_get("created_at")?,
        deadline_at: row.try_get("deadline_at")?,
        answered_at: row.try_get("answered_at")?,
        started_at: row.try_get("started_at")?,
    })
}

impl Store {
    /// Asks for approval of a call; asking again for the same call (after a restart) returns
    /// the approval already stored, with its deadline and any answer.
    pub async fn request_approval(&self, new: NewApproval<'_>) -> StoreResult<ToolApproval> {
        let query = format!(
            "INSERT INTO tool_approvals (id, chat_id, root_chat_id, owner_id, tool_call_id, tool, arguments, rule, status, created_at, deadline_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) ON CONFLICT (chat_id, tool_call_id) DO NOTHING RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(new_id())
            .bind(new.chat_id)
            .bind(new.root_chat_id)
            .bind(new.owner_id)
            .bind(new.tool_call_id)
            .bind(new.tool)
            .bind(new.arguments.to_string())
            .bind(new.rule)
            .bind(now_ms())
            .bind(new.deadline_at)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => approval_from(&row),
            None => self
                .approval_of_call(new.chat_id, new.tool_call_id)
                .await?
                .ok_or_else(|| super::StoreError::Conflict("the approval was removed while it was asked for".into())),
        }
    }

    pub async fn approval(&self, id: &str) -> StoreResult<Option<ToolApproval>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tool_approvals WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval_from).transpose()
    }

    /// The approvals with these ids, in no particular order (one read for a step's calls).
    pub async fn approvals(&self, ids: &[String]) -> StoreResult<Vec<ToolApproval>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!("SELECT {COLUMNS} FROM tool_approvals WHERE id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(approval_from).collect()
    }

    pub async fn approval_of_call(&self, chat_id: &str, tool_call_id: &str) -> StoreResult<Option<ToolApproval>> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM tool_approvals WHERE chat_id = $1 AND tool_call_id = $2"))
                .bind(chat_id)
                .bind(tool_call_id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(approval_from).transpose()
    }

    /// The chat's approvals, oldest first: those still waiting, or (with `answered_since`) also
    /// those answered since then.
    pub async fn approvals_of_chat(
        &self,
        chat_id: &str,
        answered_since: Option<i64>,
    ) -> StoreResult<Vec<ToolApproval>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tool_approvals WHERE chat_id = $1 AND (status = 'pending' OR answered_at >= $2) \
             ORDER BY created_at, tool_call_id"
        ))
        .bind(chat_id)
        .bind(answered_since.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from).collect()
    }

    /// Every approval waiting for `owner_id`, across their chats, oldest first.
    pub async fn pending_approvals_of(&self, owner_id: &str) -> StoreResult<Vec<ToolApproval>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM tool_approvals WHERE owner_id = $1 AND status = 'pending' ORDER BY created_at, tool_call_id"
        ))
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from).collect()
    }

    /// Answers a pending approval (approved with a scope, or denied with a reason). `None` when
    /// it was answered (or expired) before. Approved for the chat, the tool's later calls in
    /// the chat run without asking: remembered in the same transaction.
    pub async fn answer_approval(
        &self,
        id: &str,
        status: ApprovalStatus,
        scope: Option<ApprovalScope>,
        reason: Option<&str>,
        answered_by: &str,
    ) -> StoreResult<Option<ToolApproval>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "UPDATE tool_approvals SET status = $2, scope = $3, reason = $4, answered_by = $5, answered_at = $6 \
             WHERE id = $1 AND status = 'pending' RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(<&str>::from(status))
        .bind(scope.map(<&str>::from))
        .bind(reason)
        .bind(answered_by)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let answered = approval_from(&row)?;
        if status == ApprovalStatus::Approved && scope == Some(ApprovalScope::Chat) {
            sqlx::query(
                "INSERT INTO chat_tool_approvals (chat_id, tool, approved_by, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (chat_id, tool) DO NOTHING",
            )
            .bind(&answered.chat_id)
            .bind(&answered.tool)
            .bind(answered_by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(answered))
    }

    /// A pending approval whose deadline passed becomes `expired`. `None` when it was answered
    /// first (or its deadline has not passed).
    pub async fn expire_approval(&self, id: &str) -> StoreResult<Option<ToolApproval>> {
        let now = now_ms();
        let row = sqlx::query(&format!(
            "UPDATE tool_approvals SET status = 'expired', answered_at = $2 \
             WHERE id = $1 AND status = 'pending' AND deadline_at <= $2 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from).transpose()
    }

    /// The chat's pending approvals become `cancelled` (its turn ended); returns them.
    pub async fn cancel_pending_approvals(&self, chat_id: &str) -> StoreResult<Vec<ToolApproval>> {
        let rows = sqlx::query(&format!(
            "UPDATE tool_approvals SET status = 'cancelled', answered_at = $2 \
             WHERE chat_id = $1 AND status = 'pending' RETURNING {COLUMNS}"
        ))
        .bind(chat_id)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from).collect()
    }

    /// Marks an approved call as started; false when it had started before.
    pub async fn start_approved_call(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE tool_approvals SET started_at = $2 WHERE id = $1 AND status = 'approved' AND started_at IS NULL",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether the chat's owner approved `tool` for the whole chat.
    pub async fn tool_approved_for_chat(&self, chat_id: &str, tool: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 AS found FROM chat_tool_approvals WHERE chat_id = $1 AND tool = $2")
            .bind(chat_id)
            .bind(tool)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
