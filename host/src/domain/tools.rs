//! Tools as the host offers them to models and to the policy.

use serde::{Deserialize, Serialize};

/// Behaviour hints of a tool (see the WIT `tool-annotations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ToolAnnotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// A tool as the host offers it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ToolInfo {
    pub name: String,
    pub plugin: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    pub annotations: ToolAnnotations,
}

/// The bundled `subagents` plugin's tool that starts an agent on the workspace's desktop,
/// which the host offers only where such an agent can run (see `chat::turn`).
pub const SPAWN_COMPUTER_USE_AGENT: &str = "spawn_computer_use_agent";

/// Anthropic's computer-use tool versions: which one a model takes is a per-model setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ComputerTool {
    /// Claude Sonnet 4.5, Haiku 4.5, Opus 4.1 and earlier (beta `computer-use-2025-01-24`).
    #[serde(rename = "computer_20250124")]
    Computer20250124,
    /// Claude Opus 4.5 and later, with zoom (beta `computer-use-2025-11-24`).
    #[serde(rename = "computer_20251124")]
    Computer20251124,
    /// The one-entry computer toolset of the newest models: each action is a tool of its own.
    #[serde(rename = "computer_toolset_20260801")]
    ComputerToolset20260801,
}

impl ComputerTool {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputerTool::Computer20250124 => "computer_20250124",
            ComputerTool::Computer20251124 => "computer_20251124",
            ComputerTool::ComputerToolset20260801 => "computer_toolset_20260801",
        }
    }

    pub fn parse(text: &str) -> Option<ComputerTool> {
        [ComputerTool::Computer20250124, ComputerTool::Computer20251124, ComputerTool::ComputerToolset20260801]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}
