//! The OpenAI Chat Completions streaming API, as spoken by OpenAI and by local servers
//! (Ollama, vLLM, llama.cpp). Configured like that ecosystem: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FinishReason, LlmError, ModelRequest, PromptMessage, Provider, Role, StreamEvent, Usage};
use crate::chat::parts::MessagePart;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// How long a provider may stay silent (before answering, or mid-stream) before it is given up on.
pub const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(300);

pub struct OpenAi {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl OpenAi {
    pub fn new(base_url: Option<String>, api_key: Option<String>) -> OpenAi {
        OpenAi::with_silence_limit(base_url, api_key, DEFAULT_SILENCE_LIMIT)
    }

    /// `silence_limit`: a provider that sends nothing for this long is treated as gone, and the
    /// turn ends in an error rather than hanging.
    pub fn with_silence_limit(base_url: Option<String>, api_key: Option<String>, silence_limit: Duration) -> OpenAi {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(silence_limit)
            .build()
            .unwrap_or_default();
        let base_url = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string()).trim_end_matches('/').to_string();
        OpenAi { client, base_url, api_key: api_key.filter(|k| !k.is_empty()) }
    }

    /// From `OPENAI_BASE_URL`, `OPENAI_API_KEY`, and `TOOLHOST_MODEL_TIMEOUT_SECS` (the silence limit).
    pub fn from_env() -> OpenAi {
        let silence = std::env::var("TOOLHOST_MODEL_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_SILENCE_LIMIT);
        OpenAi::with_silence_limit(std::env::var("OPENAI_BASE_URL").ok(), std::env::var("OPENAI_API_KEY").ok(), silence)
    }
}

/// The request body.
fn body(request: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        messages.extend(wire_messages(message));
    }
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
            .collect();
    }
    body
}

fn text_of(parts: &[MessagePart]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            MessagePart::Text { text, .. } => Some(text.clone()),
            MessagePart::FileReference { file_name, start_line, end_line, content } => {
                Some(format!("{file_name} (lines {start_line}-{end_line}):\n{content}"))
            }
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wire_messages(message: &PromptMessage) -> Vec<Value> {
    match message.role {
        Role::User => {
            let images: Vec<Value> = message
                .content
                .iter()
                .filter_map(|p| match p {
                    MessagePart::Image { media_type, data } => {
                        Some(json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}}))
                    }
                    _ => None,
                })
                .collect();
            if images.is_empty() {
                vec![json!({"role": "user", "content": text_of(&message.content)})]
            } else {
                let mut content = vec![json!({"type": "text", "text": text_of(&message.content)})];
                content.extend(images);
                vec![json!({"role": "user", "content": content})]
            }
        }
        Role::Assistant => {
            let calls: Vec<Value> = message
                .content
                .iter()
                .filter_map(|p| match p {
                    MessagePart::ToolCall { tool_call_id, tool_name, args, .. } => Some(json!({
                        "id": tool_call_id, "type": "function",
                        "function": {"name": tool_name, "arguments": match args { Value::String(s) => s.clone(), other => other.to_string() }}
                    })),
                    _ => None,
                })
                .collect();
            let text = text_of(&message.content);
            let mut wire = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                wire["tool_calls"] = Value::Array(calls);
            }
            vec![wire]
        }
        Role::Tool => message
            .content
            .iter()
            .filter_map(|p| match p {
                MessagePart::ToolResult { tool_call_id, result, .. } => Some(json!({
                    "role": "tool", "tool_call_id": tool_call_id,
                    "content": match result { Value::String(s) => s.clone(), other => other.to_string() },
                })),
                _ => None,
            })
            .collect(),
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// Reasoning text, as DeepSeek, vLLM and Ollama send it.
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
    #[serde(default)]
    prompt_tokens_details: Option<Value>,
    #[serde(default)]
    completion_tokens_details: Option<Value>,
}

fn finish_reason(text: &str) -> FinishReason {
    match text {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// The events one `data:` payload carries.
fn chunk_events(data: &str) -> Result<Vec<StreamEvent>, LlmError> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|e| LlmError::Protocol(format!("{e} in {data:.200}")))?;
    if let Some(error) = chunk.error {
        let message = error.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| error.to_string());
        return Err(LlmError::Stream(message));
    }
    let mut events = Vec::new();
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                events.push(StreamEvent::Reasoning(text));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                events.push(StreamEvent::Text(text));
            }
            for call in delta.tool_calls.unwrap_or_default() {
                let (name, arguments) = match call.function {
                    Some(f) => (f.name, f.arguments.unwrap_or_default()),
                    None => (None, String::new()),
                };
                events.push(StreamEvent::ToolCall { index: call.index, id: call.id, name, arguments });
            }
        }
        if let Some(reason) = choice.finish_reason {
            events.push(StreamEvent::Finish(finish_reason(&reason)));
        }
    }
    if let Some(usage) = chunk.usage {
        let detail = |v: &Option<Value>, key: &str| v.as_ref().and_then(|d| d.get(key)).and_then(Value::as_i64).unwrap_or(0);
        events.push(StreamEvent::Usage(Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            reasoning_tokens: detail(&usage.completion_tokens_details, "reasoning_tokens"),
            cache_read_tokens: detail(&usage.prompt_tokens_details, "cached_tokens"),
        }));
    }
    Ok(events)
}

impl Provider for OpenAi {
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>> {
        let mut http = self.client.post(format!("{}/chat/completions", self.base_url)).json(&body(&request));
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let stream = async_stream(http);
        Box::pin(stream)
    }
}

fn async_stream(http: reqwest::RequestBuilder) -> impl futures::Stream<Item = Result<StreamEvent, LlmError>> + Send + 'static {
    futures::stream::once(async move {
        let response = http.send().await.map_err(|e| LlmError::Connection(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(String::from))
                .unwrap_or_else(|| text.chars().take(500).collect());
            return Err(LlmError::Status { status: status.as_u16(), message });
        }
        Ok(response.bytes_stream().eventsource())
    })
    .flat_map(|opened| match opened {
        Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        Ok(events) => {
            // After `[DONE]` or an error, anything more is ignored.
            let mut done = false;
            events
                .map(move |item| -> Vec<Result<StreamEvent, LlmError>> {
                    if done {
                        return Vec::new();
                    }
                    match item {
                        Err(e) => {
                            done = true;
                            vec![Err(LlmError::Stream(e.to_string()))]
                        }
                        Ok(event) if event.data.trim() == "[DONE]" => {
                            done = true;
                            Vec::new()
                        }
                        Ok(event) if event.data.trim().is_empty() => Vec::new(),
                        Ok(event) => match chunk_events(&event.data) {
                            Ok(events) => events.into_iter().map(Ok).collect(),
                            Err(e) => {
                                done = true;
                                vec![Err(e)]
                            }
                        },
                    }
                })
                .flat_map(futures::stream::iter)
                .boxed()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_pieces_usage_without_choices_and_errors_are_read() {
        let events = chunk_events(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"read_file","arguments":"{\"pa"}}]}}]}"#).unwrap();
        assert_eq!(events, vec![StreamEvent::ToolCall { index: 1, id: Some("call_b".into()), name: Some("read_file".into()), arguments: "{\"pa".into() }]);
        let usage = chunk_events(r#"{"choices":null,"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#).unwrap();
        assert_eq!(usage, vec![StreamEvent::Usage(Usage { input_tokens: 12, output_tokens: 3, reasoning_tokens: 0, cache_read_tokens: 4 })]);
        let finish = chunk_events(r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#).unwrap();
        assert_eq!(finish, vec![StreamEvent::Finish(FinishReason::ToolCalls)]);
        assert!(matches!(chunk_events(r#"{"error":{"message":"overloaded"}}"#), Err(LlmError::Stream(m)) if m == "overloaded"));
        assert!(matches!(chunk_events("{oops"), Err(LlmError::Protocol(_))));
    }
}
