//! Tool calls waiting for a person's approval: listed per chat and across the caller's chats,
//! and answered by the chat's owner (nobody else, and never the model).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::chats::owned;
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::chat::approvals::{AnswerError, Decision};
use crate::store::ToolApproval;

#[derive(Serialize, schemars::JsonSchema)]
pub struct ApprovalList {
    /// Oldest first.
    pub approvals: Vec<ToolApproval>,
}

/// An answer to an approval request.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// `approve_once`, `approve_for_chat` (later calls of the tool in this chat run without
    /// asking) or `deny`.
    pub decision: Decision,
    /// With `deny`: why, for the model to read (at most 2000 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /api/v1/chats/{id}/approvals`: the chat's calls waiting for an answer.
pub async fn list_for_chat(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalList>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    Ok(Json(ApprovalList { approvals: state.chats.waiting_approvals(&chat).await? }))
}

/// `GET /api/v1/approvals`: every call waiting for the caller, across their chats and their
/// subagents.
pub async fn list_mine(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<ApprovalList>, ApiError> {
    Ok(Json(ApprovalList { approvals: state.store.pending_approvals_of(&user.id).await? }))
}

/// `POST /api/v1/chats/{id}/approvals/{approval_id}`: answers one; the step goes on once every
/// call it asked about is answered.
pub async fn answer(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path((id, approval_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<Answer>,
) -> Result<Json<ToolApproval>, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    match state.chats.answer_approval(&chat, &approval_id, body.decision, body.reason.as_deref(), &user.id).await {
        Ok(answered) => Ok(Json(answered)),
        Err(error @ AnswerError::NotFound(_)) => Err(ApiError::not_found(error.to_string())),
        Err(error @ AnswerError::AlreadyAnswered(_)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "already_answered", error.to_string()))
        }
        Err(error @ AnswerError::ReasonTooLong) => Err(ApiError::bad_request(error.to_string())),
        Err(AnswerError::Store(e)) => Err(e.into()),
    }
}
