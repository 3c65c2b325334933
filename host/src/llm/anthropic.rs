//! The Anthropic Messages streaming API. Configured like that ecosystem: `ANTHROPIC_API_KEY`,
//! `ANTHROPIC_BASE_URL`.
//!
//! Thinking blocks come back with a signature that must be sent back unchanged on later
//! requests; they are stored as reasoning parts whose provider metadata holds the signature
//! (or, for redacted thinking, the encrypted data). Prompt caching marks the system prompt and
//! the last two messages, so each turn reads the previous turn's prefix from the cache.

use eventsource_stream::Event;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::sse::{self, WireParser};
use super::{
    ComputerTool, Connection, FinishReason, LlmError, ModelRequest, NativeComputer, PromptMessage, Provider, Role,
    StreamEvent, Usage,
};
use crate::domain::parts::MessagePart;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; this is used when the model's config names none.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;
/// The tool every computer-use version answers to (and the toolset's name).
const COMPUTER: &str = "computer";

pub struct Anthropic {
    client: reqwest::Client,
    name: String,
    base_url: String,
    api_key: Option<String>,
    /// How long the provider may stay silent.
    timeouts: super::ModelTimeouts,
}

impl Anthropic {
    pub fn new(connection: Connection) -> Anthropic {
        let client = sse::http_client(connection.timeouts);
        let base_url = connection.base_url.filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        // Accept the base URL with or without the `/v1` the SDKs leave out.
        let base_url = base_url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        Anthropic {
            client,
            name: connection.name,
            base_url,
            api_key: connection.api_key.filter(|k| !k.is_empty()),
            timeouts: connection.timeouts,
        }
    }
}

impl Provider for Anthropic {
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>> {
        let mut http = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("anthropic-version", API_VERSION)
            .json(&body(&request));
        if let Some(beta) = native_computer(&request).and_then(|native| beta_of(native.tool)) {
            http = http.header("anthropic-beta", beta);
        }
        if let Some(key) = &self.api_key {
            http = http.header("x-api-key", key);
        }
        sse::request_stream(self.name.clone(), http, EventParser::new(self.name.clone()), self.timeouts)
    }
}

const CACHE: fn() -> Value = || json!({"type": "ephemeral"});

/// The native computer tool, when the request declares one and offers `computer`.
fn native_computer(request: &ModelRequest) -> Option<NativeComputer> {
    request.computer.filter(|_| request.tools.iter().any(|t| t.name == COMPUTER))
}

/// The beta a computer tool version needs (the toolset needs none).
fn beta_of(tool: ComputerTool) -> Option<&'static str> {
    match tool {
        ComputerTool::Computer20250124 => Some("computer-use-2025-01-24"),
        ComputerTool::Computer20251124 => Some("computer-use-2025-11-24"),
        ComputerTool::ComputerToolset20260801 => None,
    }
}

/// A tool's declaration: Anthropic's own computer tool in place of the `computer` function
/// when the model takes it, else the JSON Schema function.
fn declaration(tool: &crate::domain::ToolInfo, computer: Option<NativeComputer>) -> Value {
    match computer {
        Some(native) if tool.name == COMPUTER => {
            let (width, height) = (native.display_width, native.display_height);
            match native.tool {
                ComputerTool::Computer20250124 => json!({
                    "type": native.tool.as_str(), "name": COMPUTER,
                    "display_width_px": width, "display_height_px": height,
                }),
                ComputerTool::Computer20251124 => json!({
                    "type": native.tool.as_str(), "name": COMPUTER,
                    "display_width_px": width, "display_height_px": height, "enable_zoom": true,
                }),
                // The toolset reads the display's size from the screenshots.
                ComputerTool::ComputerToolset20260801 => json!({"type": native.tool.as_str()}),
            }
        }
        _ => json!({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}),
    }
}

/// The request body.
pub fn body(request: &ModelRequest) -> Value {
    let computer = native_computer(request);
    let toolset = computer.is_some_and(|c| c.tool == ComputerTool::ComputerToolset20260801);
    let mut messages = wire_messages(&request.messages, toolset);
    // Cache breakpoints on the last two messages: this request writes the prefix the next reads.
    for message in messages.iter_mut().rev().take(2) {
        if let Some(last) = message["content"].as_array_mut().and_then(|c| c.last_mut()) {
            last["cache_control"] = CACHE();
        }
    }
    let max_tokens = request.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({
        "model": request.model,
        "max_tokens": max_tokens,
        "messages": messages,
        "stream": true,
    });
    if let Some(system) = request.system.as_ref().filter(|s| !s.is_empty()) {
        body["system"] = json!([{"type": "text", "text": system, "cache_control": CACHE()}]);
    }
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(|t| declaration(t, computer)).collect();
        if request.tools_disabled {
            body["tool_choice"] = json!({"type": "none"});
        }
    }
    if let Some(budget) = request.thinking_budget {
        // The budget must stay below max_tokens.
        let budget = budget.min(max_tokens.saturating_sub(1)).max(1024);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
    }
    body
}

/// The content blocks of one stored part, as Anthropic takes them back. Under the computer
/// toolset, a `computer` call goes back as the toolset's member it was.
fn blocks(part: &MessagePart, toolset: bool) -> Option<Value> {
    match part {
        MessagePart::Text { text, .. } if !text.is_empty() => Some(json!({"type": "text", "text": text})),
        MessagePart::FileReference { file_name, start_line, end_line, content } => {
            Some(json!({"type": "text", "text": format!("{file_name} (lines {start_line}-{end_line}):\n{content}")}))
        }
        MessagePart::Image { media_type, data } => {
            Some(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
        }
        // Only Anthropic's own thinking goes back, and only with its signature.
        MessagePart::Reasoning { text, provider_metadata: Some(meta) } => {
            if let Some(data) = meta["anthropic"]["redacted"].as_str() {
                Some(json!({"type": "redacted_thinking", "data": data}))
            } else {
                meta["anthropic"]["signature"]
                    .as_str()
                    .map(|signature| json!({"type": "thinking", "thinking": text, "signature": signature}))
            }
        }
        MessagePart::ToolCall { tool_call_id, tool_name, args, .. } => {
            // Arguments that were not a JSON object go back wrapped, so the model sees what it sent.
            let mut input = if args.is_object() { args.clone() } else { json!({"unparsed_arguments": args}) };
            if toolset
                && tool_name == COMPUTER
                && let Some(Value::String(action)) = input.as_object_mut().and_then(|o| o.remove("action"))
            {
                return Some(
                    json!({"type": "tool_use", "id": tool_call_id, "name": action, "toolset_name": COMPUTER, "input": input}),
                );
            }
            Some(json!({"type": "tool_use", "id": tool_call_id, "name": tool_name, "input": input}))
        }
        MessagePart::ToolResult { tool_call_id, tool_name, result, is_error, images } => {
            let text = match result {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let content = if images.is_empty() {
                Value::String(text)
            } else {
                let mut blocks: Vec<Value> = Vec::with_capacity(images.len() + 1);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                blocks.extend(images.iter().map(|image| {
                    json!({"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}})
                }));
                Value::Array(blocks)
            };
            let mut block =
                json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content, "is_error": is_error});
            if toolset && tool_name == COMPUTER {
                block["toolset_name"] = json!(COMPUTER);
            }
            Some(block)
        }
        _ => None,
    }
}

/// Messages in Anthropic's shape: tool results travel in user messages, and consecutive
/// messages of one role are merged (the API requires alternating roles).
fn wire_messages(messages: &[PromptMessage], toolset: bool) -> Vec<Value> {
    let mut wire: Vec<Value> = Vec::new();
    for message in messages {
        let role = match message.role {
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        let content: Vec<Value> = message.content.iter().filter_map(|part| blocks(part, toolset)).collect();
        if content.is_empty() {
            continue;
        }
        match wire.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["content"].as_array_mut() {
                    existing.extend(content);
                }
            }
            _ => wire.push(json!({"role": role, "content": content})),
        }
    }
    wire
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            reasoning_tokens: 0,
            cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_creation_tokens: self.cache_creation_input_tokens.unwrap_or(0),
        }
    }
}

/// The events of the Messages stream this server reads; others are logged and skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Value,
    },
    ContentBlockDelta {
        index: u32,
        delta: Value,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: Value,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "pause_turn" => FinishReason::Pause,
        "refusal" => FinishReason::Refusal,
        _ => FinishReason::Other,
    }
}

/// A `content_block_delta`, read without building a JSON tree: these are nearly every event of
/// an answer, so they take the fast path.
#[derive(Deserialize)]
struct DeltaEvent<'a> {
    index: u32,
    #[serde(borrow)]
    delta: DeltaBody<'a>,
}

#[derive(Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
}

impl EventParser {
    fn delta(&mut self, event: DeltaEvent<'_>, out: &mut Vec<StreamEvent>) {
        let owned = |v: Option<std::borrow::Cow<'_, str>>| v.map(|c| c.into_owned()).unwrap_or_default();
        let DeltaEvent { index, delta } = event;
        if let Some((_, input)) = self.toolset_calls.get_mut(&index) {
            // A toolset member's input is read whole: the call's arguments gain its action.
            input.push_str(&owned(delta.partial_json));
            return;
        }
        match delta.kind.as_ref() {
            "text_delta" => out.push(StreamEvent::Text(owned(delta.text))),
            "thinking_delta" => out.push(StreamEvent::Reasoning(owned(delta.thinking))),
            "signature_delta" => out.push(StreamEvent::ReasoningSignature(owned(delta.signature))),
            "input_json_delta" => {
                out.push(StreamEvent::ToolCall { index, id: None, name: None, arguments: owned(delta.partial_json) })
            }
            other => tracing::debug!(provider = %self.provider, delta = other, "skipping an unknown content delta"),
        }
    }
}

/// Reads the Messages event stream until `message_stop`.
pub struct EventParser {
    provider: String,
    /// Calls of the computer toolset's members in progress, by block: the member (the action)
    /// and the input so far.
    toolset_calls: std::collections::HashMap<u32, (String, String)>,
}

impl EventParser {
    pub fn new(provider: impl Into<String>) -> EventParser {
        EventParser { provider: provider.into(), toolset_calls: Default::default() }
    }

    /// The arguments of a finished toolset call: its input with the member as `action`.
    fn toolset_arguments(action: String, input: &str) -> String {
        let mut arguments = match serde_json::from_str::<Value>(input) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        arguments.insert("action".into(), Value::String(action));
        Value::Object(arguments).to_string()
    }
}

impl WireParser for EventParser {
    fn feed(&mut self, event: &Event, out: &mut Vec<StreamEvent>) -> Result<bool, LlmError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        if event.event == "content_block_delta" {
            self.delta(sse::payload::<DeltaEvent>(&self.provider, &event.data)?, out);
            return Ok(false);
        }
        let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
        match sse::payload::<WireEvent>(&self.provider, &event.data)? {
            WireEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    out.push(StreamEvent::Usage(usage.usage()));
                }
            }
            WireEvent::ContentBlockStart { index, content_block: block } => {
                match block["type"].as_str().unwrap_or_default() {
                    "text" if !text(&block, "text").is_empty() => out.push(StreamEvent::Text(text(&block, "text"))),
                    "thinking" if !text(&block, "thinking").is_empty() => {
                        out.push(StreamEvent::Reasoning(text(&block, "thinking")))
                    }
                    "redacted_thinking" => out.push(StreamEvent::RedactedReasoning(text(&block, "data"))),
                    "tool_use" if block["toolset_name"] == COMPUTER => {
                        let input = match &block["input"] {
                            Value::Object(map) if !map.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        self.toolset_calls.insert(index, (text(&block, "name"), input));
                        out.push(StreamEvent::ToolCall {
                            index,
                            id: Some(text(&block, "id")),
                            name: Some(COMPUTER.to_string()),
                            arguments: String::new(),
                        });
                    }
                    "tool_use" => {
                        // The input arrives as input_json_delta pieces; a non-empty start input is rare.
                        let input = match &block["input"] {
                            Value::Object(map) if !map.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        out.push(StreamEvent::ToolCall {
                            index,
                            id: Some(text(&block, "id")),
                            name: Some(text(&block, "name")),
                            arguments: input,
                        });
                    }
                    _ => {}
                }
            }
            // Servers that name events differently still reach the same reading.
            WireEvent::ContentBlockDelta { index, delta } => {
                let delta = delta.to_string();
                let delta = sse::payload::<DeltaBody>(&self.provider, &delta)?;
                self.delta(DeltaEvent { index, delta }, out);
            }
            WireEvent::ContentBlockStop { index } => {
                if let Some((action, input)) = self.toolset_calls.remove(&index) {
                    let arguments = EventParser::toolset_arguments(action, &input);
                    out.push(StreamEvent::ToolCall { index, id: None, name: None, arguments });
                }
            }
            WireEvent::Ping {} => {}
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    out.push(StreamEvent::Usage(usage.usage()));
                }
                if let Some(reason) = delta["stop_reason"].as_str() {
                    out.push(StreamEvent::Finish(finish_reason(reason)));
                }
            }
            WireEvent::MessageStop {} => return Ok(true),
            WireEvent::Error { error } => {
                return Err(LlmError::from_stream_error(
                    &self.provider,
                    error["type"].as_str().unwrap_or("api_error"),
                    error["message"].as_str().unwrap_or("no message"),
                ));
            }
            WireEvent::Unknown => {
                tracing::warn!(provider = %self.provider, event = %event.event, "skipping an unknown event type")
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ErrorKind;

    fn feed(parser: &mut EventParser, data: Value) -> Result<(Vec<StreamEvent>, bool), LlmError> {
        let event =
            Event { event: data["type"].as_str().unwrap().to_string(), data: data.to_string(), ..Default::default() };
        let mut out = Vec::new();
        parser.feed(&event, &mut out).map(|done| (out, done))
    }

    #[test]
    fn a_thinking_tool_use_answer_is_read_with_signature_usage_and_stop_reason() {
        let mut parser = EventParser::new("anthropic");
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 40, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Look first."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig=="}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"a.txt\"}"}}),
            json!({"type": "ping"}),
            json!({"type": "brand_new_event", "anything": true}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 57}}),
        ];
        let mut all = Vec::new();
        for event in events {
            let (out, done) = feed(&mut parser, event).unwrap();
            assert!(!done);
            all.extend(out);
        }
        assert_eq!(
            all,
            vec![
                StreamEvent::Usage(Usage {
                    input_tokens: 40,
                    output_tokens: 1,
                    reasoning_tokens: 0,
                    cache_read_tokens: 900,
                    cache_creation_tokens: 12
                }),
                StreamEvent::Reasoning("Look first.".into()),
                StreamEvent::ReasoningSignature("sig==".into()),
                StreamEvent::ToolCall {
                    index: 1,
                    id: Some("toolu_1".into()),
                    name: Some("read_file".into()),
                    arguments: String::new()
                },
                StreamEvent::ToolCall { index: 1, id: None, name: None, arguments: "{\"path\": ".into() },
                StreamEvent::ToolCall { index: 1, id: None, name: None, arguments: "\"a.txt\"}".into() },
                StreamEvent::Usage(Usage { output_tokens: 57, ..Usage::default() }),
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
        assert!(feed(&mut parser, json!({"type": "message_stop"})).unwrap().1);
    }

    #[test]
    fn every_stop_reason_and_a_mid_stream_error_are_understood() {
        for (wire, ours) in [
            ("end_turn", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("pause_turn", FinishReason::Pause),
            ("refusal", FinishReason::Refusal),
        ] {
            let (out, _) =
                feed(&mut EventParser::new("a"), json!({"type": "message_delta", "delta": {"stop_reason": wire}}))
                    .unwrap();
            assert_eq!(out, vec![StreamEvent::Finish(ours)]);
        }
        let error = feed(
            &mut EventParser::new("a"),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert!(error.message.contains("Overloaded"));
        let garbage = Event { event: "content_block_delta".into(), data: "{not json".into(), ..Default::default() };
        assert_eq!(EventParser::new("a").feed(&garbage, &mut Vec::new()).unwrap_err().kind, ErrorKind::Protocol);
    }

    #[test]
    fn history_goes_back_with_signed_thinking_merged_roles_and_cache_breakpoints() {
        let signed = MessagePart::Reasoning {
            text: "Look first.".into(),
            provider_metadata: Some(json!({"anthropic": {"signature": "sig=="}})),
        };
        let foreign = MessagePart::Reasoning { text: "from another provider".into(), provider_metadata: None };
        let call = MessagePart::ToolCall {
            tool_call_id: "toolu_1".into(),
            tool_name: "read_file".into(),
            args: json!({"path": "a.txt"}),
            provider_metadata: None,
        };
        let result = MessagePart::ToolResult {
            tool_call_id: "toolu_1".into(),
            tool_name: "read_file".into(),
            result: json!("hello"),
            is_error: false,
            images: Vec::new(),
        };
        let request = ModelRequest {
            model: "claude-test".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                PromptMessage { role: Role::User, content: vec![MessagePart::text("read a.txt")] },
                PromptMessage { role: Role::Assistant, content: vec![signed, foreign, call] },
                PromptMessage { role: Role::Tool, content: vec![result] },
                PromptMessage { role: Role::User, content: vec![MessagePart::text("and now?")] },
            ],
            thinking_budget: Some(2048),
            ..ModelRequest::default()
        };
        let body = body(&request);
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(body["thinking"]["budget_tokens"], 2048);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "tool results and the next user text share one user message: {body}");
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "thinking", "thinking": "Look first.", "signature": "sig=="})
        );
        assert_eq!(messages[1]["content"][1]["type"], "tool_use", "reasoning without a signature is not sent");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["cache_control"]["type"], "ephemeral");
        assert_eq!(messages[1]["content"][1]["cache_control"]["type"], "ephemeral");
        assert!(messages[0]["content"][0].get("cache_control").is_none());
    }
}
