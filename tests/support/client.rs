#![allow(dead_code)]
//! A chat stream's client, as a person's browser is one: it reads SSE or a WebSocket, and shows
//! what the README's rules say to show. Included by the tests that read streams
//! (`#[path = "support/client.rs"] mod client;`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

/// One event as a client receives it: its SSE id (when it advances the cursor) and its JSON.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: Option<i64>,
    pub event: Value,
}

impl Received {
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }
}

/// A chat stream read in the background until it ends.
pub struct Collector {
    events: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn sse(base: &str, token: &str, chat: &str, after: Option<i64>) -> Collector {
        let mut request = reqwest::Client::new().get(format!("{base}/api/v1/chats/{chat}/stream")).bearer_auth(token);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            while let Some(Ok(event)) = stream.next().await {
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else { continue };
                // An event without a number (state) keeps the last id, as SSE says: the one to
                // resume from. Only numbered events (with a `seq`) count as having one.
                let id = value.get("seq").and_then(|_| event.id.parse().ok());
                if let Some(id) = id {
                    assert_eq!(value["seq"], id, "the SSE id is the event's seq");
                }
                sink.lock().unwrap().push(Received { id, event: value });
            }
        });
        Collector { events, task }
    }

    pub async fn websocket(base: &str, token: &str, chat: &str) -> Collector {
        let url = format!("{}/api/v1/chats/{chat}/stream", base.replace("http://", "ws://"));
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                match frame {
                    tokio_tungstenite::tungstenite::Message::Text(text) => {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        let id = value["seq"].as_i64();
                        sink.lock().unwrap().push(Received { id, event: value });
                    }
                    tokio_tungstenite::tungstenite::Message::Close(_) => {
                        let _ = socket.close(None).await;
                        break;
                    }
                    _ => {}
                }
            }
        });
        Collector { events, task }
    }

    /// Drops the connection, as a client that lost it does.
    pub fn cut(self) {
        self.task.abort();
    }

    pub fn events(&self) -> Vec<Received> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (up to `limit`) until `done` holds for what arrived; returns it.
    pub async fn until(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "the stream never got there; it got: {events:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the stream to end (the server closed it).
    pub async fn ended(self, limit: Duration) -> Vec<Received> {
        tokio::time::timeout(limit, self.task).await.expect("the server closes the stream").unwrap();
        self.events.lock().unwrap().clone()
    }
}

pub fn parts(events: &[Received]) -> usize {
    events.iter().filter(|e| e.kind() == "message_part").count()
}

pub fn assistant_message(events: &[Received]) -> bool {
    events.iter().any(|e| e.kind() == "message" && e.event["message"]["role"] == "assistant")
}

/// What a client that follows the README's rules shows: stored messages, and the parts
/// streamed since the last one, dropped on `discard` (and on a `retry` that discards).
pub fn shown(events: &[Received]) -> Vec<String> {
    let mut messages = Vec::new();
    let mut streaming = String::new();
    for event in events {
        match event.kind() {
            "message_part" => streaming.push_str(event.event["part"]["text"].as_str().unwrap_or_default()),
            "discard" => streaming.clear(),
            "retry" if event.event["discarded_output"] == true => streaming.clear(),
            "message" => {
                streaming.clear();
                messages.push(event.event["message"]["content"][0]["text"].as_str().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    if !streaming.is_empty() {
        messages.push(streaming);
    }
    messages
}

/// Every numbered event after `after` exactly once: ascending, none seen before.
pub fn assert_exactly_once(before: &[Received], after: &[Received], cursor: i64) {
    let seen: HashSet<i64> = before.iter().filter_map(|e| e.id).collect();
    let mut last = cursor;
    for event in after.iter().filter(|e| e.id.is_some()) {
        let id = event.id.unwrap();
        assert!(!seen.contains(&id), "seq {id} was handed out before, for another event: {event:?}");
        assert!(id > last, "seq {id} after {last}: {after:#?}");
        last = id;
    }
}

pub async fn create_chat(base: &str, token: &str, text: &str) -> String {
    let chat: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/chats"))
        .bearer_auth(token)
        .json(&json!({"content": [{"type": "text", "text": text}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    chat["id"].as_str().unwrap_or_else(|| panic!("{chat}")).to_string()
}

async fn get_json(base: &str, token: &str, path: &str) -> Value {
    reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

pub async fn chat_state(base: &str, token: &str, chat: &str) -> Value {
    get_json(base, token, &format!("/api/v1/chats/{chat}")).await
}

pub async fn messages(base: &str, token: &str, chat: &str) -> Vec<Value> {
    let body = get_json(base, token, &format!("/api/v1/chats/{chat}/messages")).await;
    body["messages"].as_array().unwrap().clone()
}
