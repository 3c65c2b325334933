//! `toolhost mcp`: the MCP gateway over stdio, for desktop clients that start a command.
//!
//! Each message read from standard input (one JSON-RPC message a line) is sent to a running
//! server's `/mcp`, and what it answers is written to standard output, a message a line. The
//! server is the one place tools run: a workspace's mounts, sandboxes and desktop belong to the
//! server that holds them, so this process never acts on a workspace itself.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::Config;

/// The headers a streamable HTTP client carries after `initialize`.
const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
const SESSION_HEADER: &str = "mcp-session-id";

/// Where the messages go, and what the server said to carry on later requests.
struct Bridge {
    client: reqwest::Client,
    endpoint: String,
    /// The workspace the session works in (`?workspace_id=`).
    workspace: Option<String>,
    token: String,
    protocol_version: Mutex<Option<String>>,
    session_id: Mutex<Option<String>>,
    out: mpsc::UnboundedSender<String>,
}

/// Runs the bridge until standard input ends.
pub async fn run(
    config: &Config,
    url: Option<String>,
    workspace: Option<String>,
    token: String,
) -> anyhow::Result<ExitCode> {
    let base = url.unwrap_or_else(|| format!("http://{}", local_address(&config.listen)));
    let endpoint = format!("{}/mcp", base.trim_end_matches('/'));
    let (out, mut lines) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.write_all(b"\n").await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let client = reqwest::Client::builder().build()?;
    let bridge = Arc::new(Bridge {
        client,
        endpoint,
        workspace,
        token,
        protocol_version: Mutex::new(None),
        session_id: Mutex::new(None),
        out,
    });
    let mut input = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(line) = input.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let bridge = bridge.clone();
        // Concurrently: a client may cancel a call while it runs.
        in_flight.spawn(async move { bridge.forward(line).await });
    }
    while in_flight.join_next().await.is_some() {}
    drop(bridge);
    let _ = writer.await;
    Ok(ExitCode::SUCCESS)
}

/// A listening address as a client dials it (`0.0.0.0` and `[::]` mean this machine).
pub(super) fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
}

impl Bridge {
    async fn forward(&self, line: String) {
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(e) => {
                return self.send(json!({
                    "jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": format!("not a JSON-RPC message: {e}")}
                }));
            }
        };
        let id = message.get("id").cloned();
        if let Err(problem) = self.exchange(&line, &message).await {
            eprintln!("toolhost mcp: {problem}");
            // A request gets an answer whatever happened; a notification has none.
            if let Some(id) = id {
                self.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": problem}}));
            }
        }
    }

    /// Sends one message and relays what the server answers.
    async fn exchange(&self, line: &str, message: &Value) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .body(line.to_string());
        if let Some(workspace) = &self.workspace {
            request = request.query(&[("workspace_id", workspace)]);
        }
        if let Some(version) = self.protocol_version.lock().map(|v| v.clone()).unwrap_or_default() {
            request = request.header(PROTOCOL_VERSION_HEADER, version);
        }
        if let Some(session) = self.session_id.lock().map(|s| s.clone()).unwrap_or_default() {
            request = request.header(SESSION_HEADER, session);
        }
        let response = request.send().await.map_err(|e| {
            format!("cannot reach the Toolhost server at {} ({e}); is `toolhost serve` running?", self.endpoint)
        })?;
        if let Some(session) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok())
            && let Ok(mut kept) = self.session_id.lock()
        {
            *kept = Some(session.to_string());
        }
        let status = response.status();
        let is_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let reason = body["error"]["message"].as_str().map(String::from).unwrap_or_else(|| status.to_string());
            return Err(format!("the server refused the message ({status}): {reason}"));
        }
        if is_stream {
            let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| format!("the server's event stream broke: {e}"))?;
                if let Ok(answer) = serde_json::from_str::<Value>(&event.data) {
                    self.relay(message, answer);
                }
            }
            return Ok(());
        }
        let body = response.bytes().await.map_err(|e| format!("the server's answer was cut: {e}"))?;
        if body.is_empty() {
            return Ok(()); // 202: a notification or a response was taken.
        }
        let answer = serde_json::from_slice(&body)
            .map_err(|e| format!("the server answered something that is not JSON: {e}"))?;
        self.relay(message, answer);
        Ok(())
    }

    /// Writes an answer, keeping the protocol version `initialize` settled on.
    fn relay(&self, request: &Value, answer: Value) {
        if request["method"] == "initialize"
            && let Some(version) = answer["result"]["protocolVersion"].as_str()
            && let Ok(mut kept) = self.protocol_version.lock()
        {
            *kept = Some(version.to_string());
        }
        self.send(answer);
    }

    fn send(&self, message: Value) {
        let _ = self.out.send(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::local_address;

    #[test]
    fn a_wildcard_listening_address_is_dialled_on_this_machine() {
        assert_eq!(local_address("0.0.0.0:7420"), "127.0.0.1:7420");
        assert_eq!(local_address("[::]:7420"), "[::1]:7420");
        assert_eq!(local_address("127.0.0.1:9000"), "127.0.0.1:9000");
    }
}
