//! Workspaces and their binding to chats.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, new_id, now_ms};

/// Where a workspace is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    /// Its files are in place; the startup script has not run yet.
    Created,
    /// The startup script is running.
    Starting,
    /// The startup script succeeded: commands may run.
    Ready,
    /// The startup script failed; `detail` says how.
    StartError,
    /// The startup script ran past the template's startup timeout.
    StartTimeout,
    /// Stopped by its owner (or by a restart of the server during its start); start it again.
    Stopped,
}

impl WorkspaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceStatus::Created => "created",
            WorkspaceStatus::Starting => "starting",
            WorkspaceStatus::Ready => "ready",
            WorkspaceStatus::StartError => "start_error",
            WorkspaceStatus::StartTimeout => "start_timeout",
            WorkspaceStatus::Stopped => "stopped",
        }
    }

    fn parse(text: &str) -> StoreResult<WorkspaceStatus> {
        Ok(match text {
            "created" => WorkspaceStatus::Created,
            "starting" => WorkspaceStatus::Starting,
            "ready" => WorkspaceStatus::Ready,
            "start_error" => WorkspaceStatus::StartError,
            "start_timeout" => WorkspaceStatus::StartTimeout,
            "stopped" => WorkspaceStatus::Stopped,
            other => return Err(StoreError::Corrupt(format!("unknown workspace status `{other}`"))),
        })
    }

    /// Still on its way to ready or not.
    pub fn is_building(self) -> bool {
        matches!(self, WorkspaceStatus::Created | WorkspaceStatus::Starting)
    }
}

/// A workspace as stored.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Workspace {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub template_id: String,
    /// The validated parameter values the workspace was made with.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Its commands may reach the network (the template allows it; policy decides per call).
    pub network: bool,
    /// Which backend holds it (`local`).
    pub backend: String,
    pub status: WorkspaceStatus,
    /// The startup script's outcome, or why the workspace is not ready.
    pub detail: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The machine whose disk holds its files: with several replicas, only one on that node
    /// runs its commands (and the turns of the chats that use it).
    pub node_id: Option<String>,
}

/// What a new workspace is made of.
pub struct NewWorkspace {
    pub owner_id: String,
    pub name: String,
    pub template_id: String,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub network: bool,
    pub backend: String,
    pub node_id: Option<String>,
}

const COLUMNS: &str =
    "id, owner_id, name, template_id, parameters, network, backend, status, detail, created_at, updated_at, node_id";

fn workspace_from(row: &sqlx::any::AnyRow) -> StoreResult<Workspace> {
    let parameters: String = row.try_get("parameters")?;
    Ok(Workspace {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        name: row.try_get("name")?,
        template_id: row.try_get("template_id")?,
        parameters: serde_json::from_str(&parameters)
            .map_err(|e| StoreError::Corrupt(format!("workspace parameters: {e}")))?,
        network: row.try_get::<i64, _>("network")? != 0,
        backend: row.try_get("backend")?,
        status: WorkspaceStatus::parse(&row.try_get::<String, _>("status")?)?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        node_id: row.try_get("node_id")?,
    })
}

impl Store {
    /// Stores a new workspace in `created`. Names are unique per owner.
    pub async fn create_workspace(&self, new: NewWorkspace) -> StoreResult<Workspace> {
        let taken =
            || StoreError::Conflict(format!("you already have a workspace named `{}`; pick another name", new.name));
        let existing = sqlx::query("SELECT id FROM workspaces WHERE owner_id = $1 AND name = $2")
            .bind(&new.owner_id)
            .bind(&new.name)
            .fetch_optional(&self.pool)
            .await?;
        if existing.is_some() {
            return Err(taken());
        }
        let id = new_id();
        let now = now_ms();
        let parameters = serde_json::Value::Object(new.parameters.clone()).to_string();
        sqlx::query(
            "INSERT INTO workspaces (id, owner_id, name, template_id, parameters, network, backend, status, detail, created_at, updated_at, node_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'created', NULL, $8, $8, $9)",
        )
        .bind(&id)
        .bind(&new.owner_id)
        .bind(&new.name)
        .bind(&new.template_id)
        .bind(parameters)
        .bind(i64::from(new.network))
        .bind(&new.backend)
        .bind(now)
        .bind(&new.node_id)
        .execute(&self.pool)
        .await
        .map_err(|e| match e {
            // The same name created at the same moment by another request.
            sqlx::Error::Database(ref db) if db.is_unique_violation() => taken(),
            other => StoreError::from(other),
        })?;
        self.workspace(&id).await?.ok_or_else(|| StoreError::Corrupt("a workspace vanished as it was created".into()))
    }

    pub async fn workspace(&self, id: &str) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(workspace_from).transpose()
    }

    /// Workspaces of `owner_id`, newest first.
    pub async fn workspaces_of(&self, owner_id: &str) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workspaces WHERE owner_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace_from).collect()
    }

    /// Workspaces in `status`, across owners (recovery at start).
    pub async fn workspaces_in(&self, status: WorkspaceStatus) -> StoreResult<Vec<Workspace>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE status = $1"))
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(workspace_from).collect()
    }

    /// Moves a workspace to `status` when it is in one of `from` (so two starts never both
    /// run the startup script). Returns whether it moved.
    pub async fn transition_workspace(
        &self,
        id: &str,
        from: &[WorkspaceStatus],
        status: WorkspaceStatus,
        detail: Option<&str>,
    ) -> StoreResult<bool> {
        let allowed: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let moved = sqlx::query(&format!(
            "UPDATE workspaces SET status = $1, detail = $2, updated_at = $3 WHERE id = $4 AND status IN ({})",
            allowed.join(", ")
        ))
        .bind(status.as_str())
        .bind(detail)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    /// Workspaces on nodes where no replica is registered any more (their host died, or left
    /// for good) are stopped, saying why; returns their ids. Already stopped ones stay as they are.
    pub async fn stop_workspaces_of_gone_nodes(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE workspaces SET status = 'stopped', updated_at = $1, \
             detail = 'its host (' || node_id || ') stopped answering; start it again once a replica runs on that host' \
             WHERE node_id IS NOT NULL AND status <> 'stopped' AND node_id NOT IN (SELECT node_id FROM replicas) RETURNING id",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// Deletes a workspace and unbinds its chats.
    pub async fn delete_workspace(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE chats SET workspace_id = NULL WHERE workspace_id = $1").bind(id).execute(&mut *tx).await?;
        let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Binds a workspace to a chat tree: the root chat and every chat under it that has none.
    /// Only a tree without a workspace is bound; returns whether it was.
    pub async fn bind_workspace(&self, root_chat_id: &str, workspace_id: &str) -> StoreResult<bool> {
        let bound =
            sqlx::query("UPDATE chats SET workspace_id = $1, updated_at = $2 WHERE id = $3 AND workspace_id IS NULL")
                .bind(workspace_id)
                .bind(now_ms())
                .bind(root_chat_id)
                .execute(&self.pool)
                .await?;
        if bound.rows_affected() == 1 {
            sqlx::query("UPDATE chats SET workspace_id = $1 WHERE root_chat_id = $2 AND workspace_id IS NULL")
                .bind(workspace_id)
                .bind(root_chat_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(bound.rows_affected() == 1)
    }

    /// The workspace a chat works in: its own binding, or else its root chat's.
    pub async fn chat_workspace(&self, chat_id: &str) -> StoreResult<Option<Workspace>> {
        let row = sqlx::query(
            "SELECT COALESCE(c.workspace_id, r.workspace_id) AS workspace_id FROM chats c JOIN chats r ON r.id = c.root_chat_id WHERE c.id = $1",
        )
        .bind(chat_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        match row.try_get::<Option<String>, _>("workspace_id")? {
            Some(id) => self.workspace(&id).await,
            None => Ok(None),
        }
    }
}
