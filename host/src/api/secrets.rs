//! Plugin secrets, administered by admins: stored and replaced by name, listed with their
//! bindings, deleted. A value goes in and never comes out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::vault::{NewSecret, SecretInfo, VaultError};

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SecretList {
    /// By name; values are never returned.
    pub secrets: Vec<SecretInfo>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// Printable ASCII (it is sent in HTTP headers), at most 8 KiB. Never returned.
    #[schemars(length(min = 1, max = 8192), regex(pattern = r"^[\x20-\x7e\t]+$"))]
    pub value: String,
    /// Plugins that may ask for it, by name.
    #[schemars(length(min = 1))]
    pub plugins: Vec<String>,
    /// Hosts its value may be sent to: `api.example.com`, `api.example.com:8443` or
    /// `*.example.com`, over HTTPS only; with `http://` in front, over plain HTTP too.
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretInput").field("plugins", &self.plugins).field("hosts", &self.hosts).finish()
    }
}

impl From<VaultError> for ApiError {
    fn from(error: VaultError) -> ApiError {
        match error {
            VaultError::Invalid(message) => ApiError::bad_request(message),
            VaultError::NotFound(message) => ApiError::not_found(message),
            VaultError::Store(e) => e.into(),
        }
    }
}

/// `GET /secrets`
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<SecretList>, ApiError> {
    Ok(Json(SecretList { secrets: state.vault.list().await? }))
}

/// `PUT /secrets/{name}`
pub async fn put(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SecretInput>,
) -> Result<Json<SecretInfo>, ApiError> {
    let secret = NewSecret { name: &name, value: &body.value, plugins: &body.plugins, hosts: &body.hosts };
    Ok(Json(state.vault.put(secret, &admin.name).await?))
}

/// `DELETE /secrets/{name}`
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.vault.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
