//! Typed errors of loading plugins and calling tools. Every message names the plugin and says
//! what to do, because it reaches a model or an operator.

use std::fmt;

/// A per-call limit a plugin ran into.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    #[error("time limit of {limit_ms} ms")]
    Timeout { limit_ms: u64 },
    #[error("memory limit of {} MiB", limit_bytes / (1024 * 1024))]
    Memory { limit_bytes: usize },
    #[error("table limit of {limit} elements")]
    TableElements { limit: usize },
    #[error("stack limit of {} KiB", limit_bytes / 1024)]
    Stack { limit_bytes: usize },
    #[error("result size limit of {} KiB (the result was {} KiB)", limit_bytes / 1024, size_bytes.div_ceil(1024))]
    ResultSize { size_bytes: usize, limit_bytes: usize },
}

impl LimitHit {
    /// A stable machine-readable name.
    pub fn code(&self) -> &'static str {
        match self {
            LimitHit::Timeout { .. } => "timeout",
            LimitHit::Memory { .. } => "memory_limit",
            LimitHit::TableElements { .. } => "table_limit",
            LimitHit::Stack { .. } => "stack_overflow",
            LimitHit::ResultSize { .. } => "result_too_large",
        }
    }

    fn advice(&self) -> &'static str {
        match self {
            LimitHit::ResultSize { .. } => "ask for less output (a smaller range, a filter)",
            LimitHit::Timeout { .. } => "try a smaller task, or ask an admin to raise `timeout_ms` for this plugin",
            LimitHit::Memory { .. } => "try a smaller input, or ask an admin to raise `memory_mib` for this plugin",
            LimitHit::TableElements { .. } | LimitHit::Stack { .. } => "this is likely a bug in the plugin",
        }
    }
}

/// Why a tool call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("there is no tool named `{tool}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownTool { tool: String, suggestion: Option<String> },
    #[error("the arguments of `{tool}` do not match its schema: {}", problems.join("; "))]
    InvalidArguments { tool: String, problems: Vec<String> },
    /// The plugin refused or failed the call with a typed error.
    #[error("{message}")]
    Tool { plugin: String, tool: String, kind: ToolErrorKind, message: String },
    #[error("plugin `{plugin}` exceeded its {limit} while running `{tool}` and was stopped; {}", limit.advice())]
    LimitExceeded { plugin: String, tool: String, limit: LimitHit },
    #[error("plugin `{plugin}` crashed while running `{tool}`: {detail}")]
    Crashed { plugin: String, tool: String, detail: String },
    #[error("plugin `{plugin}` is busy: no instance slot freed up within {waited_ms} ms; try again shortly")]
    Busy { plugin: String, waited_ms: u64 },
    #[error("plugin `{plugin}` returned a malformed result from `{tool}`: {detail}")]
    BadResult { plugin: String, tool: String, detail: String },
}

/// The kinds of typed error a plugin can return (the WIT `tool-error` cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolErrorKind {
    InvalidArguments,
    Denied,
    NotFound,
    Failed,
}

impl CallError {
    /// A stable machine-readable code for the API's error shape.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::UnknownTool { .. } => "unknown_tool",
            CallError::InvalidArguments { .. } => "invalid_arguments",
            CallError::Tool { kind, .. } => match kind {
                ToolErrorKind::InvalidArguments => "invalid_arguments",
                ToolErrorKind::Denied => "denied",
                ToolErrorKind::NotFound => "not_found",
                ToolErrorKind::Failed => "tool_failed",
            },
            CallError::LimitExceeded { limit, .. } => limit.code(),
            CallError::Crashed { .. } => "crashed",
            CallError::Busy { .. } => "busy",
            CallError::BadResult { .. } => "bad_result",
        }
    }

    /// True when the caller's request was at fault (unknown tool, bad arguments) rather than
    /// the plugin.
    pub fn is_caller_error(&self) -> bool {
        matches!(self, CallError::UnknownTool { .. } | CallError::InvalidArguments { .. })
    }
}

/// A plugin the registry would not load, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The file (or `bundled:NAME`).
    pub source: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

/// Failure to set up the runtime itself (not one plugin).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid plugin limits: {0}")]
    Limits(String),
    #[error("cannot read the plugins directory `{path}`: {source}")]
    PluginsDir { path: String, source: std::io::Error },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}
