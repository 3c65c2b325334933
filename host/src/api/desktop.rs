//! `GET /api/v1/chats/{id}/desktop` (WebSocket): the desktop of the chat's workspace as RFB
//! (VNC), for a noVNC client in the browser. The VNC server has no authentication of its own
//! and listens only on a Unix socket no workspace command sees: this endpoint, authenticated
//! like the chat's stream (owner or admin), is the only way in.
//!
//! The viewer watches; with `?control=true` it may also take over (keyboard, pointer,
//! clipboard), and the model is told in its next `computer` result. Without it, the viewer's
//! input messages are dropped on the way, so a watcher never moves the model's pointer.
//!
//! Any replica answers: one that does not hold the workspace carries the frames to one that
//! does (see `relay::desktop`), which filters them as here.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as RelayedMessage;

use super::auth::Caller;
use super::chats::owned;
use super::{ApiError, AppState};
use crate::relay::desktop::{DesktopRelayError, RemoteDesktop};
use crate::store::Workspace;
use crate::workspace::desktop::Desktop;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesktopQuery {
    /// Forward the viewer's keyboard and pointer to the desktop (a take-over).
    #[serde(default)]
    control: bool,
}

pub async fn connect(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    Query(query): Query<DesktopQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let chat = owned(&state, &user.id, &id).await?;
    let workspace = state.workspaces.of_chat(&chat.id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_workspace",
            "this chat has no workspace, so it has no desktop; create a workspace in the chat first",
        )
    })?;
    let opened = open(&state, &workspace, query.control).await?;
    tracing::info!(chat_id = %chat.id, workspace_id = %workspace.id, control = query.control, relayed = matches!(opened, Opened::Elsewhere(_)), "desktop viewer connected");
    Ok(upgrade.on_upgrade(move |socket| opened.carry(socket)))
}

/// Where a viewer's frames go.
pub enum Opened {
    /// To the desktop's VNC server, on this replica.
    Here { desktop: Arc<Desktop>, vnc: tokio::net::UnixStream, control: bool },
    /// To a replica on the workspace's node, which hosts the desktop (boxed: a TLS stream is
    /// large).
    Elsewhere(Box<RemoteDesktop>),
}

/// Opens the workspace's desktop for a viewer: here if the workspace lives here (starting the
/// desktop if need be), else through a replica where it lives.
async fn open(state: &AppState, workspace: &Workspace, control: bool) -> Result<Opened, ApiError> {
    if let Some(relay) = &state.relay
        && !state.workspaces.lives_here(workspace)
    {
        return relay.dial_desktop(workspace, control).await.map(|host| Opened::Elsewhere(Box::new(host))).map_err(
            |e| match e {
                DesktopRelayError::NoReplica(m) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "desktop_unreachable", m)
                }
                DesktopRelayError::Failed(m) => ApiError::new(StatusCode::BAD_GATEWAY, "desktop_unreachable", m),
            },
        );
    }
    open_here(state, workspace, control).await
}

/// Opens the desktop of a workspace that lives here.
pub async fn open_here(state: &AppState, workspace: &Workspace, control: bool) -> Result<Opened, ApiError> {
    let desktop = state.workspaces.desktop(workspace).await?;
    let vnc = desktop.connect_viewer()?;
    Ok(Opened::Here { desktop, vnc, control })
}

impl Opened {
    /// Carries the viewer's frames until either side closes.
    pub async fn carry(self, socket: WebSocket) {
        match self {
            Opened::Here { desktop, vnc, control } => relay(socket, vnc, desktop, control).await,
            Opened::Elsewhere(host) => relay_through(socket, *host).await,
        }
    }
}

/// Carries RFB both ways until either side closes.
async fn relay(mut socket: WebSocket, vnc: tokio::net::UnixStream, desktop: Arc<Desktop>, control: bool) {
    let (mut from_vnc, mut to_vnc) = vnc.into_split();
    let mut viewer = ClientMessages::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = from_vnc.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if socket.send(WsMessage::Binary(buffer[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
            message = socket.recv() => match message {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let Some((forward, input_events)) = viewer.filter(&bytes, control) else {
                        tracing::warn!("a desktop viewer sent RFB this server does not understand; closing");
                        break;
                    };
                    if input_events > 0 {
                        desktop.note_take_over(input_events);
                    }
                    if to_vnc.write_all(&forward).await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = desktop.ended.cancelled() => break,
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
}

/// Carries the frames between a viewer and the replica hosting the desktop, which filters
/// them as for its own viewers.
async fn relay_through(mut socket: WebSocket, mut host: RemoteDesktop) {
    loop {
        tokio::select! {
            from_host = host.next() => match from_host {
                Some(Ok(RelayedMessage::Binary(bytes))) => {
                    if socket.send(WsMessage::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(RelayedMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            from_viewer = socket.recv() => match from_viewer {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if host.send(RelayedMessage::Binary(bytes)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
    let _ = host.close(None).await;
}

/// Reads the viewer's side of RFB, message by message, so that input can be told apart (and
/// dropped for viewers without control).
#[derive(Default)]
struct ClientMessages {
    /// Bytes of the handshake still to pass: the version (12), the security type (1) and
    /// ClientInit (1).
    handshake_seen: usize,
    pending: Vec<u8>,
}

const HANDSHAKE: usize = 12 + 1 + 1;
const KEY_EVENT: u8 = 4;
const POINTER_EVENT: u8 = 5;
const CLIENT_CUT_TEXT: u8 = 6;

impl ClientMessages {
    /// What to forward of `bytes`, and how many input messages it held; `None` when a message
    /// is of a kind this server does not know the length of.
    fn filter(&mut self, bytes: &[u8], control: bool) -> Option<(Vec<u8>, u64)> {
        let mut forward = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        if self.handshake_seen < HANDSHAKE {
            let take = (HANDSHAKE - self.handshake_seen).min(rest.len());
            forward.extend_from_slice(&rest[..take]);
            self.handshake_seen += take;
            rest = &rest[take..];
        }
        self.pending.extend_from_slice(rest);
        let mut inputs = 0;
        while let Some(length) = message_length(&self.pending)? {
            let message: Vec<u8> = self.pending.drain(..length).collect();
            let input = matches!(message[0], KEY_EVENT | POINTER_EVENT | CLIENT_CUT_TEXT);
            if input && !control {
                continue;
            }
            if input {
                inputs += 1;
            }
            forward.extend_from_slice(&message);
        }
        Some((forward, inputs))
    }
}

/// The length of the client message at the start of `bytes`: `Some(None)` when more bytes are
/// needed to know or to hold it; `None` for an unknown message type.
fn message_length(bytes: &[u8]) -> Option<Option<usize>> {
    let Some(kind) = bytes.first() else { return Some(None) };
    let be16 = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
    let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let length = match kind {
        0 => Some(20),                                     // SetPixelFormat
        2 => be16(2).map(|n| 4 + 4 * n),                   // SetEncodings
        3 => Some(10),                                     // FramebufferUpdateRequest
        4 => Some(8),                                      // KeyEvent
        5 => Some(6),                                      // PointerEvent
        6 => be32(4).map(|n| 8 + n.min(1 << 20)),          // ClientCutText
        150 => Some(10),                                   // EnableContinuousUpdates
        248 => bytes.get(8).map(|n| 9 + *n as usize),      // ClientFence
        251 => bytes.get(6).map(|n| 8 + 16 * *n as usize), // SetDesktopSize
        _ => return None,
    };
    Some(length.filter(|n| bytes.len() >= *n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_without_control_passes_everything_but_input() {
        let mut viewer = ClientMessages::default();
        let handshake = b"RFB 003.008\n\x01\x01";
        let (forward, inputs) = viewer.filter(handshake, false).unwrap();
        assert_eq!((forward.as_slice(), inputs), (&handshake[..], 0));
        let update_request = [3u8, 0, 0, 0, 0, 0, 4, 0, 3, 0];
        let pointer = [5u8, 1, 0, 10, 0, 20];
        let key = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
        let mut stream = update_request.to_vec();
        stream.extend_from_slice(&pointer);
        stream.extend_from_slice(&key);
        let (forward, inputs) = viewer.filter(&stream, false).unwrap();
        assert_eq!((forward, inputs), (update_request.to_vec(), 0));
        // Split across frames, and with control: forwarded and counted.
        let mut controller = ClientMessages::default();
        controller.filter(handshake, true).unwrap();
        let (first, n) = controller.filter(&pointer[..3], true).unwrap();
        assert_eq!((first.len(), n), (0, 0));
        let (second, n) = controller.filter(&pointer[3..], true).unwrap();
        assert_eq!((second, n), (pointer.to_vec(), 1));
        assert!(controller.filter(&[99, 0, 0], true).is_none(), "an unknown message ends the session");
    }
}
