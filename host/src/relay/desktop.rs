//! A desktop seen through another replica. A workspace's desktop runs on the node whose disk
//! holds the workspace, while a person's viewer may come in through any replica: that replica
//! dials one on the workspace's node (`/internal/v1/workspaces/{id}/desktop/{watch|control}`,
//! signed like every relay call, the mode in the signed path) and carries the WebSocket's frames
//! both ways. The hosting replica drops a watcher's input and notes a take-over exactly as for
//! its own viewers.

use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{RELAY_SIGNATURE_HEADER, Relay};
use crate::store::Workspace;

/// The hosting replica's end of a relayed desktop.
pub type RemoteDesktop = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest the hosting replica may take to answer (it may be starting the desktop).
const ANSWER: Duration = Duration::from_secs(15);

/// The relay path of a workspace's desktop, watched or with `control`.
pub fn desktop_path(workspace_id: &str, control: bool) -> String {
    format!("/internal/v1/workspaces/{workspace_id}/desktop/{}", if control { "control" } else { "watch" })
}

/// Why a desktop could not be reached through the relay.
#[derive(Debug, thiserror::Error)]
pub enum DesktopRelayError {
    /// No replica registered on the workspace's node can be reached.
    #[error("{0}")]
    NoReplica(String),
    /// The hosting replica did not take the call.
    #[error("{0}")]
    Failed(String),
}

impl Relay {
    /// Opens the desktop of `workspace`, which lives on another node, on a replica there.
    pub async fn dial_desktop(&self, workspace: &Workspace, control: bool) -> Result<RemoteDesktop, DesktopRelayError> {
        let node = workspace.node_id.as_deref().unwrap_or_default();
        let replicas = self.store().replicas().await.map_err(|e| DesktopRelayError::Failed(e.to_string()))?;
        let Some(address) = replicas
            .into_iter()
            .filter(|r| r.node_id == node && r.id != self.identity.replica_id)
            .find_map(|r| r.relay_address)
        else {
            return Err(DesktopRelayError::NoReplica(format!(
                "workspace `{}` lives on host {node}, where no replica with a relay address runs now; start one there (or give it `[replicas] address`)",
                workspace.id
            )));
        };
        let path = desktop_path(&workspace.id, control);
        let url = format!("{}{path}", websocket_base(&address));
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| DesktopRelayError::Failed(format!("the relay address `{address}` is not usable: {e}")))?;
        let signature = self.sign(&path).parse().map_err(|_| DesktopRelayError::Failed("unsignable path".into()))?;
        request.headers_mut().insert(RELAY_SIGNATURE_HEADER, signature);
        let dialled = tokio::time::timeout(ANSWER, tokio_tungstenite::connect_async(request)).await;
        let unreachable = |why: String| {
            DesktopRelayError::Failed(format!("the replica hosting the desktop ({address}) did not take it: {why}"))
        };
        match dialled {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {} s", ANSWER.as_secs()))),
        }
    }
}

/// `ws://` for a relay address of `http://`, `wss://` for `https://`.
fn websocket_base(address: &str) -> String {
    let address = address.trim_end_matches('/');
    match address.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => format!("ws://{address}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_become_websocket_urls_and_the_mode_is_in_the_signed_path() {
        assert_eq!(websocket_base("http://10.0.0.5:7420/"), "ws://10.0.0.5:7420");
        assert_eq!(websocket_base("https://a.internal"), "wss://a.internal");
        assert_eq!(desktop_path("w1", false), "/internal/v1/workspaces/w1/desktop/watch");
        assert_eq!(desktop_path("w1", true), "/internal/v1/workspaces/w1/desktop/control");
    }
}
