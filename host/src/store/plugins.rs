//! Plugins admins uploaded: their components (by content hash), checks and configuration.

use sqlx::Row;

use super::{Store, StoreError, StoreResult, now_ms};

/// Where an uploaded plugin stands, across the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Stored; no replica has finished checking it yet.
    Checking,
    /// It passed the checks once: replicas load it while it is enabled.
    Installed,
    /// It failed them; `problem` says why. Kept so the admin sees it; nothing loads it.
    Refused,
}

impl UploadState {
    fn name(self) -> &'static str {
        match self {
            UploadState::Checking => "checking",
            UploadState::Installed => "installed",
            UploadState::Refused => "refused",
        }
    }

    fn parse(text: &str) -> StoreResult<UploadState> {
        match text {
            "checking" => Ok(UploadState::Checking),
            "installed" => Ok(UploadState::Installed),
            "refused" => Ok(UploadState::Refused),
            other => Err(StoreError::Corrupt(format!("uploaded_plugins.state `{other}`"))),
        }
    }
}

/// An uploaded plugin as stored, without its component's bytes.
#[derive(Clone, Debug)]
pub struct UploadedPlugin {
    pub sha256: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub state: UploadState,
    pub problem: Option<String>,
    pub enabled: bool,
    pub imports: Vec<String>,
    /// Limit overrides, a JSON object (see `plugins::PluginLimitsPatch`).
    pub limits: serde_json::Value,
    /// What the plugin reads through its `settings` capability, a JSON object.
    pub settings: serde_json::Value,
    pub size_bytes: i64,
    pub uploaded_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "sha256, name, version, state, problem, enabled, imports, limits, settings, size_bytes, uploaded_by, created_at, updated_at";

fn json<T: serde::de::DeserializeOwned>(row: &sqlx::any::AnyRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("uploaded_plugins.{column}: {e}")))
}

fn uploaded_from(row: &sqlx::any::AnyRow) -> StoreResult<UploadedPlugin> {
    Ok(UploadedPlugin {
        sha256: row.try_get("sha256")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        state: UploadState::parse(&row.try_get::<String, _>("state")?)?,
        problem: row.try_get("problem")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        imports: json(row, "imports")?,
        limits: json(row, "limits")?,
        settings: json(row, "settings")?,
        size_bytes: row.try_get("size_bytes")?,
        uploaded_by: row.try_get("uploaded_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Stores an uploaded component, to be checked. The same bytes uploaded again are the
    /// plugin already stored: returned as it is, with `false`.
    pub async fn add_uploaded_plugin(
        &self,
        sha256: &str,
        component: &[u8],
        imports: &[String],
        enabled: bool,
        uploaded_by: &str,
    ) -> StoreResult<(UploadedPlugin, bool)> {
        let imports = serde_json::to_string(imports).unwrap_or_else(|_| "[]".into());
        let query = format!(
            "INSERT INTO uploaded_plugins (sha256, state, enabled, imports, size_bytes, component, uploaded_by, created_at, updated_at) \
             VALUES ($1, 'checking', $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (sha256) DO NOTHING RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(sha256)
            .bind(enabled as i64)
            .bind(imports)
            .bind(component.len() as i64)
            .bind(component.to_vec())
            .bind(uploaded_by)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok((uploaded_from(&row)?, true)),
            None => {
                let existing = self.uploaded_plugin(sha256).await?;
                existing
                    .map(|p| (p, false))
                    .ok_or_else(|| StoreError::Conflict("the plugin was removed meanwhile".into()))
            }
        }
    }

    /// Every uploaded plugin, oldest first.
    pub async fn uploaded_plugins(&self) -> StoreResult<Vec<UploadedPlugin>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM uploaded_plugins ORDER BY created_at, sha256"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(uploaded_from).collect()
    }

    pub async fn uploaded_plugin(&self, sha256: &str) -> StoreResult<Option<UploadedPlugin>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM uploaded_plugins WHERE sha256 = $1"))
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(uploaded_from).transpose()
    }

    /// The component's bytes.
    pub async fn uploaded_component(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT component FROM uploaded_plugins WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("component")?),
            None => None,
        })
    }

    /// Records the first check's success: the component's name and version. An earlier upload
    /// of the same name is replaced (this is its new version): it is deleted, and its limits
    /// and settings carry over (without one, those set while it was checked stay). A no-op
    /// when the plugin was already checked (by another replica) or removed.
    pub async fn mark_uploaded_installed(&self, sha256: &str, name: &str, version: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let checking = sqlx::query("SELECT state FROM uploaded_plugins WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<String, _>("state"))
            .transpose()?;
        if checking.as_deref() != Some(UploadState::Checking.name()) {
            return Ok(());
        }
        let previous = sqlx::query(
            "SELECT limits, settings FROM uploaded_plugins WHERE name = $1 AND state = 'installed' AND sha256 <> $2 \
             ORDER BY created_at DESC",
        )
        .bind(name)
        .bind(sha256)
        .fetch_optional(&mut *tx)
        .await?;
        let (limits, settings): (Option<String>, Option<String>) = match &previous {
            Some(row) => (Some(row.try_get("limits")?), Some(row.try_get("settings")?)),
            None => (None, None),
        };
        sqlx::query("DELETE FROM uploaded_plugins WHERE name = $1 AND state = 'installed' AND sha256 <> $2")
            .bind(name)
            .bind(sha256)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE uploaded_plugins SET name = $2, version = $3, state = 'installed', problem = NULL, \
             limits = COALESCE($4, limits), settings = COALESCE($5, settings), updated_at = $6 WHERE sha256 = $1",
        )
        .bind(sha256)
        .bind(name)
        .bind(version)
        .bind(limits)
        .bind(settings)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the first check's failure. A no-op once checked.
    pub async fn mark_uploaded_refused(&self, sha256: &str, problem: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE uploaded_plugins SET state = 'refused', problem = $2, updated_at = $3 \
             WHERE sha256 = $1 AND state = 'checking'",
        )
        .bind(sha256)
        .bind(problem)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets whether replicas load it, its limit overrides and its settings; `None` leaves each
    /// as it is.
    pub async fn configure_uploaded_plugin(
        &self,
        sha256: &str,
        enabled: Option<bool>,
        limits: Option<&serde_json::Value>,
        settings: Option<&serde_json::Value>,
    ) -> StoreResult<Option<UploadedPlugin>> {
        let (limits, settings) = (limits.map(|l| l.to_string()), settings.map(|s| s.to_string()));
        let query = format!(
            "UPDATE uploaded_plugins SET enabled = COALESCE($2, enabled), limits = COALESCE($3, limits), \
             settings = COALESCE($4, settings), updated_at = $5 WHERE sha256 = $1 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(sha256)
            .bind(enabled.map(|e| e as i64))
            .bind(limits)
            .bind(settings)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(uploaded_from).transpose()
    }

    /// Whether there was such a plugin to delete.
    pub async fn delete_uploaded_plugin(&self, sha256: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM uploaded_plugins WHERE sha256 = $1").bind(sha256).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
