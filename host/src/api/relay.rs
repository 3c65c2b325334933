//! The endpoints replicas call on each other (under `/internal/v1`), authenticated by the
//! deployment's relay token (see `relay`), never by a user's.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;

use super::stream::{Snapshot, chat_events, respond, until_shutdown};
use super::{ApiError, AppState};
use crate::relay::RELAY_SIGNATURE_HEADER;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayQuery {
    after: Option<i64>,
}

/// Refuses a call that does not carry a fresh signature of its path by this deployment.
fn authenticate(state: &AppState, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(relay) = &state.relay else {
        return Err(ApiError::not_found("this server relays to no other replica (it runs on SQLite)"));
    };
    let signature = headers.get(RELAY_SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if signature.is_empty() || !relay.accepts(path, signature) {
        return Err(ApiError::unauthorized(format!(
            "a relay call needs a fresh signature of its path in `{RELAY_SIGNATURE_HEADER}`, made with the relay token replicas derive from the shared secret key (TOOLHOST_SECRET_KEY); check that every replica has the same key and a synchronized clock"
        )));
    }
    Ok(())
}

/// `GET /internal/v1/chats/{id}/stream?after=SEQ`: this replica's events of a chat, as its
/// own subscribers get them, with a `relay_ready` event where the snapshot ends. What another
/// replica relays to its subscribers.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<RelayQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    authenticate(&state, request.uri().path(), request.headers())?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if state.store.chat(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no chat `{id}`")));
    }
    let after = query.after.unwrap_or(0).max(0);
    let events = chat_events(&state, &id, after, Snapshot::Marked).await?;
    let events = until_shutdown(events, state.lifecycle.closing.clone(), Some(after));
    respond(&state, request, events).await
}

/// `GET /internal/v1/workspaces/{id}/desktop/{watch|control}` (WebSocket): the desktop of a
/// workspace that lives here, for a viewer another replica carries (see `relay::desktop`); the
/// mode is part of the signed path.
pub async fn desktop(
    State(state): State<AppState>,
    Path((id, mode)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Who calls is checked first: a caller without a signature learns nothing more.
    authenticate(&state, uri.path(), &headers)?;
    let upgrade =
        upgrade.map_err(|e| ApiError::bad_request(format!("{}; this endpoint is a WebSocket", e.body_text())))?;
    let control = match mode.as_str() {
        "watch" => false,
        "control" => true,
        _ => return Err(ApiError::not_found(format!("no desktop mode `{mode}`: `watch` or `control`"))),
    };
    let workspace = state.workspaces.get(&id).await?;
    let opened = super::desktop::open_here(&state, &workspace, control).await?;
    tracing::info!(workspace_id = %workspace.id, control, "relayed desktop viewer connected");
    Ok(upgrade.on_upgrade(move |socket| opened.carry(socket)))
}
