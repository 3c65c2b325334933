//! The bundled `workspaces` plugin: find a template, create the chat's workspace from it and
//! wait until its startup script has finished, and start it again when it is stopped.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use toolhost_plugin::workspaces::{self, CreateOutcome, TemplateInfo, WorkspaceInfo, WorkspaceStatus};
use toolhost_plugin::{CallContext, Plugin, Tool, ToolError, ToolResult, progress};

/// Longest `create_workspace` or `start_workspace` waits for a startup script; the template's
/// own startup timeout normally ends the wait much sooner.
const MAX_WAIT_MS: u64 = 60 * 60 * 1000;

struct Workspaces;

impl Plugin for Workspaces {
    const NAME: &'static str = "workspaces";
    const SUMMARY: &'static str = "Find templates, create the chat's workspace and start it";

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("list_templates", "List the templates a workspace can be made from, optionally only those matching every word of `query`.", list_templates).read_only().idempotent(),
            Tool::new("read_template", "Show a template in full: its parameters (type, required, default, options, validation) and whether it allows the network.", read_template)
                .read_only()
                .idempotent(),
            Tool::new(
                "create_workspace",
                "Create this chat's workspace from a template and wait until its startup script has finished; returns the outcome. \
                 If the chat already has a workspace it is reused (or, when stopped, you are told to use start_workspace). \
                 Commands and file tools then work in it; its root is /workspace.",
                create_workspace,
            )
            .idempotent(),
            Tool::new("start_workspace", "Start this chat's stopped workspace (its startup script runs again) and wait until it is ready. Does nothing if it is running.", start_workspace)
                .idempotent(),
        ]
    }
}

toolhost_plugin::export_plugin!(Workspaces);

/// Arguments of `list_templates`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Words to look for in a template's id, name and description.
    query: Option<String>,
}

/// Arguments of `read_template`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    /// A template's `id`, from list_templates.
    template_id: String,
}

/// Arguments of `create_workspace`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    /// A template's `id`, from list_templates.
    template_id: String,
    /// A name for the workspace (made up from the template when absent).
    name: Option<String>,
    /// Values of the template's parameters, by name (see read_template).
    parameters: Option<Map<String, Value>>,
}

/// `start_workspace` takes no arguments.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn summary(template: &TemplateInfo) -> Value {
    json!({
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "network": template.network,
        "parameters": template.parameters.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
    })
}

fn list_templates(_ctx: &CallContext, args: ListArgs) -> Result<ToolResult, ToolError> {
    let templates = workspaces::list_templates(args.query.as_deref());
    if templates.is_empty() {
        return Ok(ToolResult::text(match args.query {
            Some(query) => {
                format!("no template matches `{query}`; call list_templates without a query to see them all")
            }
            None => "no templates are installed; an admin adds them to the templates directory".into(),
        }));
    }
    ToolResult::json(&json!({ "templates": templates.iter().map(summary).collect::<Vec<_>>() }))
}

fn read_template(_ctx: &CallContext, args: ReadArgs) -> Result<ToolResult, ToolError> {
    let template = workspaces::read_template(&args.template_id)?;
    let parameters: Vec<Value> = template
        .parameters
        .iter()
        .map(|p| {
            let parse = |text: &String| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.clone()));
            json!({
                "name": p.name,
                "description": p.description,
                "type": format!("{:?}", p.type_).to_lowercase(),
                "required": p.required,
                "default": p.default.as_ref().map(parse),
                "options": p.options.iter().map(parse).collect::<Vec<_>>(),
                "pattern": p.pattern,
                "min": p.min,
                "max": p.max,
            })
        })
        .collect();
    ToolResult::json(&json!({
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "network": template.network,
        "startup_timeout_seconds": template.startup_timeout_seconds,
        "parameters": parameters,
    }))
}

fn create_workspace(_ctx: &CallContext, args: CreateArgs) -> Result<ToolResult, ToolError> {
    let parameters = Value::Object(args.parameters.unwrap_or_default()).to_string();
    let (outcome, workspace) = workspaces::create(&args.template_id, args.name.as_deref(), &parameters)?;
    match outcome {
        CreateOutcome::Stopped => Ok(ToolResult::error_text(format!(
            "this chat already has workspace `{}`, and it is {} ({}); use start_workspace to start it",
            workspace.name,
            workspace.status.as_str(),
            workspace.detail.as_deref().unwrap_or("no detail")
        ))),
        CreateOutcome::Created | CreateOutcome::Reused => {
            let reused = outcome == CreateOutcome::Reused;
            let workspace = wait(workspace)?;
            outcome_of(&workspace, if reused { "this chat's existing workspace" } else { "the new workspace" })
        }
    }
}

fn start_workspace(_ctx: &CallContext, _args: NoArgs) -> Result<ToolResult, ToolError> {
    let Some(workspace) = workspaces::current() else {
        return Err(ToolError::Failed("this chat has no workspace; create one with create_workspace".into()));
    };
    if workspace.status == WorkspaceStatus::Ready {
        return Ok(ToolResult::text(format!("workspace `{}` is already running", workspace.name)));
    }
    let workspace = if workspace.status.is_building() { workspace } else { workspaces::start()? };
    outcome_of(&wait(workspace)?, "the workspace")
}

/// Waits for the startup script, telling the person watching what is happening.
fn wait(workspace: WorkspaceInfo) -> Result<WorkspaceInfo, ToolError> {
    if !workspace.status.is_building() {
        return Ok(workspace);
    }
    progress::report(&format!("waiting for workspace `{}` to run its startup script", workspace.name), None);
    Ok(workspaces::wait_ready(MAX_WAIT_MS)?)
}

fn outcome_of(workspace: &WorkspaceInfo, what: &str) -> Result<ToolResult, ToolError> {
    let detail = workspace.detail.as_deref().unwrap_or("").trim();
    let name = &workspace.name;
    match workspace.status {
        WorkspaceStatus::Ready => Ok(ToolResult::text(format!(
            "{what}, `{name}` (template `{}`), is ready. Its root is /workspace: file tools take paths relative to it, and commands start there.\n{detail}",
            workspace.template_id
        ))),
        WorkspaceStatus::StartError => Ok(ToolResult::error_text(format!(
            "{what}, `{name}`, failed to start: {detail}\nFix the cause if you can, then call start_workspace."
        ))),
        WorkspaceStatus::StartTimeout => Ok(ToolResult::error_text(format!(
            "{what}, `{name}`, did not finish starting in time: {detail}\nCall start_workspace to try again."
        ))),
        WorkspaceStatus::Stopped => {
            Ok(ToolResult::error_text(format!("{what}, `{name}`, is stopped ({detail}); use start_workspace")))
        }
        WorkspaceStatus::Created | WorkspaceStatus::Starting => Ok(ToolResult::error_text(format!(
            "{what}, `{name}`, is still starting; call start_workspace later to wait for it"
        ))),
    }
}
