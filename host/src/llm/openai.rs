//! The OpenAI Chat Completions streaming API, as spoken by OpenAI and by local servers
//! (Ollama, vLLM, llama.cpp). Configured like that ecosystem: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.

use eventsource_stream::Event;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{self, WireParser};
use super::{
    Connection, FinishReason, LlmError, ModelRequest, PromptMessage, Provider, Role, StreamEvent, Usage, text_of,
};
use crate::domain::parts::MessagePart;

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub struct OpenAi {
    client: reqwest::Client,
    name: String,
    base_url: String,
    api_key: Option<String>,
    /// How long the provider may stay silent.
    timeouts: super::ModelTimeouts,
}

impl OpenAi {
    /// `connection.timeouts`: a provider that sends nothing for that long is treated as
    /// gone, and the stream ends in a [`ErrorKind::Dropped`] error rather than hanging.
    pub fn new(connection: Connection) -> OpenAi {
        let client = sse::http_client(connection.timeouts);
        let base_url = connection
            .base_url
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
            .trim_end_matches('/')
            .to_string();
        OpenAi {
            client,
            name: connection.name,
            base_url,
            api_key: connection.api_key.filter(|k| !k.is_empty()),
            timeouts: connection.timeouts,
        }
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
    if let Some(limit) = request.max_output_tokens {
        body["max_completion_tokens"] = json!(limit);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
            .collect();
        if request.tools_disabled {
            body["tool_choice"] = json!("none");
        }
    }
    body
}

fn wire_messages(message: &PromptMessage) -> Vec<Value> {
    match message.role {
        Role::User => {
            let images: Vec<Value> = message
                .content
                .iter()
                .filter_map(|p| match p {
                    MessagePart::Image { media_type, data } => Some(
                        json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}}),
                    ),
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
        Role::Tool => {
            let mut wire: Vec<Value> = message
                .content
                .iter()
                .filter_map(|p| match p {
                    MessagePart::ToolResult { tool_call_id, result, .. } => Some(json!({
                        "role": "tool", "tool_call_id": tool_call_id,
                        "content": match result { Value::String(s) => s.clone(), other => other.to_string() },
                    })),
                    _ => None,
                })
                .collect();
            // Tool messages take text only: the images of the results follow in a user message.
            let mut images = Vec::new();
            for part in &message.content {
                if let MessagePart::ToolResult { tool_call_id, tool_name, images: attached, .. } = part
                    && !attached.is_empty()
                {
                    images.push(json!({"type": "text", "text": format!("The image{} returned by `{tool_name}` (call {tool_call_id}):", if attached.len() > 1 { "s" } else { "" })}));
                    images.extend(attached.iter().map(|image| {
                        json!({"type": "image_url", "image_url": {"url": format!("data:{};base64,{}", image.media_type, image.data)}})
                    }));
                }
            }
            if !images.is_empty() {
                wire.push(json!({"role": "user", "content": images}));
            }
            wire
        }
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

/// Reads `data:` payloads of chat completion chunks until `[DONE]`.
#[derive(Default)]
pub struct ChunkParser {
    provider: String,
}

impl ChunkParser {
    pub fn new(provider: impl Into<String>) -> ChunkParser {
        ChunkParser { provider: provider.into() }
    }
}

impl WireParser for ChunkParser {
    fn feed(&mut self, event: &Event, out: &mut Vec<StreamEvent>) -> Result<bool, LlmError> {
        let data = event.data.trim();
        match data {
            "[DONE]" => Ok(true),
            "" => Ok(false),
            _ => chunk_events(&self.provider, data, out).map(|()| false),
        }
    }
}

/// The events one `data:` payload carries.
fn chunk_events(provider: &str, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
    let chunk: Chunk = sse::payload(provider, data)?;
    if let Some(error) = chunk.error {
        let message =
            error.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| error.to_string());
        let kind = error.get("type").or_else(|| error.get("code")).and_then(Value::as_str).unwrap_or("server_error");
        return Err(LlmError::from_stream_error(provider, kind, &message));
    }
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Reasoning(text));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
            for call in delta.tool_calls.unwrap_or_default() {
                let (name, arguments) = match call.function {
                    Some(f) => (f.name, f.arguments.unwrap_or_default()),
                    None => (None, String::new()),
                };
                out.push(StreamEvent::ToolCall { index: call.index, id: call.id, name, arguments });
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(StreamEvent::Finish(finish_reason(&reason)));
        }
    }
    if let Some(usage) = chunk.usage {
        let detail =
            |v: &Option<Value>, key: &str| v.as_ref().and_then(|d| d.get(key)).and_then(Value::as_i64).unwrap_or(0);
        let cached = detail(&usage.prompt_tokens_details, "cached_tokens");
        out.push(StreamEvent::Usage(Usage {
            // OpenAI counts cached tokens inside prompt_tokens; this server counts them apart.
            input_tokens: (usage.prompt_tokens - cached).max(0),
            output_tokens: usage.completion_tokens,
            reasoning_tokens: detail(&usage.completion_tokens_details, "reasoning_tokens"),
            cache_read_tokens: cached,
            cache_creation_tokens: 0,
        }));
    }
    Ok(())
}

impl Provider for OpenAi {
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>> {
        let mut http = self.client.post(format!("{}/chat/completions", self.base_url)).json(&body(&request));
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        sse::request_stream(self.name.clone(), http, ChunkParser::new(self.name.clone()), self.timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ErrorKind;

    fn events(data: &str) -> Result<Vec<StreamEvent>, LlmError> {
        let mut out = Vec::new();
        chunk_events("local", data, &mut out).map(|()| out)
    }

    #[test]
    fn tool_call_pieces_usage_without_choices_and_errors_are_read() {
        let events_of = events(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"read_file","arguments":"{\"pa"}}]}}]}"#).unwrap();
        assert_eq!(
            events_of,
            vec![StreamEvent::ToolCall {
                index: 1,
                id: Some("call_b".into()),
                name: Some("read_file".into()),
                arguments: "{\"pa".into()
            }]
        );
        let usage = events(r#"{"choices":null,"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#).unwrap();
        assert_eq!(
            usage,
            vec![StreamEvent::Usage(Usage {
                input_tokens: 8,
                output_tokens: 3,
                reasoning_tokens: 0,
                cache_read_tokens: 4,
                cache_creation_tokens: 0
            })]
        );
        let finish = events(r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#).unwrap();
        assert_eq!(finish, vec![StreamEvent::Finish(FinishReason::ToolCalls)]);
        let overloaded = events(r#"{"error":{"message":"overloaded","type":"overloaded_error"}}"#).unwrap_err();
        assert_eq!(overloaded.kind, ErrorKind::Overloaded);
        assert_eq!(events("{oops").unwrap_err().kind, ErrorKind::Protocol);
    }
}
