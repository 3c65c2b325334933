//! Policy versions and the audit log of denials.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreResult, now_ms};

/// One accepted version of the tool policy.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PolicyVersion {
    pub version: i64,
    pub author: String,
    pub note: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(skip)]
    pub text: String,
}

/// A call or capability use that policy denied.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Denial {
    /// Set by the store.
    pub id: i64,
    pub chat_id: String,
    pub tool: String,
    pub plugin: String,
    /// `call_tool`, `use_capability`, or `require_approval` (its rules failed to evaluate).
    pub action: String,
    pub capability: Option<String>,
    pub scope: Option<String>,
    pub decided_by: String,
    pub policy_version: i64,
    pub created_at: i64,
}

fn version_from(row: &sqlx::any::AnyRow) -> StoreResult<PolicyVersion> {
    Ok(PolicyVersion {
        version: row.try_get("version")?,
        author: row.try_get("author")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        text: row.try_get("text")?,
    })
}

fn denial_from(row: &sqlx::any::AnyRow) -> StoreResult<Denial> {
    Ok(Denial {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        tool: row.try_get("tool")?,
        plugin: row.try_get("plugin")?,
        action: row.try_get("action")?,
        capability: row.try_get("capability")?,
        scope: row.try_get("scope")?,
        decided_by: row.try_get("decided_by")?,
        policy_version: row.try_get("policy_version")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// The active policy version's number (0: none stored, the built-in default applies).
    pub async fn policy_version(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM policy_versions")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("v")?)
    }

    pub async fn policy(&self, version: i64) -> StoreResult<Option<PolicyVersion>> {
        let row = sqlx::query("SELECT version, text, author, note, created_at FROM policy_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from).transpose()
    }

    /// Every version, newest first.
    pub async fn policy_versions(&self) -> StoreResult<Vec<PolicyVersion>> {
        let rows =
            sqlx::query("SELECT version, text, author, note, created_at FROM policy_versions ORDER BY version DESC")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(version_from).collect()
    }

    /// Stores a new active version; its number is one more than the latest. Two admins saving
    /// at once cannot take the same number (the primary key refuses the second, which retries).
    pub async fn add_policy_version(&self, text: &str, author: &str, note: &str) -> StoreResult<PolicyVersion> {
        let mut attempts = 0;
        loop {
            let version = self.policy_version().await? + 1;
            let now = now_ms();
            let inserted = sqlx::query(
                "INSERT INTO policy_versions (version, text, author, note, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(version)
            .bind(text)
            .bind(author)
            .bind(note)
            .bind(now)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(PolicyVersion {
                        version,
                        author: author.into(),
                        note: note.into(),
                        created_at: now,
                        text: text.into(),
                    });
                }
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 5 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "policy version taken by another admin's save; trying the next");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn record_denial(&self, denial: &Denial) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO policy_audit (chat_id, tool, plugin, action, capability, scope, decided_by, policy_version, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&denial.chat_id)
        .bind(&denial.tool)
        .bind(&denial.plugin)
        .bind(&denial.action)
        .bind(&denial.capability)
        .bind(&denial.scope)
        .bind(&denial.decided_by)
        .bind(denial.policy_version)
        .bind(denial.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Denials newest first, those with an id below `before` (all when `None`).
    pub async fn denials(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<Denial>> {
        let rows = sqlx::query(
            "SELECT id, chat_id, tool, plugin, action, capability, scope, decided_by, policy_version, created_at FROM policy_audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(denial_from).collect()
    }
}
