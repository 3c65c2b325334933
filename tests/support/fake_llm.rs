//! A fake model server speaking the OpenAI Chat Completions streaming wire format, replaying
//! scripted answers and recording what it was asked.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Script {
    /// These `data:` payloads, then `[DONE]`, with a pause before each.
    Stream { chunks: Vec<Value>, pause: Duration },
    /// These payloads, then the connection closes without finishing.
    Dropped(Vec<Value>),
    /// An HTTP error.
    Status(u16, Value),
}

fn delta(delta: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

fn finish(reason: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
}

fn usage() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})
}

/// Text split into word-sized deltas.
pub fn text_chunks(text: &str) -> Vec<Value> {
    let mut chunks: Vec<Value> = text.split_inclusive(' ').map(|w| delta(json!({"content": w}))).collect();
    chunks.push(finish("stop"));
    chunks.push(usage());
    chunks
}

pub fn text(text: &str) -> Script {
    Script::Stream { chunks: text_chunks(text), pause: Duration::ZERO }
}

/// Text streamed slowly, a word at a time.
pub fn slow_text(text: &str, pause: Duration) -> Script {
    Script::Stream { chunks: text_chunks(text), pause }
}

/// Parallel tool calls, their arguments split into small pieces and interleaved.
pub fn tool_calls(calls: &[(&str, &str, &str)]) -> Script {
    let mut chunks = vec![delta(json!({"role": "assistant", "content": null}))];
    for (index, (id, name, _)) in calls.iter().enumerate() {
        chunks.push(delta(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]})));
    }
    let pieces: Vec<Vec<String>> = calls
        .iter()
        .map(|(_, _, args)| args.chars().collect::<Vec<_>>().chunks(4).map(|c| c.iter().collect()).collect())
        .collect();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..longest {
        for (index, parts) in pieces.iter().enumerate() {
            if let Some(piece) = parts.get(round) {
                chunks.push(delta(json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})));
            }
        }
    }
    chunks.push(finish("tool_calls"));
    chunks.push(json!({"id": "chatcmpl-1", "choices": null, "usage": {"prompt_tokens": 30, "completion_tokens": 10}}));
    Script::Stream { chunks, pause: Duration::ZERO }
}

/// How to answer when no script is queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// A fixed text.
    #[default]
    Text,
    /// A `read_file` tool call after a user message, a short text after tool results: one turn
    /// with one tool call, for any number of chats at once.
    ToolThenText,
    /// `n` text deltas, `per_second` of them a second (0: as fast as possible), each carrying
    /// the time it was sent (`t=<unix micros>;`).
    TimedParts(usize, u32),
}

#[derive(Clone, Default)]
struct Shared {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    fallback: Arc<Mutex<Fallback>>,
    record: Arc<std::sync::atomic::AtomicBool>,
}

pub struct FakeLlm {
    pub base_url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        let shared = Shared::default();
        shared.record.store(true, std::sync::atomic::Ordering::Relaxed);
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeLlm { base_url, shared, task }
    }

    /// Answers the next model calls with these scripts, in order.
    pub fn script(&self, scripts: impl IntoIterator<Item = Script>) {
        self.shared.scripts.lock().unwrap().extend(scripts);
    }

    /// How to answer once the scripts run out.
    pub fn fallback(&self, fallback: Fallback) {
        *self.shared.fallback.lock().unwrap() = fallback;
    }

    /// Stop recording requests (benchmarks make many).
    pub fn stop_recording(&self) {
        self.shared.record.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn complete(State(shared): State<Shared>, body: axum::Json<Value>) -> Response {
    let last_role = body.0["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["role"].as_str()).unwrap_or("").to_string();
    if shared.record.load(std::sync::atomic::Ordering::Relaxed) {
        shared.requests.lock().unwrap().push(body.0);
    }
    let queued = shared.scripts.lock().unwrap().pop_front();
    let fallback = *shared.fallback.lock().unwrap();
    let script = queued.unwrap_or_else(|| match fallback {
        Fallback::Text => text("(no more scripted answers)"),
        Fallback::ToolThenText if last_role == "user" => tool_calls(&[("call_1", "read_file", r#"{"path": "README.md"}"#)]),
        Fallback::ToolThenText => text("done"),
        Fallback::TimedParts(..) => Script::Stream { chunks: Vec::new(), pause: Duration::ZERO },
    });
    if let (Fallback::TimedParts(n, per_second), Script::Stream { chunks, .. }) = (fallback, &script) {
        if chunks.is_empty() {
            return timed_parts(n, per_second);
        }
    }
    let (chunks, pause, done) = match script {
        Script::Status(status, body) => return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response(),
        Script::Stream { chunks, pause } => (chunks, pause, true),
        Script::Dropped(chunks) => (chunks, Duration::ZERO, false),
    };
    let mut frames: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        frames.push("data: [DONE]\n\n".to_string());
    }
    let stream = futures::stream::iter(frames).then(move |frame| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

/// `n` deltas stamped with the time each is sent, then the finish.
fn timed_parts(n: usize, per_second: u32) -> Response {
    let pause = if per_second == 0 { Duration::ZERO } else { Duration::from_secs(1) / per_second };
    let stream = futures::stream::iter(0..n + 2).then(move |i| async move {
        if !pause.is_zero() && i > 0 && i < n {
            tokio::time::sleep(pause).await;
        }
        let frame = if i < n {
            let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
            format!("data: {}\n\n", delta(json!({"content": format!("t={micros};")})))
        } else if i == n {
            format!("data: {}\n\n", finish("stop"))
        } else {
            "data: [DONE]\n\n".to_string()
        };
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

use futures::StreamExt;
