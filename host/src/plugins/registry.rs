//! What the registry knows about loaded plugins and their tools, and the checks a plugin must
//! pass before it is loaded.

use crate::domain::{ToolAnnotations, ToolInfo};
use std::path::PathBuf;

use serde::Serialize;

use super::bindings::toolhost::plugin::types::{PluginDescription, ToolSpec};
use super::{LimitsConfig, PluginLimits};

/// How to set up the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Every `*.wasm` in it is loaded after the bundled plugins.
    pub plugins_dir: Option<PathBuf>,
    /// Load the plugins built into the binary.
    pub include_bundled: bool,
    pub limits: LimitsConfig,
    /// Calls running at once across all plugins; further calls wait for a slot.
    pub max_concurrent_calls: u32,
    /// Calls waiting on other chats (a parent waiting for its subagents) that do not count
    /// against `max_concurrent_calls` (see [`crate::plugins::slots`]).
    pub max_waiting_calls: u32,
}

impl Default for RuntimeOptions {
    fn default() -> RuntimeOptions {
        RuntimeOptions {
            cache_dir: None,
            plugins_dir: None,
            include_bundled: true,
            limits: LimitsConfig::default(),
            max_concurrent_calls: 128,
            max_waiting_calls: 256,
        }
    }
}

/// Where a plugin came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginSource {
    Bundled(&'static str),
    File(PathBuf),
    /// Uploaded by an admin through the API, stored in the database by its content's hash.
    Uploaded {
        sha256: String,
    },
}

impl PluginSource {
    /// How messages name the source: the file path, `bundled:FILE` or `uploaded:SHA256`.
    pub fn label(&self) -> String {
        match self {
            PluginSource::Bundled(name) => format!("bundled:{name}"),
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Uploaded { sha256 } => format!("uploaded:{sha256}"),
        }
    }
}

/// A loaded plugin, as `plugin list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub source: String,
    pub sha256: String,
    pub wit_version: String,
    /// Capabilities the component imports (read from the component, not claimed).
    pub capabilities: Vec<String>,
    /// WASI interfaces it imports; provided with no files, network or environment.
    pub system_imports: Vec<String>,
    pub tools: Vec<ToolInfo>,
    pub limits: PluginLimits,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
}

/// 1 to 64 characters of `a-z A-Z 0-9 _ -`: what model APIs accept as a tool name.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A tool that passed validation, with its compiled argument validator.
pub(crate) struct CheckedTool {
    pub info: ToolInfo,
    pub validator: jsonschema::Validator,
}

/// Checks a plugin's description against what is already loaded; returns its tools.
pub(crate) fn check_description(
    description: &PluginDescription,
    loaded_plugins: &[&str],
    tool_owner: impl Fn(&str) -> Option<String>,
) -> Result<Vec<CheckedTool>, String> {
    let plugin = &description.name;
    if !valid_plugin_name(plugin) {
        return Err(format!("its name `{plugin}` is not 1-64 characters of a-z, 0-9, `-` and `_`"));
    }
    if description.tools.is_empty() {
        return Err("it offers no tools".to_string());
    }
    let mut checked: Vec<CheckedTool> = Vec::with_capacity(description.tools.len());
    for spec in &description.tools {
        if checked.iter().any(|t| t.info.name == spec.name) {
            return Err(format!("it declares the tool `{}` twice", spec.name));
        }
        if let Some(owner) = tool_owner(&spec.name) {
            return Err(format!(
                "its tool `{}` is already provided by plugin `{owner}`; tool names must be unique",
                spec.name
            ));
        }
        checked.push(check_tool(plugin, spec)?);
    }
    if loaded_plugins.contains(&plugin.as_str()) {
        return Err(format!("a plugin named `{plugin}` is already loaded"));
    }
    Ok(checked)
}

fn check_tool(plugin: &str, spec: &ToolSpec) -> Result<CheckedTool, String> {
    let name = &spec.name;
    if !valid_tool_name(name) {
        return Err(format!("its tool name `{name}` is not 1-64 characters of a-z, A-Z, 0-9, `_` and `-`"));
    }
    let schema: serde_json::Value = serde_json::from_str(&spec.input_schema)
        .map_err(|e| format!("the input schema of tool `{name}` is not JSON: {e}"))?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        format!("the input schema of tool `{name}` is not valid JSON Schema: {e} (at `{}`)", e.schema_path())
    })?;
    if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err(format!(
            "the input schema of tool `{name}` must describe an object (`\"type\": \"object\"`), as tool arguments are a JSON object"
        ));
    }
    let a = spec.annotations;
    Ok(CheckedTool {
        info: ToolInfo {
            name: name.clone(),
            plugin: plugin.to_string(),
            description: spec.description.clone(),
            input_schema: schema,
            annotations: ToolAnnotations {
                read_only: a.read_only,
                destructive: a.destructive,
                idempotent: a.idempotent,
                open_world: a.open_world,
            },
        },
        validator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_follow_model_api_rules() {
        assert!(valid_tool_name("read_file") && valid_tool_name("a-b_C9"));
        assert!(!valid_tool_name("") && !valid_tool_name("read file") && !valid_tool_name(&"x".repeat(65)));
    }
}
