//! Secrets admins store for plugins: sealed values and their bindings.

use sqlx::Row;

use super::{Store, StoreError, StoreResult, now_ms};

/// A plugin secret as stored: its value sealed (see `secrets::SecretBox`).
#[derive(Clone)]
pub struct StoredSecret {
    pub name: String,
    pub sealed_value: String,
    pub plugins: Vec<String>,
    pub hosts: Vec<String>,
    pub updated_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn list(row: &sqlx::any::AnyRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("plugin_secrets.{column}: {e}")))
}

fn secret_from(row: &sqlx::any::AnyRow) -> StoreResult<StoredSecret> {
    Ok(StoredSecret {
        name: row.try_get("name")?,
        sealed_value: row.try_get("sealed_value")?,
        plugins: list(row, "plugins")?,
        hosts: list(row, "hosts")?,
        updated_by: row.try_get("updated_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str = "name, sealed_value, plugins, hosts, updated_by, created_at, updated_at";

impl Store {
    /// Stores a secret, or replaces the one of that name (keeping when it was first made).
    pub async fn put_plugin_secret(
        &self,
        name: &str,
        sealed_value: &str,
        plugins: &[String],
        hosts: &[String],
        updated_by: &str,
    ) -> StoreResult<StoredSecret> {
        let now = now_ms();
        let json = |list: &[String]| serde_json::to_string(list).unwrap_or_else(|_| "[]".into());
        let query = format!(
            "INSERT INTO plugin_secrets ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (name) DO UPDATE SET sealed_value = excluded.sealed_value, plugins = excluded.plugins, \
             hosts = excluded.hosts, updated_by = excluded.updated_by, updated_at = excluded.updated_at \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&query)
            .bind(name)
            .bind(sealed_value)
            .bind(json(plugins))
            .bind(json(hosts))
            .bind(updated_by)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        secret_from(&row)
    }

    pub async fn plugin_secret(&self, name: &str) -> StoreResult<Option<StoredSecret>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM plugin_secrets WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(secret_from).transpose()
    }

    /// Every secret, by name.
    pub async fn plugin_secrets(&self) -> StoreResult<Vec<StoredSecret>> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM plugin_secrets ORDER BY name")).fetch_all(&self.pool).await?;
        rows.iter().map(secret_from).collect()
    }

    /// Whether there was a secret of that name to delete.
    pub async fn delete_plugin_secret(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM plugin_secrets WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
