//! Model providers: a request in the chat's terms, a stream of deltas back.
//!
//! Token counts follow one convention whatever the wire format: `input_tokens` are the prompt
//! tokens read neither from nor into the provider's cache, so the prompt's size is
//! `input + cache_read + cache_creation` (OpenAI counts cached tokens inside `prompt_tokens`;
//! they are subtracted).

pub mod anthropic;
pub mod errors;
pub mod openai;
pub mod retry;
pub mod sse;

use std::time::Duration;

use futures::stream::BoxStream;
use serde::Serialize;

use crate::domain::MessagePart;
use crate::domain::ToolInfo;

pub use crate::domain::{ComputerTool, ProviderKind};
pub use errors::{ErrorKind, LlmError};

/// How long a provider may stay silent mid-answer before it is given up on.
pub const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(300);
/// How long a provider may take from the request to the first byte of its answer.
pub const DEFAULT_FIRST_BYTE_LIMIT: Duration = Duration::from_secs(120);

/// How long providers may stay silent.
#[derive(Clone, Copy, Debug)]
pub struct ModelTimeouts {
    /// From sending the request to the first byte of the answer (a provider that accepts and
    /// then says nothing).
    pub first_byte: Duration,
    /// Between two reads once the answer has begun.
    pub silence: Duration,
}

impl Default for ModelTimeouts {
    fn default() -> ModelTimeouts {
        ModelTimeouts { first_byte: DEFAULT_FIRST_BYTE_LIMIT, silence: DEFAULT_SILENCE_LIMIT }
    }
}

impl ModelTimeouts {
    /// `TOOLHOST_MODEL_FIRST_BYTE_TIMEOUT_SECS` and `TOOLHOST_MODEL_TIMEOUT_SECS`, or the defaults.
    pub fn from_env() -> ModelTimeouts {
        let seconds = |name: &str| {
            std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0).map(Duration::from_secs)
        };
        let defaults = ModelTimeouts::default();
        ModelTimeouts {
            first_byte: seconds("TOOLHOST_MODEL_FIRST_BYTE_TIMEOUT_SECS").unwrap_or(defaults.first_byte),
            silence: seconds("TOOLHOST_MODEL_TIMEOUT_SECS").unwrap_or(defaults.silence),
        }
    }
}

/// One message of a prompt.
#[derive(Clone, Debug)]
pub struct PromptMessage {
    pub role: Role,
    pub content: Vec<MessagePart>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// Results of the tool calls of the previous assistant message.
    Tool,
}

/// What a model is asked.
#[derive(Clone, Debug, Default)]
pub struct ModelRequest {
    /// The provider's name for the model.
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<PromptMessage>,
    pub tools: Vec<ToolInfo>,
    /// Upper bound of the answer's length (Anthropic requires one).
    pub max_output_tokens: Option<u32>,
    /// Extended thinking budget, for models that think (Anthropic).
    pub thinking_budget: Option<u32>,
    /// The model may not call tools this time. The tools are still listed, so that the
    /// provider's prompt cache of the chat's requests still applies.
    pub tools_disabled: bool,
    /// Declare the `computer` tool as the provider's own computer-use tool (Anthropic), for
    /// models marked with a computer tool version.
    pub computer: Option<NativeComputer>,
}

/// The native computer tool to declare, and the display the model sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeComputer {
    pub tool: ComputerTool,
    pub display_width: u32,
    pub display_height: u32,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    ToolCalls,
    Length,
    ContentFilter,
    /// The model refused to answer (Anthropic `refusal`).
    Refusal,
    /// The provider paused a long turn; sending the answer back continues it (Anthropic `pause_turn`).
    Pause,
    Other,
}

/// Token counts of one model call (see the module comment for what `input_tokens` means).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_creation_tokens: i64,
}

impl Usage {
    /// Providers report counts more than once (Anthropic: at the start and at the end); counts
    /// only grow, so the larger of each wins.
    pub fn merge(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.max(other.input_tokens);
        self.output_tokens = self.output_tokens.max(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.max(other.reasoning_tokens);
        self.cache_read_tokens = self.cache_read_tokens.max(other.cache_read_tokens);
        self.cache_creation_tokens = self.cache_creation_tokens.max(other.cache_creation_tokens);
    }

    /// The prompt's size in tokens.
    pub fn prompt_tokens(&self) -> i64 {
        self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens
    }
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Text(String),
    Reasoning(String),
    /// The signature that closes the current reasoning block; it must be sent back with it.
    ReasoningSignature(String),
    /// Reasoning the provider sent encrypted; kept only to be sent back.
    RedactedReasoning(String),
    /// A piece of a tool call; `index` groups the pieces of one call.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Usage(Usage),
    Finish(FinishReason),
}

/// A model provider.
pub trait Provider: Send + Sync {
    /// The stream ends after the model's finish (a [`StreamEvent::Finish`]); a stream that ends
    /// without one yields an [`ErrorKind::Dropped`] error first.
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>>;
}

/// How to reach one provider.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The provider's name in this server, for messages.
    pub name: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub timeouts: ModelTimeouts,
}

/// A client for a provider of this kind.
pub fn connect(kind: ProviderKind, connection: Connection) -> std::sync::Arc<dyn Provider> {
    match kind {
        ProviderKind::Openai => std::sync::Arc::new(openai::OpenAi::new(connection)),
        ProviderKind::Anthropic => std::sync::Arc::new(anthropic::Anthropic::new(connection)),
    }
}

/// The text of a message's text-like parts, for formats that take one string.
pub(crate) fn text_of(parts: &[MessagePart]) -> String {
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

/// Leaves out the images of all but the last `keep` image-bearing tool results, so that a long
/// computer-use chat does not send every screenshot it ever took again at each step. A result
/// that lost its images says so.
pub fn keep_recent_images(messages: &mut [PromptMessage], keep: usize) {
    let mut seen = 0;
    for message in messages.iter_mut().rev() {
        for part in message.content.iter_mut().rev() {
            if let MessagePart::ToolResult { images, result, .. } = part
                && !images.is_empty()
            {
                seen += 1;
                if seen > keep {
                    let left_out = images.len();
                    images.clear();
                    let note = format!(
                        "[{left_out} earlier image{} left out to save context]",
                        if left_out > 1 { "s" } else { "" }
                    );
                    *result = match result {
                        serde_json::Value::String(text) if !text.is_empty() => {
                            serde_json::Value::String(format!("{text}\n{note}"))
                        }
                        _ => serde_json::Value::String(note),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ImageData;

    fn screenshot_result(n: usize) -> PromptMessage {
        PromptMessage {
            role: Role::Tool,
            content: vec![MessagePart::ToolResult {
                tool_call_id: format!("call-{n}"),
                tool_name: "computer".into(),
                result: serde_json::Value::String(String::new()),
                is_error: false,
                images: vec![ImageData { media_type: "image/png".into(), data: format!("png-{n}") }],
            }],
        }
    }

    #[test]
    fn only_the_last_screenshots_are_sent_again() {
        let mut messages: Vec<PromptMessage> = (0..10).map(screenshot_result).collect();
        keep_recent_images(&mut messages, 3);
        let kept: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(&m.content[0], MessagePart::ToolResult { images, .. } if !images.is_empty()))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(kept, [7, 8, 9]);
        let MessagePart::ToolResult { result, .. } = &messages[0].content[0] else { unreachable!() };
        assert_eq!(result, "[1 earlier image left out to save context]");
    }
}
