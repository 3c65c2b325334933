//! `/api/v1/chats`: create, list, get, messages.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::chat::service::{BusyBehavior, SendError, SendOutcome};
use crate::domain::parts::{MessagePart, validate_user_content};
use crate::store::{Chat, NewChat};

/// What a person may send, as the API documents it: at least one part, and only the part types
/// people send (the others only the model produces; `validate_user_content` refuses them).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct UserContent(#[schemars(length(min = 1))] Vec<UserPart>);

#[derive(schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(dead_code)]
enum UserPart {
    Text {
        /// Not only white space.
        #[schemars(regex(pattern = r"[^\s]"))]
        text: String,
    },
    FileReference {
        file_name: String,
        #[schemars(range(min = 0, max = 4294967295u32))]
        start_line: u32,
        #[schemars(range(min = 0, max = 4294967295u32))]
        end_line: u32,
        content: String,
    },
    Image {
        media_type: String,
        /// Base64.
        data: String,
    },
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChat {
    #[schemars(with = "UserContent")]
    content: Vec<MessagePart>,
    model: Option<String>,
    /// One of the caller's workspaces, for the chat (and its subagents) to work in.
    workspace_id: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<CreateChat>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    validate_user_content(&body.content, state.limits.max_message_bytes).map_err(ApiError::bad_request)?;
    let model = match body.model {
        Some(name) => {
            state.catalog.check_model_name(&name).await?;
            Some(name)
        }
        None => state.catalog.default_model_name().await?,
    };
    if let Some(workspace_id) = &body.workspace_id {
        super::workspaces::owned_workspace(&state, &user, workspace_id).await?;
    }
    let chat = state.chats.create(NewChat::root(&user.id, body.content, model, body.workspace_id)).await?;
    Ok((StatusCode::CREATED, Json(chat)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    archived: bool,
    limit: Option<i64>,
    #[serde(default)]
    offset: i64,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) || query.offset < 0 {
        return Err(ApiError::bad_request("`limit` must be between 1 and 200 and `offset` at least 0"));
    }
    let chats = state.store.list_chats(&user.id, query.archived, limit, query.offset).await?;
    Ok(Json(json!({ "chats": chats })))
}

/// The caller's chat, or 404 (also for other people's chats: their existence is not revealed).
pub(super) async fn owned(state: &AppState, user_id: &str, id: &str) -> Result<Chat, ApiError> {
    state.store.owned_chat(user_id, id).await?.ok_or_else(|| ApiError::not_found(format!("no chat `{id}`")))
}

pub async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Chat>, ApiError> {
    Ok(Json(owned(&state, &user.id, &id).await?))
}

pub async fn messages(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    let messages: Vec<_> = state.store.messages(&chat.id, 0).await?.iter().map(|m| m.public()).collect();
    let queued = state.store.queued_messages(&chat.id).await?;
    Ok(Json(json!({ "messages": messages, "queued_messages": queued })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    #[schemars(with = "UserContent")]
    content: Vec<MessagePart>,
    #[serde(default)]
    busy_behavior: BusyBehavior,
}

/// Sends a message: it starts a turn when the chat is idle, or is queued (and with
/// `busy_behavior: interrupt`, stops the running turn so it runs next).
pub async fn send(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Json<SendOutcome>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    validate_user_content(&body.content, state.limits.max_message_bytes).map_err(ApiError::bad_request)?;
    match state.chats.send(&chat, body.content, body.busy_behavior).await {
        Ok(outcome) => Ok(Json(outcome)),
        Err(SendError::QueueFull(n)) => {
            Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", SendError::QueueFull(n).to_string()))
        }
        Err(SendError::Store(e)) => Err(e.into()),
    }
}

/// Stops the running turn, keeping what was streamed; the chat is left waiting.
pub async fn interrupt(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Chat>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    state.chats.interrupt_tree(&chat.id).await?;
    Ok(Json(owned(&state, &user.id, &id).await?))
}

#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ChildList {
    pub chats: Vec<Chat>,
}

/// The chats a chat spawned, oldest first.
pub async fn children(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<ChildList>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    Ok(Json(ChildList { chats: state.store.children(&chat.id).await? }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    #[schemars(with = "UserContent")]
    content: Vec<MessagePart>,
}

/// Edits a user message: later messages and the queue are dropped and the chat runs again.
pub async fn edit(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, message_id)): Path<(String, i64)>,
    ApiJson(body): ApiJson<EditMessage>,
) -> Result<Json<Value>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    validate_user_content(&body.content, state.limits.max_message_bytes).map_err(ApiError::bad_request)?;
    match state.store.message_role(&chat.id, message_id).await?.as_deref() {
        None => return Err(ApiError::not_found(format!("chat `{id}` has no message {message_id}"))),
        Some("user") => {}
        Some(role) => {
            return Err(ApiError::bad_request(format!(
                "message {message_id} is a `{role}` message; only user messages can be edited"
            )));
        }
    }
    let message = state.chats.edit(&chat.id, message_id, &body.content).await?;
    Ok(Json(json!({ "message": message.public() })))
}

pub async fn delete_queued(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, queued_id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    if state.chats.delete_queued(&chat.id, queued_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("chat `{id}` has no queued message {queued_id}")))
    }
}

pub async fn promote_queued(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, queued_id)): Path<(String, i64)>,
) -> Result<Json<Chat>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    if !state.chats.promote(&chat.id, queued_id).await? {
        return Err(ApiError::not_found(format!("chat `{id}` has no queued message {queued_id}")));
    }
    Ok(Json(owned(&state, &user.id, &id).await?))
}

pub async fn archive(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    state.chats.set_archived(&chat.id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unarchive(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    state.chats.set_archived(&chat.id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
