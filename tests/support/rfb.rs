//! A small RFB (VNC) viewer over the desktop WebSocket, speaking what noVNC speaks: version
//! 3.8, security type None, a shared session, framebuffer update requests and pointer events.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Viewer {
    socket: Socket,
    /// Bytes received and not yet taken.
    received: Vec<u8>,
    /// The real display's size, from ServerInit.
    pub width: u16,
    pub height: u16,
}

impl Viewer {
    /// Connects to `GET {base}/api/v1/chats/{chat}/desktop` as the holder of `token` and
    /// completes the handshake; the error is the refusal's text (its status among it).
    pub async fn connect(base: &str, token: &str, chat: &str, control: bool) -> Result<Viewer, String> {
        let url = format!("{}/api/v1/chats/{chat}/desktop?control={control}", base.replace("http://", "ws://"));
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
        let mut viewer = Viewer { socket, received: Vec::new(), width: 0, height: 0 };
        viewer.handshake().await;
        Ok(viewer)
    }

    async fn handshake(&mut self) {
        let version = self.take(12).await;
        assert!(version.starts_with(b"RFB 003."), "{version:?}");
        self.send(b"RFB 003.008\n").await;
        let count = self.take(1).await[0] as usize;
        let types = self.take(count).await;
        assert!(types.contains(&1), "security type None offered: {types:?}");
        self.send(&[1]).await;
        assert_eq!(self.take(4).await, [0, 0, 0, 0], "security result OK");
        self.send(&[1]).await; // ClientInit: shared
        let init = self.take(24).await;
        self.width = u16::from_be_bytes([init[0], init[1]]);
        self.height = u16::from_be_bytes([init[2], init[3]]);
        let name_length = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.take(name_length).await;
    }

    /// Asks for the top-left 16x16 pixels; the first byte of the answer (0 for a
    /// FramebufferUpdate).
    pub async fn framebuffer_update(&mut self) -> u8 {
        self.send(&[3, 0, 0, 0, 0, 0, 0, 16, 0, 16]).await;
        self.take(1).await[0]
    }

    /// A PointerEvent: the pointer at (`x`, `y`) with `buttons` (a bit per button) down.
    pub async fn point(&mut self, x: u16, y: u16, buttons: u8) {
        let [x1, x2] = x.to_be_bytes();
        let [y1, y2] = y.to_be_bytes();
        self.send(&[5, buttons, x1, x2, y1, y2]).await;
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.socket.send(Message::Binary(bytes.to_vec().into())).await.unwrap();
    }

    /// The next `count` bytes from the desktop.
    async fn take(&mut self, count: usize) -> Vec<u8> {
        while self.received.len() < count {
            match tokio::time::timeout(Duration::from_secs(10), self.socket.next()).await {
                Ok(Some(Ok(Message::Binary(bytes)))) => self.received.extend_from_slice(&bytes),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no RFB from the desktop: {other:?}"),
            }
        }
        self.received.drain(..count).collect()
    }
}
