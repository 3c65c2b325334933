//! Capability `workspace-exec`: commands in the calling chat's workspace, inside its sandbox.
//! Each use is checked against the policy with the working directory as its scope. Commands
//! reach the network only when the workspace's template allows it and the policy grants the
//! `network` capability to this call; otherwise they run offline.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability, NETWORK};
use crate::plugins::bindings::toolhost::plugin::workspace_exec::{
    self as wit, Command, Completed, ExecError, ProcessInfo, Signal,
};
use crate::store::Workspace;
use crate::workspace::sandbox::{CommandSpec, confine_workdir};
use crate::workspace::{WorkspaceError, processes};

/// Largest stdin a command may be given.
const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

pub struct WorkspaceExec;

impl Capability for WorkspaceExec {
    const NAME: &'static str = "workspace-exec";
    // Its state is the chat's services, shared by the capabilities that reach them.
    type State = ();

    fn new_state(_: &CallSetup) {}

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl CallState {
    /// Checks the grant (scoped to `workdir` when given). No borrow of the call's state may be
    /// held across an await (it is not `Sync`), hence the owned copy.
    fn exec_access(&self, workdir: Option<&str>) -> Result<super::ChatServices, ExecError> {
        let plugin = &self.identity.plugin;
        match workdir {
            Some(workdir) => {
                // The scope is the folder as the policy would name it: `./a/`, `/workspace/a`
                // and `a` are all `a`.
                let folder = confine_workdir(workdir).map_err(|e| ExecError::Invalid(e.to_string()))?;
                let scope = folder
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .filter(|c| c != ".")
                    .collect::<Vec<_>>()
                    .join("/");
                self.grants.require_scoped(WorkspaceExec::NAME, plugin, if scope.is_empty() { "." } else { &scope })
            }
            None => self.grants.require(WorkspaceExec::NAME, plugin),
        }
        .map_err(ExecError::Denied)?;
        self.chat.clone().ok_or(ExecError::NoWorkspace)
    }

    /// Whether this call may reach the network (asked only of workspaces whose template
    /// allows it, so offline workspaces never fill the audit log with network denials).
    fn network_allowed(&self, workspace: &Workspace) -> bool {
        workspace.network && self.grants.check_extra(NETWORK).is_ok()
    }

    /// The private destinations the template names that the policy lets this call reach
    /// (`network` with the destination as scope).
    fn private_destinations(&self, access: &super::ChatServices, workspace: &Workspace) -> Vec<String> {
        let mut destinations = access.workspaces.private_destinations(workspace);
        destinations.retain(|destination| self.grants.check_extra_scoped(NETWORK, destination).is_ok());
        destinations
    }

    fn spec(&self, command: Command) -> Result<CommandSpec, ExecError> {
        if command.command.trim().is_empty() {
            return Err(ExecError::Invalid("the command is empty".into()));
        }
        if command.stdin.as_ref().is_some_and(|s| s.len() > MAX_STDIN_BYTES) {
            return Err(ExecError::Invalid(format!("stdin is larger than {} MiB", MAX_STDIN_BYTES / (1024 * 1024))));
        }
        Ok(CommandSpec {
            command: command.command,
            workdir: command.workdir,
            env: command.env,
            stdin: command.stdin,
            ..CommandSpec::default()
        })
    }
}

/// The workspace of the chat the call works for.
async fn chat_workspace(access: &super::ChatServices) -> Result<Workspace, ExecError> {
    access.workspaces.of_scope(&access.scope).await.map_err(to_wit)?.ok_or(ExecError::NoWorkspace)
}

impl wit::Host for CallState {
    async fn run(&mut self, command: Command) -> Result<Completed, ExecError> {
        let access = self.exec_access(Some(&command.workdir))?;
        let timeout = Duration::from_millis(command.timeout_ms.max(1));
        let spec = self.spec(command)?;
        let host_waits = self.host_waits.clone();
        let workspace = chat_workspace(&access).await?;
        let network = self.network_allowed(&workspace);
        let mut spec = spec;
        if network {
            spec.private_destinations = self.private_destinations(&access, &workspace);
        }
        let done =
            host_waits.during(access.workspaces.run(&workspace, spec, timeout, network)).await.map_err(to_wit)?;
        Ok(Completed {
            exit_code: done.exit_code,
            output: done.output.text,
            output_bytes: done.output.total_bytes,
            omitted_bytes: done.output.omitted_bytes,
            duration_ms: done.duration_ms,
            timed_out: done.timed_out,
            stopped_because: done.stopped_because,
            network,
        })
    }

    async fn spawn(&mut self, command: Command) -> Result<ProcessInfo, ExecError> {
        let access = self.exec_access(Some(&command.workdir))?;
        let spec = self.spec(command)?;
        let workspace = chat_workspace(&access).await?;
        let network = self.network_allowed(&workspace);
        let mut spec = spec;
        if network {
            spec.private_destinations = self.private_destinations(&access, &workspace);
        }
        access.workspaces.spawn(&workspace, spec, network).map(process_info).map_err(to_wit)
    }

    async fn output(&mut self, process_id: String) -> Result<(ProcessInfo, String), ExecError> {
        let access = self.exec_access(None)?;
        let workspace = chat_workspace(&access).await?;
        let (info, output) =
            access.workspaces.processes().output(&workspace.id, &process_id).ok_or_else(|| not_found(&process_id))?;
        Ok((process_info(info), output))
    }

    async fn list(&mut self) -> Result<Vec<ProcessInfo>, ExecError> {
        let access = self.exec_access(None)?;
        let workspace = chat_workspace(&access).await?;
        Ok(access.workspaces.processes().list(&workspace.id).into_iter().map(process_info).collect())
    }

    async fn send_signal(&mut self, process_id: String, signal: Signal) -> Result<(), ExecError> {
        let access = self.exec_access(None)?;
        let workspace = chat_workspace(&access).await?;
        let signal = match signal {
            Signal::Interrupt => rustix::process::Signal::INT,
            Signal::Terminate => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        };
        if access.workspaces.processes().signal(&workspace.id, &process_id, signal) {
            Ok(())
        } else {
            Err(not_found(&process_id))
        }
    }
}

fn not_found(process_id: &str) -> ExecError {
    ExecError::NotFound(format!(
        "there is no background process `{process_id}` in this workspace; process_list shows them"
    ))
}

fn process_info(info: processes::ProcessInfo) -> ProcessInfo {
    ProcessInfo {
        id: info.id,
        command: info.command,
        running: info.running,
        exit_code: info.exit_code,
        started_ms: info.started_ms.max(0) as u64,
        duration_ms: info.duration_ms,
    }
}

fn to_wit(error: WorkspaceError) -> ExecError {
    match error {
        WorkspaceError::NotFound(m) => ExecError::NotFound(m),
        WorkspaceError::Invalid(m) => ExecError::Invalid(m),
        WorkspaceError::Denied(m) => ExecError::Denied(m),
        WorkspaceError::NotReady(m) => ExecError::NotReady(m),
        WorkspaceError::Conflict(m) | WorkspaceError::Failed(m) => ExecError::Failed(m),
        WorkspaceError::Store(e) => ExecError::Failed(super::database_failed(&e, "workspace-exec")),
    }
}
