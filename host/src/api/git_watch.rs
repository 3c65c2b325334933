//! `GET /api/v1/chats/{id}/git/watch` (WebSocket): snapshots of the git repositories the chat's
//! tools (and its ancestors') touched: branch, remote, changed files and the unified diff.
//!
//! A snapshot is taken when the client connects, after each message of the chat (tool results
//! are messages), when the client sends `refresh`, and every 30 s; at most once a second. It is
//! sent only when it differs from the last one sent.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::auth::Caller;
use super::chats::owned;
use super::{ApiError, AppState};
use crate::domain::parts::MessagePart;
use crate::workspace::git::{self, GitSnapshot};

const PERIODIC_REFRESH: Duration = Duration::from_secs(30);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    Ok(upgrade.on_upgrade(move |socket| serve(state, chat.id, socket)))
}

/// What the watcher has learned so far: the folders touched, per chat, up to a sequence number.
struct Touched {
    chats: Vec<(String, i64)>,
    paths: BTreeSet<String>,
}

impl Touched {
    async fn new(state: &AppState, chat_id: &str) -> Result<Touched, crate::store::StoreError> {
        // The chat and its ancestors: a subagent's view includes what its parents worked on.
        let mut chats = Vec::new();
        let mut next = Some(chat_id.to_string());
        while let Some(id) = next.take() {
            let Some(chat) = state.store.chat(&id).await? else { break };
            chats.push((chat.id.clone(), 0));
            next = chat.parent_chat_id.clone();
            if chats.len() > 64 {
                break;
            }
        }
        Ok(Touched { chats, paths: BTreeSet::new() })
    }

    /// Reads the messages stored since the last call.
    async fn update(&mut self, state: &AppState) -> Result<(), crate::store::StoreError> {
        for (chat_id, seen) in &mut self.chats {
            let messages = state.store.messages(chat_id, *seen).await?;
            let calls: Vec<&serde_json::Value> = messages
                .iter()
                .flat_map(|m| m.content.iter())
                .filter_map(|part| match part {
                    MessagePart::ToolCall { args, .. } => Some(args),
                    _ => None,
                })
                .collect();
            self.paths.extend(git::touched_paths(calls.into_iter()));
            if let Some(last) = messages.last() {
                *seen = last.seq;
            }
        }
        Ok(())
    }
}

async fn snapshot(state: &AppState, chat_id: &str, touched: &mut Touched) -> Result<GitSnapshot, String> {
    touched.update(state).await.map_err(|e| e.to_string())?;
    let Some(workspace) = state.workspaces.of_chat(chat_id).await.map_err(|e| e.to_string())? else {
        return Ok(GitSnapshot { workspace_id: None, repositories: Vec::new() });
    };
    let Some(root) = state.workspaces.files_root(&workspace) else {
        return Ok(GitSnapshot { workspace_id: Some(workspace.id), repositories: Vec::new() });
    };
    let paths = touched.paths.clone();
    let repositories =
        tokio::task::spawn_blocking(move || git::repositories(&root, &paths)).await.map_err(|e| e.to_string())?;
    state.workspaces.git_snapshot(&workspace, &repositories).await.map_err(|e| e.to_string())
}

async fn serve(state: AppState, chat_id: String, mut socket: WebSocket) {
    let mut touched = match Touched::new(&state, &chat_id).await {
        Ok(touched) => touched,
        Err(e) => {
            let _ = socket
                .send(WsMessage::Text(json!({"type": "error", "message": e.to_string()}).to_string().into()))
                .await;
            return;
        }
    };
    let mut events = state.chats.hub.channel(&chat_id).lock().await.subscribe();
    let mut periodic = tokio::time::interval(PERIODIC_REFRESH);
    let mut last_sent: Option<GitSnapshot> = None;
    let mut last_taken = tokio::time::Instant::now() - MIN_INTERVAL;
    // A refresh asked for while the last snapshot is under a second old waits for the rest.
    let mut wanted = true;
    loop {
        if wanted {
            tokio::time::sleep_until(last_taken + MIN_INTERVAL).await;
            wanted = false;
            last_taken = tokio::time::Instant::now();
            let message = match snapshot(&state, &chat_id, &mut touched).await {
                Ok(snapshot) if last_sent.as_ref() == Some(&snapshot) => None,
                Ok(snapshot) => {
                    let text = json!({"type": "snapshot", "snapshot": &snapshot, "taken_at": crate::store::now_ms()})
                        .to_string();
                    last_sent = Some(snapshot);
                    Some(text)
                }
                Err(e) => Some(json!({"type": "error", "message": format!("the snapshot failed: {e}")}).to_string()),
            };
            if let Some(text) = message
                && socket.send(WsMessage::Text(text.into())).await.is_err()
            {
                return;
            }
        }
        tokio::select! {
            received = socket.recv() => match received {
                Some(Ok(WsMessage::Text(text))) if is_refresh(&text) => wanted = true,
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(event) if event.kind == "message" => wanted = true,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wanted = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    events = state.chats.hub.channel(&chat_id).lock().await.subscribe();
                }
            },
            _ = periodic.tick() => wanted = true,
        }
    }
}

/// `refresh`, or `{"type": "refresh"}`.
fn is_refresh(text: &str) -> bool {
    text.trim() == "refresh" || serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["type"] == "refresh")
}
