//! The bundled `subagents` plugin: a chat delegates work to child chats that run in parallel
//! in the same workspace, waits for their reports, steers them, and closes them.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use toolhost_plugin::agents::{self, AgentKind, AgentReport, AgentStatus};
use toolhost_plugin::{CallContext, Plugin, Tool, ToolError, ToolResult};

const DEFAULT_WAIT_SECONDS: u64 = 300;

struct Subagents;

impl Plugin for Subagents {
    const NAME: &'static str = "subagents";
    const SUMMARY: &'static str = "Delegate work to subagent chats and collect their reports";

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "spawn_agent",
                "Start a subagent: a new chat that works on `prompt` on its own, in this chat's workspace, and ends with a report. \
                 Returns its chat id at once; several can run in parallel. Collect reports with wait_agent.",
                spawn_agent,
            ),
            Tool::new(
                "wait_agent",
                "Wait until the given subagents have finished (or the timeout passes, default 300 s) and return each one's report. \
                 A subagent that failed is reported as an error.",
                wait_agent,
            )
            .read_only(),
            Tool::new(
                "spawn_computer_use_agent",
                "Start a computer-use agent: a new chat that does `prompt` on the desktop of this chat's workspace with the mouse and keyboard \
                 (a browser, a GUI program), on the model the admin chose for computer use, and ends with a report. \
                 Returns its chat id at once; collect its report with wait_agent. The workspace must exist first.",
                spawn_computer_use_agent,
            ),
            Tool::new("message_agent", "Send a subagent a message: it runs after the subagent's current turn, or at once with interrupt.", message_agent),
            Tool::new("close_agent", "Stop a subagent's work (it keeps what it did and waits); returns its last report.", close_agent).destructive(),
        ]
    }
}

toolhost_plugin::export_plugin!(Subagents);

/// Arguments of `spawn_agent`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpawnArgs {
    /// The task, complete: the subagent sees nothing of this chat but this.
    prompt: String,
    /// A short title for the subagent's chat.
    title: Option<String>,
}

/// Arguments of `wait_agent`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    /// Ids spawn_agent returned.
    #[schemars(length(min = 1))]
    chat_ids: Vec<String>,
    /// Seconds to wait at most (default 300; the server keeps it between 1 and 3600).
    timeout_seconds: Option<u64>,
}

/// Arguments of `message_agent`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MessageArgs {
    chat_id: String,
    message: String,
    /// Stop its current turn and handle this message now.
    #[serde(default)]
    interrupt: bool,
}

/// Arguments of `close_agent`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CloseArgs {
    chat_id: String,
}

fn status_name(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Pending => "pending",
        AgentStatus::Running => "running",
        AgentStatus::Waiting => "finished",
        AgentStatus::Error => "error",
    }
}

fn describe(report: &AgentReport) -> Value {
    json!({
        "chat_id": report.chat_id,
        "title": report.title,
        "status": status_name(report.status),
        "report": report.report,
        "error": report.error,
    })
}

fn spawn_agent(_ctx: &CallContext, args: SpawnArgs) -> Result<ToolResult, ToolError> {
    let chat_id = agents::spawn(&args.prompt, args.title.as_deref(), AgentKind::Subagent)?;
    ToolResult::json(&json!({ "chat_id": chat_id, "note": "started; collect its report with wait_agent" }))
}

fn spawn_computer_use_agent(_ctx: &CallContext, args: SpawnArgs) -> Result<ToolResult, ToolError> {
    let chat_id = agents::spawn(&args.prompt, args.title.as_deref(), AgentKind::ComputerUse)?;
    ToolResult::json(
        &json!({ "chat_id": chat_id, "note": "started on the desktop; collect its report with wait_agent" }),
    )
}

fn wait_agent(_ctx: &CallContext, args: WaitArgs) -> Result<ToolResult, ToolError> {
    let timeout_ms = args.timeout_seconds.unwrap_or(DEFAULT_WAIT_SECONDS).saturating_mul(1000);
    let reports = agents::wait(&args.chat_ids, timeout_ms)?;
    let failed: Vec<&AgentReport> = reports.iter().filter(|r| r.status == AgentStatus::Error).collect();
    let unfinished = reports.iter().filter(|r| matches!(r.status, AgentStatus::Pending | AgentStatus::Running)).count();
    let mut result = json!({ "agents": reports.iter().map(describe).collect::<Vec<_>>() });
    if unfinished > 0 {
        result["note"] =
            json!(format!("{unfinished} subagent(s) are still working; call wait_agent again to keep waiting"));
    }
    if !failed.is_empty() {
        let errors: Vec<String> = failed
            .iter()
            .map(|r| format!("subagent {} failed: {}", r.chat_id, r.error.as_deref().unwrap_or("no error recorded")))
            .collect();
        result["error"] = json!(errors.join("; "));
    }
    let mut result = ToolResult::json(&result)?;
    result.is_error = !failed.is_empty();
    Ok(result)
}

fn message_agent(_ctx: &CallContext, args: MessageArgs) -> Result<ToolResult, ToolError> {
    agents::send(&args.chat_id, &args.message, args.interrupt)?;
    let when = if args.interrupt { "it handles it now" } else { "it handles it after its current turn" };
    Ok(ToolResult::text(format!("message sent to {}; {when}", args.chat_id)))
}

fn close_agent(_ctx: &CallContext, args: CloseArgs) -> Result<ToolResult, ToolError> {
    let report = agents::close(&args.chat_id)?;
    ToolResult::json(&describe(&report))
}
