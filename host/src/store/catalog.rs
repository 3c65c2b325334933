//! Providers, model configs, prompts and settings as stored. API keys arrive here already
//! sealed (see `secrets`); this module never sees one in the clear.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, StoreResult, now_ms};
use crate::domain::{ComputerTool, ProviderKind};

/// Where a provider or model config came from. Config-sourced ones are re-applied at every
/// start; API-sourced ones are only changed through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    Config,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Config => "config",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProviderRecord {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    /// Sealed.
    pub api_key: Option<String>,
    pub source: Source,
    pub updated_at: i64,
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub input: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub output: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub cache_read: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub cache_write: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelRecord {
    pub id: String,
    pub name: String,
    pub provider_id: String,
    pub model: String,
    pub context_window: i64,
    pub max_output_tokens: Option<i64>,
    pub thinking_budget: Option<i64>,
    pub compaction_threshold: f64,
    pub pricing: Pricing,
    pub is_default: bool,
    pub for_titles: bool,
    /// The model computer-use subagents run on (at most one).
    pub for_computer_use: bool,
    /// The Anthropic computer tool version it takes, if any.
    pub computer_tool: Option<ComputerTool>,
    pub source: Source,
}

const PROVIDER_COLUMNS: &str = "id, name, kind, base_url, api_key, source, updated_at";
const MODEL_COLUMNS: &str = "id, name, provider_id, model, context_window, max_output_tokens, thinking_budget, compaction_threshold, \
     input_price, output_price, cache_read_price, cache_write_price, is_default, for_titles, source, for_computer_use, computer_tool";

fn source_from(text: &str) -> Source {
    if text == "config" { Source::Config } else { Source::Api }
}

fn provider_from(row: &sqlx::any::AnyRow) -> StoreResult<ProviderRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(ProviderRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: super::parse_stored::<ProviderKind>("provider kind", &kind)?,
        base_url: row.try_get("base_url")?,
        api_key: row.try_get("api_key")?,
        source: source_from(&row.try_get::<String, _>("source")?),
        updated_at: row.try_get("updated_at")?,
    })
}

fn model_from(row: &sqlx::any::AnyRow) -> StoreResult<ModelRecord> {
    Ok(ModelRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        provider_id: row.try_get("provider_id")?,
        model: row.try_get("model")?,
        context_window: row.try_get("context_window")?,
        max_output_tokens: row.try_get("max_output_tokens")?,
        thinking_budget: row.try_get("thinking_budget")?,
        compaction_threshold: row.try_get("compaction_threshold")?,
        pricing: Pricing {
            input: row.try_get("input_price")?,
            output: row.try_get("output_price")?,
            cache_read: row.try_get("cache_read_price")?,
            cache_write: row.try_get("cache_write_price")?,
        },
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        for_titles: row.try_get::<i64, _>("for_titles")? != 0,
        source: source_from(&row.try_get::<String, _>("source")?),
        for_computer_use: row.try_get::<i64, _>("for_computer_use")? != 0,
        computer_tool: match row.try_get::<Option<String>, _>("computer_tool")? {
            Some(text) => {
                Some(ComputerTool::parse(&text).ok_or_else(|| {
                    StoreError::Corrupt(format!("model config has an unknown computer tool `{text}`"))
                })?)
            }
            None => None,
        },
    })
}

impl Store {
    pub async fn providers(&self) -> StoreResult<Vec<ProviderRecord>> {
        let rows = sqlx::query(&format!("SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(provider_from).collect()
    }

    /// A provider by id or by name.
    pub async fn provider(&self, id_or_name: &str) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = $1 OR name = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(provider_from).transpose()
    }

    /// Creates a provider; the id is chosen first so the key can be sealed for it.
    pub async fn insert_provider(&self, record: &ProviderRecord) -> StoreResult<()> {
        if self.provider(&record.name).await?.is_some() {
            return Err(StoreError::Conflict(format!("a provider named `{}` already exists", record.name)));
        }
        let now = now_ms();
        sqlx::query("INSERT INTO providers (id, name, kind, base_url, api_key, source, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)")
            .bind(&record.id)
            .bind(&record.name)
            .bind(record.kind.as_str())
            .bind(&record.base_url)
            .bind(&record.api_key)
            .bind(record.source.as_str())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_provider(&self, record: &ProviderRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE providers SET kind = $1, base_url = $2, api_key = $3, source = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(record.kind.as_str())
        .bind(&record.base_url)
        .bind(&record.api_key)
        .bind(record.source.as_str())
        .bind(now_ms())
        .bind(&record.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a provider that no model config uses.
    pub async fn delete_provider(&self, id: &str) -> StoreResult<bool> {
        let users: Vec<String> = sqlx::query("SELECT name FROM model_configs WHERE provider_id = $1 ORDER BY name")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the provider is used by model configs {}; delete them or move them to another provider first",
                users.join(", ")
            )));
        }
        Ok(sqlx::query("DELETE FROM providers WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn models(&self) -> StoreResult<Vec<ModelRecord>> {
        let rows = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM model_configs ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(model_from).collect()
    }

    /// A model config by id or by name.
    pub async fn model(&self, id_or_name: &str) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM model_configs WHERE id = $1 OR name = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_from).transpose()
    }

    pub async fn default_model(&self) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {MODEL_COLUMNS} FROM model_configs WHERE is_default = 1 ORDER BY name LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(model_from).transpose()
    }

    /// The model marked to write titles, if any.
    pub async fn title_model(&self) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM model_configs WHERE for_titles = 1 LIMIT 1"))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_from).transpose()
    }

    /// The model marked for computer use, if any.
    pub async fn computer_use_model(&self) -> StoreResult<Option<ModelRecord>> {
        let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM model_configs WHERE for_computer_use = 1 LIMIT 1"))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(model_from).transpose()
    }

    /// Creates or replaces (by id) a model config. Making it the default unmarks the others
    /// in the same transaction, so there is never more than one.
    pub async fn save_model(&self, record: &ModelRecord) -> StoreResult<()> {
        if let Some(other) = self.model(&record.name).await?.filter(|m| m.id != record.id) {
            return Err(StoreError::Conflict(format!("a model config named `{}` already exists", other.name)));
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if record.is_default {
            sqlx::query("UPDATE model_configs SET is_default = 0 WHERE id <> $1")
                .bind(&record.id)
                .execute(&mut *tx)
                .await?;
        }
        if record.for_titles {
            sqlx::query("UPDATE model_configs SET for_titles = 0 WHERE id <> $1")
                .bind(&record.id)
                .execute(&mut *tx)
                .await?;
        }
        if record.for_computer_use {
            sqlx::query("UPDATE model_configs SET for_computer_use = 0 WHERE id <> $1")
                .bind(&record.id)
                .execute(&mut *tx)
                .await?;
        }
        // An upsert, so that an update keeps the row's `created_at`.
        sqlx::query(&format!(
            "INSERT INTO model_configs ({MODEL_COLUMNS}, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, provider_id = excluded.provider_id, model = excluded.model, \
             context_window = excluded.context_window, max_output_tokens = excluded.max_output_tokens, thinking_budget = excluded.thinking_budget, \
             compaction_threshold = excluded.compaction_threshold, input_price = excluded.input_price, output_price = excluded.output_price, \
             cache_read_price = excluded.cache_read_price, cache_write_price = excluded.cache_write_price, is_default = excluded.is_default, \
             for_titles = excluded.for_titles, source = excluded.source, for_computer_use = excluded.for_computer_use, \
             computer_tool = excluded.computer_tool, updated_at = excluded.updated_at"
        ))
        .bind(&record.id)
        .bind(&record.name)
        .bind(&record.provider_id)
        .bind(&record.model)
        .bind(record.context_window)
        .bind(record.max_output_tokens)
        .bind(record.thinking_budget)
        .bind(record.compaction_threshold)
        .bind(record.pricing.input)
        .bind(record.pricing.output)
        .bind(record.pricing.cache_read)
        .bind(record.pricing.cache_write)
        .bind(i64::from(record.is_default))
        .bind(i64::from(record.for_titles))
        .bind(record.source.as_str())
        .bind(i64::from(record.for_computer_use))
        .bind(record.computer_tool.map(ComputerTool::as_str))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_model(&self, id: &str) -> StoreResult<bool> {
        Ok(sqlx::query("DELETE FROM model_configs WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected()
            > 0)
    }

    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Sets (or with `None`, removes) a deployment setting.
    pub async fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(&mut *tx).await?;
        if let Some(value) = value {
            sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)")
                .bind(key)
                .bind(value)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user_prompt(&self, user_id: &str) -> StoreResult<Option<String>> {
        let row =
            sqlx::query("SELECT prompt FROM users WHERE id = $1").bind(user_id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<Option<String>, _>("prompt")).transpose()?.flatten())
    }

    pub async fn set_user_prompt(&self, user_id: &str, prompt: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE users SET prompt = $1 WHERE id = $2")
            .bind(prompt)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
