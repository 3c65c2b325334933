//! Child chats of the calling chat (capability `agents`).

use crate::ToolError;
use crate::bindings::toolhost::plugin::agents as wit;
pub use crate::bindings::toolhost::plugin::agents::{AgentError, AgentKind, AgentReport, AgentStatus};

/// Starts a child chat of `kind`; returns its id at once.
pub fn spawn(prompt: &str, title: Option<&str>, kind: AgentKind) -> Result<String, AgentError> {
    wit::spawn(prompt, title, kind)
}

/// Waits until the children have finished, or `timeout_ms` passes; a report for each.
pub fn wait(chat_ids: &[String], timeout_ms: u64) -> Result<Vec<AgentReport>, AgentError> {
    wit::wait(chat_ids, timeout_ms)
}

/// Sends a child a message (queued, or run at once with `interrupt`).
pub fn send(chat_id: &str, message: &str, interrupt: bool) -> Result<(), AgentError> {
    wit::send(chat_id, message, interrupt)
}

/// Interrupts a child (and its own children); returns its report.
pub fn close(chat_id: &str) -> Result<AgentReport, AgentError> {
    wit::close(chat_id)
}

impl From<AgentError> for ToolError {
    fn from(e: AgentError) -> ToolError {
        match e {
            AgentError::Denied(m) => ToolError::Denied(m),
            AgentError::NotFound(m) => ToolError::NotFound(m),
            AgentError::Invalid(m) => ToolError::InvalidArguments(m),
            AgentError::Limit(m) | AgentError::Failed(m) => ToolError::Failed(m),
        }
    }
}
