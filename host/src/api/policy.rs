//! The tool policy, administered by admins: read, replace (validated first), versions and
//! restore, explain, and the audit log of denials.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::chat::notices::{Notice, Reload};
use crate::domain::ChatKind;
use crate::policy::{Explanation, Principal, Saved};
use crate::store::{Denial, PolicyVersion};

/// The policy in force.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PolicyView {
    /// Cedar text.
    pub policy: String,
    /// 0 while the built-in default is in force.
    pub version: i64,
    pub author: String,
    pub created_at: i64,
    /// `default` (built in) or `custom`.
    pub source: &'static str,
    /// The schema policies are validated against (Cedar schema syntax).
    pub schema: &'static str,
    /// Set when the stored policy fails to load: every tool is denied until a valid one is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    /// Cedar text.
    pub policy: String,
}

pub async fn get(State(state): State<AppState>, _admin: Admin) -> Result<Json<PolicyView>, ApiError> {
    let active = state.policy.refresh().await?;
    Ok(Json(PolicyView {
        policy: active.text.clone(),
        version: active.version,
        author: active.author.clone(),
        created_at: active.created_at,
        source: if active.version == 0 { "default" } else { "custom" },
        schema: crate::policy::SCHEMA,
        problem: active.problem.clone(),
    }))
}

use crate::policy::MAX_POLICY_BYTES;

pub async fn put(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<NewPolicy>,
) -> Result<Json<Saved>, ApiError> {
    if body.policy.len() > MAX_POLICY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
            body.policy.len()
        )));
    }
    let saved = state.policy.save(&body.policy, &admin.name, "").await?;
    state.chats.hub.announce(Notice::Reload { what: Reload::Policy });
    Ok(Json(saved))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Versions {
    /// Newest first; the highest is in force. Version 0 (the built-in default) is not listed
    /// but can be restored.
    pub versions: Vec<PolicyVersion>,
}

pub async fn versions(State(state): State<AppState>, _admin: Admin) -> Result<Json<Versions>, ApiError> {
    Ok(Json(Versions { versions: state.store.policy_versions().await? }))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VersionText {
    #[serde(flatten)]
    pub version: PolicyVersion,
    pub policy: String,
}

pub async fn version(
    State(state): State<AppState>,
    _admin: Admin,
    Path(version): Path<i64>,
) -> Result<Json<VersionText>, ApiError> {
    if version == 0 {
        let builtin = PolicyVersion {
            version: 0,
            author: "built-in".into(),
            note: "the default policy".into(),
            created_at: 0,
            text: String::new(),
        };
        return Ok(Json(VersionText { policy: crate::policy::DEFAULT_POLICY.to_string(), version: builtin }));
    }
    let found = state.store.policy(version).await?.ok_or(crate::policy::PolicyError::NoSuchVersion(version))?;
    Ok(Json(VersionText { policy: found.text.clone(), version: found }))
}

pub async fn restore(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(version): Path<i64>,
) -> Result<Json<Saved>, ApiError> {
    let restored = state.policy.restore(version, &admin.name).await?;
    state.chats.hub.announce(Notice::Reload { what: Reload::Policy });
    Ok(Json(restored))
}

/// Deepest synthetic chat `explain` takes (chats are never deeper than `[agents] max_depth`).
const MAX_EXPLAIN_DEPTH: i64 = 64;

/// Whom to explain: an existing chat, or a synthetic chat described by its attributes.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    pub chat_id: Option<String>,
    pub kind: Option<ChatKind>,
    #[schemars(range(min = 0, max = 64))]
    pub depth: Option<i64>,
    pub owner: Option<String>,
    /// `admin` or `member` (default).
    #[schemars(extend("enum" = ["admin", "member"]))]
    pub owner_role: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ExplainResponse {
    pub policy_version: i64,
    /// Plugins still compiling on this replica: their tools are missing from this explanation
    /// until they are in service.
    pub plugins_compiling: Vec<crate::plugins::Compiling>,
    #[serde(flatten)]
    pub explanation: Explanation,
}

pub async fn explain(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    let principal = principal(&state, body).await?;
    let active = state.policy.refresh().await?;
    Ok(Json(ExplainResponse {
        policy_version: active.version,
        plugins_compiling: state.plugins.compiling(),
        explanation: active.rules.explain(&principal),
    }))
}

async fn principal(state: &AppState, body: ExplainRequest) -> Result<Principal, ApiError> {
    if let Some(chat_id) = body.chat_id {
        if body.kind.is_some()
            || body.depth.is_some()
            || body.owner.is_some()
            || body.owner_role.is_some()
            || body.model.is_some()
        {
            return Err(ApiError::bad_request(
                "give either `chat_id` or a synthetic chat (`kind`, `depth`, `owner`, `owner_role`, `model`), not both",
            ));
        }
        let chat = state
            .store
            .chat(&chat_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("chat {chat_id} not found")))?;
        // The model the chat's turns use: its own, or the default when it has none or it was deleted.
        let model = match state.catalog.resolve(chat.model.as_deref()).await {
            Ok(resolved) => resolved.record.name,
            Err(_) => chat.model.clone().unwrap_or_default(),
        };
        return Ok(state.policy.principal(&chat, &model).await?);
    }
    let owner_role = body.owner_role.unwrap_or_else(|| "member".into());
    if owner_role != "admin" && owner_role != "member" {
        return Err(ApiError::bad_request(format!("`owner_role` is `{owner_role}`; use `admin` or `member`")));
    }
    let kind = body.kind.unwrap_or_default();
    let depth = body.depth.unwrap_or(if kind == ChatKind::Root { 0 } else { 1 });
    if !(0..=MAX_EXPLAIN_DEPTH).contains(&depth) {
        return Err(ApiError::bad_request(format!("`depth` is {depth}; use 0 (a root chat) to {MAX_EXPLAIN_DEPTH}")));
    }
    Ok(Principal {
        id: "synthetic".into(),
        kind,
        depth,
        owner: body.owner.unwrap_or_default(),
        owner_role,
        model: body.model.unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Denials older than this one (the `next_before` of the previous page).
    #[schemars(range(min = 1))]
    pub before: Option<i64>,
    /// 1 to 500; default 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct AuditPage {
    /// Newest first.
    pub denials: Vec<Denial>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` is {limit}; use 1 to 500")));
    }
    if let Some(before) = query.before.filter(|b| *b < 1) {
        return Err(ApiError::bad_request(format!(
            "`before` is {before}; give the `next_before` of the previous page (at least 1)"
        )));
    }
    let denials = state.store.denials(query.before, limit).await?;
    let next_before = (denials.len() as i64 == limit).then(|| denials.last().map(|d| d.id)).flatten();
    Ok(Json(AuditPage { denials, next_before }))
}
