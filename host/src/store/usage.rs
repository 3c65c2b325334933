//! Token usage and cost, summed over model calls (assistant and compaction messages that carry counts).

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreResult};

/// Sums over a set of model calls.
#[derive(Clone, Debug, Default, Serialize, PartialEq, schemars::JsonSchema)]
pub struct UsageTotals {
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
    pub cost_usd: f64,
}

/// One group of a usage report: a model, a root chat or a user.
#[derive(Clone, Debug, Serialize, PartialEq, schemars::JsonSchema)]
pub struct UsageGroup {
    /// The model's name, the root chat's id, or the user's id.
    pub key: String,
    /// The root chat's title or the user's name, where the group has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// Which calls a report covers.
#[derive(Clone, Debug)]
pub struct UsageFilter {
    /// Milliseconds since the epoch, inclusive.
    pub from_ms: i64,
    /// Exclusive.
    pub to_ms: i64,
    /// One user's calls, or everyone's.
    pub owner_id: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub enum UsageGrouping {
    Model,
    RootChat,
    User,
}

const SUMS: &str = "CAST(COUNT(*) AS BIGINT) AS calls, \
    CAST(COALESCE(SUM(m.input_tokens), 0) AS BIGINT) AS input_tokens, \
    CAST(COALESCE(SUM(m.output_tokens), 0) AS BIGINT) AS output_tokens, \
    CAST(COALESCE(SUM(m.reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
    CAST(COALESCE(SUM(m.cache_read_tokens), 0) AS BIGINT) AS cache_read_tokens, \
    CAST(COALESCE(SUM(m.cache_creation_tokens), 0) AS BIGINT) AS cache_creation_tokens, \
    CAST(COALESCE(SUM(m.cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd";

const CALLS: &str = "FROM chat_messages m JOIN chats c ON c.id = m.chat_id \
    WHERE m.role IN ('assistant', 'compaction') AND m.input_tokens IS NOT NULL AND m.created_at >= $1 AND m.created_at < $2 AND ($3 IS NULL OR c.owner_id = $3)";

fn totals_from(row: &sqlx::any::AnyRow) -> StoreResult<UsageTotals> {
    Ok(UsageTotals {
        calls: row.try_get("calls")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        cache_read_tokens: row.try_get("cache_read_tokens")?,
        cache_creation_tokens: row.try_get("cache_creation_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
    })
}

impl Store {
    pub async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals> {
        let row = sqlx::query(&format!("SELECT {SUMS} {CALLS}"))
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(&filter.owner_id)
            .fetch_one(&self.pool)
            .await?;
        totals_from(&row)
    }

    /// Groups, most expensive first.
    pub async fn usage_by(&self, filter: &UsageFilter, grouping: UsageGrouping) -> StoreResult<Vec<UsageGroup>> {
        let (key, label, join, group) = match grouping {
            UsageGrouping::Model => ("COALESCE(m.model, '')", "NULL", "", "COALESCE(m.model, '')"),
            UsageGrouping::RootChat => {
                ("c.root_chat_id", "r.title", "LEFT JOIN chats r ON r.id = c.root_chat_id", "c.root_chat_id, r.title")
            }
            UsageGrouping::User => {
                ("c.owner_id", "u.name", "LEFT JOIN users u ON u.id = c.owner_id", "c.owner_id, u.name")
            }
        };
        let calls =
            CALLS.replacen("JOIN chats c ON c.id = m.chat_id", &format!("JOIN chats c ON c.id = m.chat_id {join}"), 1);
        let sql = format!(
            "SELECT {key} AS group_key, {label} AS group_label, {SUMS} {calls} GROUP BY {group} ORDER BY cost_usd DESC, group_key"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(&filter.owner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageGroup {
                    key: row.try_get("group_key")?,
                    label: row.try_get("group_label")?,
                    totals: totals_from(row)?,
                })
            })
            .collect()
    }
}
