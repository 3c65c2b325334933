//! `toolhost policy check | set | explain`.

use std::path::Path;
use std::process::ExitCode;

use super::{ExplainArgs, refuse};
use crate::config::Config;
use crate::domain::ChatKind;
use crate::policy::{Inventory, PolicyError, Principal};

async fn inventory(config: &Config) -> anyhow::Result<Inventory> {
    let runtime = crate::app::plugin_runtime(config).await?;
    Ok(Inventory::of(runtime.loaded().plugins()))
}

fn read(file: &Path) -> anyhow::Result<Result<String, String>> {
    Ok(std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display())))
}

/// Validates a policy file against the schema and the installed plugins; prints each problem
/// as `FILE:LINE:COLUMN: message`. Exit 1 when invalid, 0 otherwise (warnings included).
pub(super) async fn check(config: &Config, file: &Path) -> anyhow::Result<ExitCode> {
    let text = match read(file)? {
        Ok(text) => text,
        Err(message) => return refuse(message),
    };
    let name = file.display();
    match crate::policy::check_text(&text, &inventory(config).await?) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{name}:{}:{}: warning: {}", warning.line, warning.column, rule_and(warning));
            }
            println!("{name}: valid ({} warnings)", checked.warnings.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(invalid) => {
            for problem in &invalid.problems {
                eprintln!("{name}:{}:{}: error: {}", problem.line, problem.column, rule_and(problem));
            }
            eprintln!("{name}: invalid ({} errors)", invalid.problems.len());
            Ok(ExitCode::from(1))
        }
    }
}

fn rule_and(problem: &crate::policy::Problem) -> String {
    match &problem.rule {
        Some(rule) => format!("[{rule}] {}", problem.message),
        None => problem.message.clone(),
    }
}

/// Stores a policy file as the active policy (what `PUT /api/v1/policy` does), as `author`.
pub(super) async fn set(config: &Config, file: &Path, author: &str) -> anyhow::Result<ExitCode> {
    let text = match read(file)? {
        Ok(text) => text,
        Err(message) => return refuse(message),
    };
    let runtime = crate::app::plugin_runtime(config).await?;
    let (_, engine) = crate::app::policy_engine(config, &runtime).await?;
    match engine.save(&text, author, "set with toolhost policy set").await {
        Ok(saved) => {
            for warning in &saved.warnings {
                eprintln!("{}: warning: {warning}", file.display());
            }
            println!("{}", serde_json::to_string(&saved)?);
            eprintln!(
                "toolhost: policy version {} is in force; running servers apply it at their chats' next step",
                saved.version
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(PolicyError::Invalid(invalid)) => {
            for problem in &invalid.problems {
                eprintln!("{}:{}:{}: error: {}", file.display(), problem.line, problem.column, rule_and(problem));
            }
            refuse("the policy is invalid; nothing was changed")
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints, for a chat or a synthetic one, every tool's visibility and every capability, with
/// the deciding rules.
pub(super) async fn explain(config: &Config, args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let runtime = crate::app::plugin_runtime(config).await?;
    let (store, engine) = crate::app::policy_engine(config, &runtime).await?;
    let principal = match &args.chat {
        Some(id) => {
            let Some(chat) = store.chat(id).await? else { return refuse(format!("there is no chat {id}")) };
            let model = chat.model.clone().unwrap_or_default();
            engine.principal(&chat, &model).await?
        }
        None => {
            let kind = args.kind.unwrap_or_default();
            Principal {
                id: "synthetic".into(),
                kind,
                depth: args.depth.unwrap_or(if kind == ChatKind::Root { 0 } else { 1 }),
                owner: args.owner.clone().unwrap_or_default(),
                owner_role: if args.admin { "admin".into() } else { "member".into() },
                model: args.model.clone().unwrap_or_default(),
            }
        }
    };
    let active = engine.active();
    let explanation = active.rules.explain(&principal);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"policy_version": active.version, "explanation": explanation})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy version {} for a {} chat (depth {}, owner {:?} {}, model {:?})",
        active.version,
        principal.kind_name(),
        principal.depth,
        principal.owner,
        principal.owner_role,
        principal.model
    );
    println!("{:<28} {:<10} {:<8} DECIDED BY", "TOOL", "VISIBLE", "CALL");
    for tool in &explanation.tools {
        println!("{:<28} {:<10} {:<8} {}", tool.tool, tool.visible, tool.callable, tool.decided_by);
    }
    println!("{:<28} {:<16} {:<8} DECIDED BY", "TOOL", "CAPABILITY", "ALLOWED");
    for capability in &explanation.capabilities {
        println!(
            "{:<28} {:<16} {:<8} {}",
            capability.tool, capability.capability, capability.allowed, capability.decided_by
        );
    }
    Ok(ExitCode::SUCCESS)
}
