//! Model providers: a request in the chat's terms, a stream of deltas back.

pub mod openai;

use futures::stream::BoxStream;
use serde::Serialize;

use crate::chat::parts::MessagePart;
use crate::plugins::ToolInfo;

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
#[derive(Clone, Debug)]
pub struct ModelRequest {
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<PromptMessage>,
    pub tools: Vec<ToolInfo>,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    ToolCalls,
    Length,
    ContentFilter,
    Other,
}

/// Token counts of one model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Text(String),
    Reasoning(String),
    /// A piece of a tool call; `index` groups the pieces of one call.
    ToolCall { index: u32, id: Option<String>, name: Option<String>, arguments: String },
    Usage(Usage),
    Finish(FinishReason),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the model provider is not configured: {0}")]
    NotConfigured(String),
    #[error("the model provider could not be reached: {0}")]
    Connection(String),
    #[error("the model provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the model provider's stream broke off: {0}")]
    Stream(String),
    #[error("the model provider sent something unreadable: {0}")]
    Protocol(String),
}

/// A model provider.
pub trait Provider: Send + Sync {
    fn stream(&self, request: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>>;
}
