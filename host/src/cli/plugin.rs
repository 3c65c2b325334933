//! `toolhost plugin list | inspect | call`.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::{CallArgs, refuse};
use crate::config::Config;
use crate::plugins::{CallContext, CallRequest, PluginInfo, PluginRuntime};

pub(super) async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = crate::app::plugin_runtime(config).await?.loaded();
    if json {
        let plugins: Vec<&PluginInfo> = runtime.plugins().collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "plugins": plugins, "refused": runtime.refused() }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<16} {:<9} {:<14} {:<28} TOOLS", "PLUGIN", "VERSION", "SHA256", "CAPABILITIES");
    for plugin in runtime.plugins() {
        let tools: Vec<&str> = plugin.tools.iter().map(|t| t.name.as_str()).collect();
        println!(
            "{:<16} {:<9} {:<14} {:<28} {}",
            plugin.name,
            plugin.version,
            &plugin.sha256[..12],
            or_none(&plugin.capabilities.join(",")),
            tools.join(", ")
        );
    }
    for refusal in runtime.refused() {
        println!("refused: {refusal}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn inspect(config: &Config, file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let info = match PluginRuntime::inspect_file(&config.runtime_options(), file).await? {
        Ok(info) => info,
        Err(refusal) => return refuse(format!("refused {refusal}")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin:        {} {} ({})", info.name, info.version, info.summary);
    println!("file:          {}", info.source);
    println!("sha256:        {}", info.sha256);
    println!("wit:           toolhost:plugin@{}", info.wit_version);
    println!("capabilities:  {}", or_none(&info.capabilities.join(", ")));
    println!("system:        {}", or_none(&info.system_imports.join(", ")));
    println!("tools:");
    for tool in &info.tools {
        let a = tool.annotations;
        let flags: Vec<&str> = [
            (a.read_only, "read-only"),
            (a.destructive, "destructive"),
            (a.idempotent, "idempotent"),
            (a.open_world, "open-world"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        println!("  {} [{}]: {}", tool.name, flags.join(", "), tool.description);
        println!("    arguments: {}", tool.input_schema);
    }
    Ok(ExitCode::SUCCESS)
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// Parses `--args` and builds the request the CLI makes, as a root chat of a local user.
pub(super) fn request(args: &CallArgs) -> Result<CallRequest, String> {
    let arguments: serde_json::Value =
        serde_json::from_str(&args.args).map_err(|e| format!("--args is not valid JSON: {e}"))?;
    if !arguments.is_object() {
        return Err("--args must be a JSON object, e.g. '{\"path\": \"README.md\"}'".into());
    }
    if let Some(workspace) = &args.workspace
        && !workspace.is_dir()
    {
        return Err(format!("--workspace `{}` is not a directory", workspace.display()));
    }
    Ok(CallRequest {
        tool: args.tool.clone(),
        arguments,
        context: CallContext {
            chat_id: "cli".into(),
            root_chat_id: "cli".into(),
            parent_chat_id: None,
            kind: args.kind,
            user_id: "cli".into(),
            call_id: "cli-1".into(),
        },
        workspace: args.workspace.clone().map(|path| crate::workspace::confined::WorkspaceRoot { path, owner: None }),
        chat: None,
        grants: None,
        progress: None,
    })
}

pub(super) async fn call(config: &Config, args: &CallArgs) -> anyhow::Result<ExitCode> {
    let request = match request(args) {
        Ok(request) => request,
        Err(reason) => return refuse(reason),
    };
    let runtime = crate::app::plugin_runtime(config).await?;
    match runtime.call(request).await {
        Ok(output) => {
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("{}", json!({ "error": { "code": error.code(), "message": error.to_string() } }));
            eprintln!("toolhost: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
