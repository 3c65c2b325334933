//! Plugins, administered live by admins: uploaded as components, listed, enabled, disabled,
//! given limits and removed, on every replica without a restart (see `plugin_admin`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::plugin_admin::{AdminError, PluginView};
use crate::plugins::PluginLimitsPatch;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
    /// Whether the plugins to serve with at start are all loaded on this replica.
    pub started: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Load it as soon as it is checked (the default), or keep it stored and disabled.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct PluginPatch {
    /// Whether replicas load it.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "bool")]
    pub enabled: Option<bool>,
    /// Limit overrides over the configured limits; `{}` or `null` clears them.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "Option<PluginLimitsPatch>")]
    pub limits: Option<Option<PluginLimitsPatch>>,
    /// What the plugin reads through its `settings` capability, in `describe` and every call
    /// (it is described again with them); replaces the settings it had. Not for secrets.
    #[serde(default, deserialize_with = "given")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A field that is present: `"limits": null` is a value (clear them), unlike a missing field.
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> ApiError {
        match error {
            AdminError::Refused(reason) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_refused",
                format!("the plugin is refused: {reason}"),
            ),
            AdminError::Invalid(message) => ApiError::bad_request(message),
            AdminError::TooLarge(message) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message),
            AdminError::NotFound(message) => ApiError::not_found(message),
            AdminError::NotManaged(message) => ApiError::new(StatusCode::CONFLICT, "not_managed", message),
            AdminError::Store(e) => e.into(),
        }
    }
}

/// `GET /plugins`
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<PluginList>, ApiError> {
    Ok(Json(PluginList { plugins: state.plugins.list().await?, started: state.plugins.started() }))
}

/// `GET /plugins/{id}`: by an uploaded plugin's SHA-256, or by name.
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    Ok(Json(state.plugins.get(&id).await?))
}

/// `POST /plugins`: the component's bytes as the body (`Content-Type: application/wasm`).
/// 202 while it is checked and compiled (GET it to follow), 200 when these bytes were uploaded
/// before.
pub async fn upload(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence != "application/wasm" && essence != "application/octet-stream" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the component's bytes as the body with `Content-Type: application/wasm`",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the body is empty; send the component's bytes (a `.wasm` file)"));
    }
    let (view, created) = state.plugins.upload(body.to_vec(), query.enabled, &admin.name).await?;
    Ok((if created { StatusCode::ACCEPTED } else { StatusCode::OK }, Json(view)))
}

/// `PATCH /plugins/{id}`: enable, disable, or set limits of an uploaded plugin.
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PluginPatch>,
) -> Result<Json<PluginView>, ApiError> {
    if patch.enabled.is_none() && patch.limits.is_none() && patch.settings.is_none() {
        return Err(ApiError::bad_request("give `enabled`, `limits` or `settings`"));
    }
    let limits = patch.limits.map(Option::unwrap_or_default);
    Ok(Json(state.plugins.configure(&id, patch.enabled, limits, patch.settings).await?))
}

/// `DELETE /plugins/{id}`
pub async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.plugins.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
