//! A fake model server speaking the OpenAI Chat Completions and the Anthropic Messages streaming
//! wire formats, replaying scripted answers and recording what it was asked.

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
    /// An HTTP error with a `retry-after` header (seconds).
    StatusRetryAfter(u16, Value, u64),
    /// Anthropic Messages events (each payload's `type` is its event name); the connection
    /// closes after the last (so events without `message_stop` are a cut connection).
    Anthropic { events: Vec<Value> },
    /// This exact response body, as an event stream.
    Raw(String),
    /// The answer made from the request (for tool calls that need ids the chat got earlier).
    Computed(Computed),
    /// Response headers, then nothing, ever: a provider that accepts and then says nothing.
    Silent,
}

/// Makes a script from the request body.
#[derive(Clone)]
pub struct Computed(pub Arc<dyn Fn(&Value) -> Script + Send + Sync>);

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Computed")
    }
}

/// A script made from the request when it arrives.
pub fn computed(make: impl Fn(&Value) -> Script + Send + Sync + 'static) -> Script {
    Script::Computed(Computed(Arc::new(make)))
}

/// An Anthropic answer streaming `text` word by word.
pub fn anthropic_text(text: &str) -> Script {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 50, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for word in text.split_inclusive(' ') {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 20}}));
    events.push(json!({"type": "message_stop"}));
    Script::Anthropic { events }
}

/// An Anthropic answer that thinks (signed), then calls a tool with arguments in pieces.
pub fn anthropic_thinking_tool_use(id: &str, name: &str, args: &str) -> Script {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 80, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I should read the file."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    ];
    for piece in args.chars().collect::<Vec<_>>().chunks(5) {
        events.push(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece.iter().collect::<String>()}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 1}));
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}}));
    events.push(json!({"type": "message_stop"}));
    Script::Anthropic { events }
}

/// An Anthropic answer that streams some text, then reports an `error` event.
pub fn anthropic_error_after(text: &str, error_type: &str) -> Script {
    let events = vec![
        json!({"type": "message_start", "message": {"id": "msg_3", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        json!({"type": "error", "error": {"type": error_type, "message": "Overloaded"}}),
    ];
    Script::Anthropic { events }
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

/// The same answer, reporting a prompt of `tokens` tokens in its usage.
pub fn with_prompt_tokens(script: Script, tokens: i64) -> Script {
    match script {
        Script::Stream { mut chunks, pause } => {
            for chunk in chunks.iter_mut().filter(|c| c["usage"].is_object()) {
                chunk["usage"]["prompt_tokens"] = json!(tokens);
            }
            Script::Stream { chunks, pause }
        }
        other => panic!("only OpenAI streams carry usage here: {other:?}"),
    }
}

/// The provider refusing a prompt as too long for the model (OpenAI's wording).
pub fn context_too_long() -> Script {
    Script::Status(
        400,
        json!({"error": {"message": "This model's maximum context length is 100000 tokens; your messages resulted in 131072 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded"}}),
    )
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

/// The scripts for one chat's requests, and the marker that picks them out.
type RoutedScripts = (String, VecDeque<Script>);

#[derive(Clone, Default)]
struct Shared {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Title requests, answered apart so they never take a scripted answer.
    title_requests: Arc<Mutex<Vec<Value>>>,
    /// The API key each request carried (`Authorization: Bearer` or `x-api-key`).
    keys: Arc<Mutex<Vec<Option<String>>>>,
    fallback: Arc<Mutex<Fallback>>,
    record: Arc<std::sync::atomic::AtomicBool>,
    /// Scripts for the requests of one chat: those whose messages contain the marker.
    routed: Arc<Mutex<Vec<RoutedScripts>>>,
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
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/messages", post(anthropic_messages))
            .with_state(shared.clone());
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

    /// Answers the calls whose first user message contains `marker` with
    /// these scripts, in order, before any unrouted script: for chats that run in parallel.
    pub fn script_for(&self, marker: &str, scripts: impl IntoIterator<Item = Script>) {
        self.shared.routed.lock().unwrap().push((marker.to_string(), scripts.into_iter().collect()));
    }

    /// How to answer once the scripts run out.
    pub fn fallback(&self, fallback: Fallback) {
        *self.shared.fallback.lock().unwrap() = fallback;
    }

    /// Stop recording requests (benchmarks make many).
    pub fn stop_recording(&self) {
        self.shared.record.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The title requests received so far.
    pub fn title_requests(&self) -> Vec<Value> {
        self.shared.title_requests.lock().unwrap().clone()
    }

    /// The API keys the requests carried.
    pub fn keys(&self) -> Vec<Option<String>> {
        self.shared.keys.lock().unwrap().clone()
    }

    /// The base URL for Anthropic clients (which add `/v1` themselves).
    pub fn anthropic_base_url(&self) -> String {
        self.base_url.trim_end_matches("/v1").to_string()
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

fn record(shared: &Shared, headers: &http::HeaderMap, body: &Value) {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(String::from).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(String::from)
    });
    if shared.record.load(std::sync::atomic::Ordering::Relaxed) {
        shared.keys.lock().unwrap().push(key);
        shared.requests.lock().unwrap().push(body.clone());
    }
}

/// Like OpenAI, the fake refuses a history in which a tool call has no result right after it.
fn unanswered_openai_tool_calls(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let mut missing = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let Some(calls) = message["tool_calls"].as_array() else { continue };
        let answered: Vec<&str> = messages[at + 1..]
            .iter()
            .take_while(|m| m["role"] == "tool")
            .filter_map(|m| m["tool_call_id"].as_str())
            .collect();
        missing.extend(
            calls.iter().filter_map(|c| c["id"].as_str()).filter(|id| !answered.contains(id)).map(String::from),
        );
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Like Anthropic, the fake refuses a `tool_use` whose `tool_result` is not in the next message.
fn unanswered_anthropic_tool_uses(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let blocks = |m: &Value, kind: &str, field: &str| -> Vec<String> {
        m["content"]
            .as_array()
            .map(|c| {
                c.iter().filter(|b| b["type"] == kind).filter_map(|b| b[field].as_str().map(String::from)).collect()
            })
            .unwrap_or_default()
    };
    let mut missing = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let answered = messages.get(at + 1).map(|next| blocks(next, "tool_result", "tool_use_id")).unwrap_or_default();
        missing.extend(blocks(message, "tool_use", "id").into_iter().filter(|id| !answered.contains(id)));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn status_response(status: u16, body: Value, retry_after: Option<u64>) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// The title every title request gets.
pub const TITLE: &str = "A generated title";

/// Whether a request asks for a chat title (the server's title instruction opens its system prompt).
fn is_title_request(shared: &Shared, body: &Value) -> bool {
    let system = body["system"][0]["text"].as_str().or_else(|| body["messages"][0]["content"].as_str()).unwrap_or("");
    let title = system.starts_with("Title this conversation");
    if title {
        shared.title_requests.lock().unwrap().push(body.clone());
    }
    title
}

async fn anthropic_messages(
    State(shared): State<Shared>,
    headers: http::HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    if is_title_request(&shared, &body.0) {
        return anthropic_messages_stream(match anthropic_text(TITLE) {
            Script::Anthropic { events } => events,
            _ => unreachable!(),
        });
    }
    record(&shared, &headers, &body.0);
    if let Some(unanswered) = unanswered_anthropic_tool_uses(&body.0) {
        let message =
            format!("messages: `tool_use` ids were found without `tool_result` blocks immediately after: {unanswered}");
        return status_response(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
            None,
        );
    }
    let script =
        shared.scripts.lock().unwrap().pop_front().unwrap_or_else(|| anthropic_text("(no more scripted answers)"));
    let events = match script {
        Script::Status(status, body) => return status_response(status, body, None),
        Script::StatusRetryAfter(status, body, seconds) => return status_response(status, body, Some(seconds)),
        Script::Anthropic { events } => events,
        Script::Raw(body) => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from(body))
                .unwrap();
        }
        other => panic!("an OpenAI script was queued for an Anthropic request: {other:?}"),
    };
    anthropic_messages_stream(events)
}

fn anthropic_messages_stream(events: Vec<Value>) -> Response {
    let frames: Vec<String> =
        events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("unknown"))).collect();
    let stream = futures::stream::iter(frames).map(|frame| Ok::<_, Infallible>(Bytes::from(frame)));
    Response::builder().header(header::CONTENT_TYPE, "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

async fn complete(State(shared): State<Shared>, headers: http::HeaderMap, body: axum::Json<Value>) -> Response {
    if is_title_request(&shared, &body.0) {
        let frames: Vec<String> = text_chunks(TITLE)
            .iter()
            .map(|c| format!("data: {c}\n\n"))
            .chain(["data: [DONE]\n\n".to_string()])
            .collect();
        let stream = futures::stream::iter(frames).map(|frame| Ok::<_, Infallible>(Bytes::from(frame)));
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    let last_role =
        body.0["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["role"].as_str()).unwrap_or("").to_string();
    record(&shared, &headers, &body.0);
    if let Some(unanswered) = unanswered_openai_tool_calls(&body.0) {
        let message = format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {unanswered}"
        );
        return status_response(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error", "param": "messages", "code": null}}),
            None,
        );
    }
    // The chat's first message tells chats apart (later messages may quote other chats' prompts).
    let first_user = body.0["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    let routed = shared
        .routed
        .lock()
        .unwrap()
        .iter_mut()
        .find(|(marker, scripts)| !scripts.is_empty() && first_user.contains(marker.as_str()))
        .and_then(|(_, scripts)| scripts.pop_front());
    let queued = routed.or_else(|| shared.scripts.lock().unwrap().pop_front());
    let fallback = *shared.fallback.lock().unwrap();
    let script = queued.unwrap_or_else(|| match fallback {
        Fallback::Text => text("(no more scripted answers)"),
        Fallback::ToolThenText if last_role == "user" => {
            tool_calls(&[("call_1", "read_file", r#"{"path": "README.md"}"#)])
        }
        Fallback::ToolThenText => text("done"),
        Fallback::TimedParts(..) => Script::Stream { chunks: Vec::new(), pause: Duration::ZERO },
    });
    let script = match script {
        Script::Computed(Computed(make)) => make(&body.0),
        other => other,
    };
    if let (Fallback::TimedParts(n, per_second), Script::Stream { chunks, .. }) = (fallback, &script)
        && chunks.is_empty()
    {
        return timed_parts(n, per_second);
    }
    let (chunks, pause, done) = match script {
        Script::Status(status, body) => return status_response(status, body, None),
        Script::StatusRetryAfter(status, body, seconds) => return status_response(status, body, Some(seconds)),
        Script::Anthropic { .. } => panic!("an Anthropic script was queued for an OpenAI request"),
        Script::Raw(body) => {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from(body))
                .unwrap();
        }
        Script::Stream { chunks, pause } => (chunks, pause, true),
        Script::Dropped(chunks) => (chunks, Duration::ZERO, false),
        Script::Computed(_) => panic!("a computed script computed another"),
        Script::Silent => {
            let nothing = futures::stream::pending::<Result<Bytes, Infallible>>();
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(nothing))
                .unwrap();
        }
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
