//! The desktops of this server's workspaces: started on demand (one per workspace, however
//! many chats ask at once), shared with the workspace's commands while they run, and ended
//! with the workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backend::RunningCommand;
use super::command::{Bind, CommandSpec};
use super::desktop::display::Display;
use super::desktop::{self, Desktop, DesktopConfig, Folders};
use super::{WorkspaceError, WorkspaceService, require_ready};
use crate::keyed_lock::KeyedLock;
use crate::store::Workspace;

/// How often a starting desktop's X socket is tried.
const SOCKET_POLL: Duration = Duration::from_millis(5);

/// Running desktops by workspace id.
#[derive(Default)]
pub struct Desktops {
    running: Mutex<HashMap<String, Arc<Desktop>>>,
    starts: KeyedLock,
    pub config: DesktopConfig,
    /// Found once, at start: see [`WorkspaceService::desktop_problem`].
    missing_programs: Option<String>,
}

impl Desktops {
    pub fn new(config: DesktopConfig) -> Desktops {
        Desktops { config, missing_programs: missing_desktop_programs(), ..Desktops::default() }
    }

    /// The workspace's desktop, if one is running.
    pub fn running(&self, workspace_id: &str) -> Option<Arc<Desktop>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.get(workspace_id).filter(|d| d.alive()).cloned()
    }

    /// Forgets (and so ends) the workspace's desktop.
    pub fn end(&self, workspace_id: &str) {
        if let Some(desktop) = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(workspace_id) {
            desktop.ended.cancel();
        }
    }
}

impl WorkspaceService {
    /// The workspace's desktop, started now if it is not running.
    pub async fn desktop(&self, workspace: &Workspace) -> Result<Arc<Desktop>, WorkspaceError> {
        if let Some(desktop) = self.desktops.running(&workspace.id) {
            return Ok(desktop);
        }
        require_ready(workspace)?;
        self.on_this_node(workspace)?;
        if let Some(why) = self.desktop_problem() {
            return Err(WorkspaceError::Failed(why));
        }
        let _one_start = self.desktops.starts.lock(&workspace.id).await;
        if let Some(desktop) = self.desktops.running(&workspace.id) {
            return Ok(desktop);
        }
        let desktop = Arc::new(self.start_desktop(workspace).await?);
        tracing::info!(
            workspace_id = %workspace.id,
            width = desktop.scaling.real_width,
            height = desktop.scaling.real_height,
            started_ms = desktop.started_in.as_millis() as u64,
            "desktop started"
        );
        self.desktops.running.lock().unwrap_or_else(|e| e.into_inner()).insert(workspace.id.clone(), desktop.clone());
        Ok(desktop)
    }

    async fn start_desktop(&self, workspace: &Workspace) -> Result<Desktop, WorkspaceError> {
        let started = Instant::now();
        let geometry = self.templates().get(&workspace.template_id).map(|t| t.desktop.clone()).unwrap_or_default();
        let folders = self.backend.prepare_desktop(workspace)?;
        let spec = CommandSpec {
            command: desktop::server_script(&geometry),
            binds: vec![
                Bind { host: folders.x11.clone(), inside: desktop::X11_MOUNT.into(), writable: true },
                Bind { host: folders.vnc.clone(), inside: desktop::VNC_MOUNT.into(), writable: true },
            ],
            ..CommandSpec::default()
        };
        let mut running = self.backend.start(workspace, &spec)?;
        let timeout = Duration::from_secs(self.desktops.config.start_timeout_secs.max(1));
        let (display, sandbox_pid) = match connect(&mut running, &folders, timeout).await {
            Ok(connected) => connected,
            Err(why) => return Err(abandon(running, why).await),
        };
        let settle = Duration::from_millis(self.desktops.config.settle_ms);
        let desktop = Desktop::new(&workspace.id, display, &folders, sandbox_pid, settle, started.elapsed());
        tokio::spawn(keep(running, self.stop_token(&workspace.id), desktop.ended.clone(), workspace.id.clone()));
        Ok(desktop)
    }

    /// Lets `spec` reach the workspace's desktop, when one runs: its X socket folder and
    /// `DISPLAY`.
    pub(super) fn share_display(&self, workspace: &Workspace, spec: &mut CommandSpec) {
        if self.desktops.running(&workspace.id).is_none() {
            return;
        }
        if let Some(folders) = self.backend.desktop_folders(&workspace.id) {
            spec.binds.push(Bind { host: folders.x11, inside: desktop::X11_MOUNT.into(), writable: false });
            spec.env.push(("DISPLAY".into(), desktop::DISPLAY.into()));
        }
    }

    /// The workspace's display as the model sees it: the running desktop's, else the one its
    /// template describes.
    pub fn desktop_scaling(&self, workspace: &Workspace) -> desktop::picture::Scaling {
        if let Some(running) = self.desktops.running(&workspace.id) {
            return running.scaling;
        }
        self.templates().get(&workspace.template_id).map(|t| t.desktop.clone()).unwrap_or_default().scaling()
    }

    /// Desktops running on this server.
    pub fn desktops(&self) -> &Desktops {
        &self.desktops
    }

    /// Why this server cannot run desktops, if it cannot: its sandbox, or the desktop's
    /// programs missing (`bash .ci/system-deps` installs them).
    pub fn desktop_problem(&self) -> Option<String> {
        self.backend.desktop_problem().or_else(|| self.desktops.missing_programs.clone())
    }
}

/// The programs a desktop runs, which the host's PATH must have.
const DESKTOP_PROGRAMS: [&str; 2] = ["Xvnc", "twm"];

/// Which of the desktop's programs are not on the PATH, said for an operator.
fn missing_desktop_programs() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = DESKTOP_PROGRAMS
        .into_iter()
        .filter(|program| !std::env::split_paths(&path).any(|folder| folder.join(program).is_file()))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the desktop's programs are not installed ({}); install tigervnc-standalone-server and twm",
            missing.join(", ")
        )
    })
}

/// Waits until the starting desktop's X server accepts connections, then connects to drive
/// it: the connection, and the first process of the desktop's sandbox.
async fn connect(
    running: &mut Box<dyn RunningCommand>,
    folders: &Folders,
    timeout: Duration,
) -> Result<(Display, u32), String> {
    let sandbox_pid = running.pid().ok_or("it ended at once")?;
    accepting(running, folders, sandbox_pid, timeout).await?;
    let socket = folders.x_socket();
    let display =
        tokio::task::spawn_blocking(move || desktop::socket::connect(&socket, sandbox_pid).and_then(Display::connect))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|why| format!("it started but cannot be driven: {why}"))?;
    Ok((display, sandbox_pid))
}

/// Ends a desktop that did not start: why, with what its X server said.
async fn abandon(mut running: Box<dyn RunningCommand>, why: String) -> WorkspaceError {
    running.signal(rustix::process::Signal::KILL).await;
    let output = running.finish_output().await;
    let said = output.text.trim();
    WorkspaceError::Failed(if said.is_empty() {
        format!("the desktop did not start: {why}")
    } else {
        format!("the desktop did not start: {why}; its X server said: {said}")
    })
}

/// Waits until the X server accepts connections on its socket, or fails to.
async fn accepting(
    running: &mut Box<dyn RunningCommand>,
    folders: &Folders,
    sandbox_pid: u32,
    timeout: Duration,
) -> Result<(), String> {
    let socket = folders.x_socket();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let refused = match desktop::socket::connect(&socket, sandbox_pid) {
            Ok(_) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "its X server did not accept connections within {} s (last: {refused})",
                timeout.as_secs()
            ));
        }
        tokio::select! {
            code = running.wait() => {
                return Err(match code {
                    Some(code) => format!("its X server exited with code {code}"),
                    None => "its X server was killed".to_string(),
                });
            }
            _ = tokio::time::sleep(SOCKET_POLL) => {}
        }
    }
}

/// Keeps the desktop's process until it ends, the workspace stops, or the desktop is ended.
async fn keep(
    mut running: Box<dyn RunningCommand>,
    workspace_stopped: CancellationToken,
    ended: CancellationToken,
    workspace_id: String,
) {
    tokio::select! {
        code = running.wait() => {
            tracing::warn!(%workspace_id, ?code, "the desktop's X server ended");
        }
        _ = workspace_stopped.cancelled() => running.signal(rustix::process::Signal::KILL).await,
        _ = ended.cancelled() => running.signal(rustix::process::Signal::KILL).await,
    }
    ended.cancel();
}
