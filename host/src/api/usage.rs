//! `GET /api/v1/usage`: tokens and cost by model and by root chat over a date range, for the
//! caller; admins may ask for another user's (`user=NAME`) or everyone's (`user=all`, which
//! adds a breakdown by user).

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::store::{UsageFilter, UsageGroup, UsageGrouping, UsageTotals};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// The range when none is given.
const DEFAULT_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day (`YYYY-MM-DD`, UTC) or instant (RFC 3339), inclusive.
    from: Option<String>,
    /// Last day (inclusive) or instant (exclusive).
    to: Option<String>,
    /// `all`, or a user's name (admins only; default: the caller).
    user: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UsageReport {
    /// Milliseconds since the epoch, inclusive.
    pub from_ms: i64,
    /// Milliseconds since the epoch, exclusive.
    pub to_ms: i64,
    /// Whose calls: a user's name, or `all`.
    pub user: String,
    pub total: UsageTotals,
    pub by_model: Vec<UsageGroup>,
    pub by_root_chat: Vec<UsageGroup>,
    /// Only for `user=all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_user: Option<Vec<UsageGroup>>,
}

/// A bound of the range in milliseconds; a day as a `to` bound means the end of that day.
fn bound(text: &str, end_of_day: bool) -> Result<i64, ApiError> {
    if let Ok(date) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        let start = date.midnight().assume_utc().unix_timestamp() * 1000;
        return Ok(if end_of_day { start + DAY_MS } else { start });
    }
    OffsetDateTime::parse(text, &Rfc3339).map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64).map_err(|_| {
        ApiError::bad_request(format!(
            "`{text}` is not a date: use YYYY-MM-DD or an RFC 3339 time like 2026-11-01T00:00:00Z"
        ))
    })
}

pub async fn usage(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let to_ms = match &query.to {
        Some(text) => bound(text, true)?,
        None => (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64 + 1,
    };
    let from_ms = match &query.from {
        Some(text) => bound(text, false)?,
        None => to_ms - DEFAULT_DAYS * DAY_MS,
    };
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("`from` must be before `to`"));
    }
    let (owner_id, user) = match query.user.as_deref() {
        None => (Some(caller.id.clone()), caller.name.clone()),
        Some(name) if name == caller.name => (Some(caller.id.clone()), caller.name.clone()),
        Some(_) if !caller.is_admin => {
            return Err(ApiError::forbidden("only admins may see other users' usage; leave out `user` for your own"));
        }
        Some("all") => (None, "all".to_string()),
        Some(name) => {
            let user = state
                .store
                .find_user(name)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("there is no user `{name}`")))?;
            (Some(user.id), user.name)
        }
    };
    let filter = UsageFilter { from_ms, to_ms, owner_id };
    let by_user = match filter.owner_id {
        None => Some(state.store.usage_by(&filter, UsageGrouping::User).await?),
        Some(_) => None,
    };
    Ok(Json(UsageReport {
        from_ms,
        to_ms,
        user,
        total: state.store.usage_totals(&filter).await?,
        by_model: state.store.usage_by(&filter, UsageGrouping::Model).await?,
        by_root_chat: state.store.usage_by(&filter, UsageGrouping::RootChat).await?,
        by_user,
    }))
}
