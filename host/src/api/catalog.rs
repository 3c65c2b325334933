//! Providers and model configs: admins administer them, every user lists the models.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::auth::{Admin, Caller};
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::catalog::{ModelInput, ModelView, NewProvider, ProviderPatch, ProviderView};
use crate::store::Source;

#[derive(Serialize, schemars::JsonSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ModelList {
    /// The model chats use when they name none (and when theirs was deleted).
    pub default_model: Option<String>,
    pub models: Vec<ModelView>,
    /// Plugins still compiling on this replica: their tools are not offered to models yet.
    pub plugins_compiling: Vec<crate::plugins::Compiling>,
}

pub async fn list_providers(State(state): State<AppState>, _admin: Admin) -> Result<Json<ProviderList>, ApiError> {
    Ok(Json(ProviderList { providers: state.catalog.providers().await? }))
}

pub async fn create_provider(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<NewProvider>,
) -> Result<(StatusCode, Json<ProviderView>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.catalog.create_provider(body, Source::Api).await?)))
}

pub async fn update_provider(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderPatch>,
) -> Result<Json<ProviderView>, ApiError> {
    Ok(Json(state.catalog.update_provider(&id, body, Source::Api).await?))
}

pub async fn delete_provider(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.catalog.delete_provider(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every user may see which models exist and which are usable.
pub async fn list_models(State(state): State<AppState>, _caller: Caller) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(ModelList {
        default_model: state.catalog.default_model_name().await?,
        models: state.catalog.models().await?,
        plugins_compiling: state.plugins.compiling(),
    }))
}

pub async fn create_model(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<ModelInput>,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    Ok((StatusCode::CREATED, Json(state.catalog.save_model(None, body, Source::Api).await?)))
}

pub async fn update_model(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModelInput>,
) -> Result<Json<ModelView>, ApiError> {
    Ok(Json(state.catalog.save_model(Some(&id), body, Source::Api).await?))
}

pub async fn delete_model(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.catalog.delete_model(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
