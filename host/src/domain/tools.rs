//! Tools as the host offers them to models and to the policy.

use serde::Serialize;

/// Behaviour hints of a tool (see the WIT `tool-annotations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ToolAnnotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// A tool as the host offers it.
#[derive(Clone, Debug, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub plugin: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub annotations: ToolAnnotations,
}
