//! Commands in the calling chat's workspace, inside its sandbox (capability `workspace-exec`).

use crate::ToolError;
use crate::bindings::toolhost::plugin::workspace_exec as wit;
pub use crate::bindings::toolhost::plugin::workspace_exec::{Command, Completed, ExecError, ProcessInfo, Signal};

/// Runs a command to its end or its timeout.
pub fn run(command: &Command) -> Result<Completed, ExecError> {
    wit::run(command)
}

/// Starts a command in the background.
pub fn spawn(command: &Command) -> Result<ProcessInfo, ExecError> {
    wit::spawn(command)
}

/// A background process and its output so far.
pub fn output(process_id: &str) -> Result<(ProcessInfo, String), ExecError> {
    wit::output(process_id)
}

/// The workspace's background processes, newest first.
pub fn list() -> Result<Vec<ProcessInfo>, ExecError> {
    wit::list()
}

pub fn signal(process_id: &str, signal: Signal) -> Result<(), ExecError> {
    wit::send_signal(process_id, signal)
}

impl From<ExecError> for ToolError {
    fn from(e: ExecError) -> ToolError {
        match e {
            ExecError::Denied(m) => ToolError::Denied(m),
            ExecError::NoWorkspace => {
                ToolError::Failed("this chat has no workspace; create one with create_workspace".into())
            }
            ExecError::NotReady(m) | ExecError::Failed(m) => ToolError::Failed(m),
            ExecError::Invalid(m) => ToolError::InvalidArguments(m),
            ExecError::NotFound(m) => ToolError::NotFound(m),
        }
    }
}
