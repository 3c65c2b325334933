//! The deployment's system prompt (admins) and each user's own prompt.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Caller};
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::chat::prompt::{MAX_PROMPT_BYTES, SYSTEM_PROMPT_SETTING};

/// A prompt; `null` (or empty) removes it.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub prompt: Option<String>,
}

fn checked(prompt: Option<String>) -> Result<Option<String>, ApiError> {
    let prompt = prompt.filter(|p| !p.trim().is_empty());
    if let Some(text) = &prompt
        && text.len() > MAX_PROMPT_BYTES
    {
        return Err(ApiError::bad_request(format!(
            "the prompt is {} bytes; the limit is {MAX_PROMPT_BYTES} (128 KiB)",
            text.len()
        )));
    }
    Ok(prompt)
}

pub async fn get_system_prompt(State(state): State<AppState>, _admin: Admin) -> Result<Json<Prompt>, ApiError> {
    Ok(Json(Prompt { prompt: state.store.setting(SYSTEM_PROMPT_SETTING).await? }))
}

pub async fn put_system_prompt(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<Prompt>,
) -> Result<Json<Prompt>, ApiError> {
    let prompt = checked(body.prompt)?;
    state.store.set_setting(SYSTEM_PROMPT_SETTING, prompt.as_deref()).await?;
    Ok(Json(Prompt { prompt }))
}

pub async fn get_user_prompt(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<Prompt>, ApiError> {
    Ok(Json(Prompt { prompt: state.store.user_prompt(&user.id).await? }))
}

pub async fn put_user_prompt(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<Prompt>,
) -> Result<Json<Prompt>, ApiError> {
    let prompt = checked(body.prompt)?;
    state.store.set_user_prompt(&user.id, prompt.as_deref()).await?;
    Ok(Json(Prompt { prompt }))
}
