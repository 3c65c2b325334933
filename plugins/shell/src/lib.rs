//! The bundled `shell` plugin: commands in the chat's workspace, in the foreground (with a
//! timeout) or the background (read and signal them later). Commands run non-interactively:
//! no terminal, no pager, no prompts.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use toolhost_plugin::exec::{self, Command, ProcessInfo, Signal};
use toolhost_plugin::{CallContext, Plugin, Tool, ToolError, ToolResult};

/// Output the model sees per call: the first and last halves when longer.
const MODEL_OUTPUT_BYTES: usize = 32 * 1024;
const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
const MAX_TIMEOUT_SECONDS: u64 = 1800;

struct Shell;

impl Plugin for Shell {
    const NAME: &'static str = "shell";
    const SUMMARY: &'static str = "Run commands in the chat's workspace";

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "execute",
                "Run a bash command in the workspace (its root is /workspace) and return its exit code and output (standard output and \
                 error together; long output keeps its beginning and end). Non-interactive: nothing can prompt for input. \
                 With run_in_background it returns at once with a process id: read it with process_output.",
                execute,
            )
            .destructive(),
            Tool::new("process_output", "The state and output so far of a background process started by execute.", process_output).read_only(),
            Tool::new("process_list", "The workspace's background processes, newest first.", process_list).read_only().idempotent(),
            Tool::new("process_signal", "Send a signal to a background process: interrupt, terminate, or kill.", process_signal).destructive(),
        ]
    }
}

toolhost_plugin::export_plugin!(Shell);

/// Arguments of `execute`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExecuteArgs {
    /// The command, run by `bash -c`.
    command: String,
    /// Seconds before the command (and everything it started) is stopped (default 60, at most 1800).
    #[schemars(range(min = 1, max = 1800))]
    timeout_seconds: Option<u64>,
    /// Folder to run in, relative to the workspace root (default: the root).
    workdir: Option<String>,
    /// Start it in the background and return its process id at once.
    #[serde(default)]
    run_in_background: bool,
}

/// Arguments of `process_output`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProcessArgs {
    /// The id execute returned, e.g. `proc-3`.
    process_id: String,
}

/// `process_list` takes no arguments.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum SignalName {
    Interrupt,
    Terminate,
    Kill,
}

/// Arguments of `process_signal`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SignalArgs {
    process_id: String,
    signal: SignalName,
}

fn execute(_ctx: &CallContext, args: ExecuteArgs) -> Result<ToolResult, ToolError> {
    let timeout_seconds = args.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS).clamp(1, MAX_TIMEOUT_SECONDS);
    let command = Command {
        command: args.command,
        workdir: args.workdir.unwrap_or_default(),
        env: Vec::new(),
        stdin: None,
        timeout_ms: timeout_seconds * 1000,
    };
    if args.run_in_background {
        let process = exec::spawn(&command)?;
        return ToolResult::json(&json!({
            "success": true,
            "background_process_id": process.id,
            "note": format!("started in the background; read it with process_output {{\"process_id\": \"{}\"}}", process.id),
        }));
    }
    let done = exec::run(&command)?;
    let (output, cut) = for_the_model(&done.output);
    let truncated = cut || done.omitted_bytes > 0;
    let mut notes = Vec::new();
    if truncated {
        notes.push(format!("the output was {} bytes; only its beginning and end are shown", done.output_bytes));
    }
    if done.timed_out {
        notes.push(format!("the command ran past its {timeout_seconds} s timeout and was stopped; raise timeout_seconds or run it in the background"));
    }
    if let Some(why) = &done.stopped_because {
        notes.push(format!("the command was stopped: {why}"));
    }
    let success = done.exit_code == Some(0) && !done.timed_out && done.stopped_because.is_none();
    let result = json!({
        "success": success,
        "exit_code": done.exit_code,
        "output": output,
        "wall_duration_ms": done.duration_ms,
        "timed_out": done.timed_out,
        "truncated": truncated,
        "note": if notes.is_empty() { None } else { Some(notes.join("; ")) },
    });
    let mut result = ToolResult::json(&result)?;
    result.is_error = !success;
    Ok(result)
}

/// At most [`MODEL_OUTPUT_BYTES`] of `output`: its beginning and end, cut on character
/// boundaries. Returns whether anything was cut.
fn for_the_model(output: &str) -> (String, bool) {
    if output.len() <= MODEL_OUTPUT_BYTES {
        return (output.to_string(), false);
    }
    let half = MODEL_OUTPUT_BYTES / 2;
    let mut head_end = half;
    while !output.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = output.len() - half;
    while !output.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let left_out = tail_start - head_end;
    (format!("{}\n[... {left_out} bytes left out ...]\n{}", &output[..head_end], &output[tail_start..]), true)
}

fn describe(process: &ProcessInfo) -> serde_json::Value {
    json!({
        "process_id": process.id,
        "command": process.command,
        "running": process.running,
        "exit_code": process.exit_code,
        "duration_ms": process.duration_ms,
    })
}

fn process_output(_ctx: &CallContext, args: ProcessArgs) -> Result<ToolResult, ToolError> {
    let (process, output) = exec::output(&args.process_id)?;
    let (output, truncated) = for_the_model(&output);
    let mut result = describe(&process);
    result["output"] = json!(output);
    result["truncated"] = json!(truncated);
    ToolResult::json(&result)
}

fn process_list(_ctx: &CallContext, _args: NoArgs) -> Result<ToolResult, ToolError> {
    let processes = exec::list()?;
    ToolResult::json(&json!({ "processes": processes.iter().map(describe).collect::<Vec<_>>() }))
}

fn process_signal(_ctx: &CallContext, args: SignalArgs) -> Result<ToolResult, ToolError> {
    let signal = match args.signal {
        SignalName::Interrupt => Signal::Interrupt,
        SignalName::Terminate => Signal::Terminate,
        SignalName::Kill => Signal::Kill,
    };
    exec::signal(&args.process_id, signal)?;
    Ok(ToolResult::text(format!("signal sent to {}; process_output shows whether it has ended", args.process_id)))
}
