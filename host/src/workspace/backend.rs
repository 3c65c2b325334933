//! The seam between the workspace service and where workspaces live. `local` keeps them in
//! folders under the data directory and confines commands with bubblewrap; a remote backend
//! (an agent on another machine) would implement the same trait.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::WorkspaceError;
use super::command::{Capture, CommandSpec, Completed, Output};
use super::confined::{Owner, WorkspaceRoot, chown_tree};
use super::desktop::Folders;
use super::disk::Disks;
use super::sandbox::SandboxMode;
use super::sandbox::{Mounts, Running, Sandbox};
use super::template::Template;
use crate::store::Workspace;

pub trait Backend: Send + Sync {
    /// The name stored with each workspace, e.g. `local`.
    fn name(&self) -> &'static str;

    /// Lays out a new workspace: its folders and the template's files.
    fn provision<'a>(
        &'a self,
        workspace: &'a Workspace,
        template: &'a Template,
    ) -> BoxFuture<'a, Result<(), WorkspaceError>>;

    /// Runs a command to its end, or until `timeout` or `cancel`.
    fn run<'a>(
        &'a self,
        workspace: &'a Workspace,
        spec: &'a CommandSpec,
        timeout: Duration,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Completed, WorkspaceError>>;

    /// Why the workspace is over its quota, if it is.
    fn over_quota<'a>(&'a self, workspace: &'a Workspace) -> BoxFuture<'a, Option<String>>;

    /// Starts a command and returns at once.
    fn start(&self, workspace: &Workspace, spec: &CommandSpec) -> Result<Box<dyn RunningCommand>, WorkspaceError>;

    /// Why commands cannot run at all here, if they cannot.
    fn problem(&self) -> Option<String>;

    /// Where workspace `id` keeps its files on this machine; `None` when they are elsewhere.
    fn files_of(&self, id: &str) -> Option<PathBuf>;

    /// The folder holding the workspace's files on this machine, for the `workspace-fs`
    /// capability, the prompt and git watch (always through [`super::confined`]); `None` when
    /// the files are elsewhere.
    fn files_root(&self, workspace: &Workspace) -> Option<WorkspaceRoot>;

    /// Why this backend runs no desktops, if it does not.
    fn desktop_problem(&self) -> Option<String>;

    /// Lays out fresh folders for the workspace's desktop (an earlier X server's sockets go),
    /// or says why this backend runs no desktops.
    fn prepare_desktop(&self, workspace: &Workspace) -> Result<Folders, WorkspaceError>;

    /// Where the desktop of workspace `id` keeps its sockets on this machine.
    fn desktop_folders(&self, id: &str) -> Option<Folders>;

    /// Removes everything the workspace holds.
    fn destroy<'a>(&'a self, workspace: &'a Workspace) -> BoxFuture<'a, Result<(), WorkspaceError>>;
}

/// A command started in the background, wherever it runs.
pub trait RunningCommand: Send {
    /// Its output so far, shared while it runs.
    fn capture(&self) -> Arc<Mutex<Capture>>;
    /// Waits for its end: its exit code, `None` when a signal ended it.
    fn wait(&mut self) -> BoxFuture<'_, Option<i32>>;
    /// Sends `signal` to its processes; `SIGKILL` ends the command and everything it started.
    fn signal(&mut self, signal: rustix::process::Signal) -> BoxFuture<'_, ()>;
    /// Waits (briefly) for the last of its output; what was kept.
    fn finish_output(&mut self) -> BoxFuture<'_, Output>;
    /// The host's id of its first process (the sandbox's), while it runs: every process of
    /// the command runs below it.
    fn pid(&self) -> Option<u32>;
}

impl RunningCommand for Running {
    fn capture(&self) -> Arc<Mutex<Capture>> {
        self.capture.clone()
    }

    fn wait(&mut self) -> BoxFuture<'_, Option<i32>> {
        Box::pin(async move { self.child.wait().await.ok().and_then(|status| status.code()) })
    }

    fn signal(&mut self, signal: rustix::process::Signal) -> BoxFuture<'_, ()> {
        Box::pin(Running::signal(self, signal))
    }

    fn finish_output(&mut self) -> BoxFuture<'_, Output> {
        Box::pin(Running::finish_output(self))
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// Workspaces as folders under `root`: `<id>/files` (mounted at `/workspace`) and `<id>/home`
/// (the agent's home, kept between commands but out of the project's files).
pub struct LocalBackend {
    root: PathBuf,
    /// `Err` says why commands cannot run here (bubblewrap missing, and no unsandboxed mode).
    sandbox: Result<Sandbox, String>,
    /// File systems of their own for workspaces, where the kernel enforces the disk quota.
    disks: Option<Arc<Disks>>,
}

impl LocalBackend {
    pub fn new(root: PathBuf, sandbox: Result<Sandbox, String>) -> LocalBackend {
        // Absolute, so that the same folder can be named in the disks' namespace. It stays
        // searchable by others: bubblewrap, as the commands' user, resolves the folders it is
        // handed by their path.
        let _ = std::fs::create_dir_all(&root);
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let disks = match &sandbox {
            Ok(sandbox) if sandbox.mode() == SandboxMode::Bubblewrap => Disks::probe().map(Arc::new),
            _ => None,
        };
        LocalBackend { root, sandbox, disks }
    }

    pub fn mounts(&self, workspace: &Workspace) -> Mounts {
        self.mounts_of(&workspace.id)
    }

    /// The folders of workspace `id`: on its own file system (mounted first, after a restart)
    /// when it has one.
    pub fn mounts_of(&self, id: &str) -> Mounts {
        let folder = self.root.join(id);
        if let Some(disks) = &self.disks
            && Disks::has_image(&folder)
        {
            match disks.ensure_mounted(id, &folder) {
                Ok(()) => {
                    let seen = disks.view(&folder);
                    return Mounts {
                        id: id.to_string(),
                        files: seen.join("files"),
                        home: seen.join("home"),
                        namespace: Some(disks.namespace()),
                        own_disk: true,
                    };
                }
                // Its folders then do not exist here: commands and file tools fail, and
                // nothing is written beside the file system.
                Err(why) => tracing::error!(workspace_id = %id, %why, "the workspace's file system cannot be mounted"),
            }
        }
        Mounts {
            id: id.to_string(),
            files: folder.join("files"),
            home: folder.join("home"),
            namespace: None,
            own_disk: false,
        }
    }

    fn sandbox(&self) -> Result<&Sandbox, WorkspaceError> {
        self.sandbox.as_ref().map_err(|why| WorkspaceError::Failed(why.clone()))
    }

    /// Who the workspaces' files belong to: the host identity commands run as.
    fn owner(&self) -> Option<Owner> {
        self.sandbox.as_ref().ok().and_then(Sandbox::owner)
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn provision<'a>(
        &'a self,
        workspace: &'a Workspace,
        template: &'a Template,
    ) -> BoxFuture<'a, Result<(), WorkspaceError>> {
        Box::pin(async move {
            let (root, id, template, owner, disks) =
                (self.root.clone(), workspace.id.clone(), template.clone(), self.owner(), self.disks.clone());
            let limits = self.sandbox.as_ref().ok().map(|s| s.limits().clone()).unwrap_or_default();
            tokio::task::spawn_blocking(move || {
                let folder = root.join(&id);
                std::fs::create_dir_all(&folder)?;
                if let Some(disks) = &disks
                    && let Err(why) = disks.create(&id, &folder, limits.disk_mib, limits.files, owner)
                {
                    tracing::warn!(workspace_id = %id, %why, "no file system of its own for this workspace: its disk quota is measured, not enforced by the kernel");
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| WorkspaceError::Failed(e.to_string()))?
            .map_err(|e| WorkspaceError::Failed(format!("the workspace's folder cannot be made: {e}")))?;
            let mounts = self.mounts(workspace);
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&mounts.files)?;
                std::fs::create_dir_all(&mounts.home)?;
                template.copy_files(&mounts.files)?;
                // Commands run as uid 1000 of their own user namespace, which bubblewrap maps
                // to their host identity: what the server lays out must be theirs.
                match owner {
                    Some(owner) => chown_tree(&mounts.files, owner).and_then(|()| chown_tree(&mounts.home, owner)),
                    None => Ok(()),
                }
            })
            .await
            .map_err(|e| WorkspaceError::Failed(e.to_string()))?
            .map_err(|e| WorkspaceError::Failed(format!("the workspace's files cannot be laid out: {e}")))
        })
    }

    fn run<'a>(
        &'a self,
        workspace: &'a Workspace,
        spec: &'a CommandSpec,
        timeout: Duration,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Completed, WorkspaceError>> {
        Box::pin(async move { Ok(self.sandbox()?.run(&self.mounts(workspace), spec, timeout, cancel).await?) })
    }

    fn over_quota<'a>(&'a self, workspace: &'a Workspace) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            match &self.sandbox {
                Ok(sandbox) => sandbox.over_quota(&self.mounts(workspace)).await,
                Err(_) => None,
            }
        })
    }

    fn start(&self, workspace: &Workspace, spec: &CommandSpec) -> Result<Box<dyn RunningCommand>, WorkspaceError> {
        Ok(Box::new(self.sandbox()?.start(&self.mounts(workspace), spec)?))
    }

    fn problem(&self) -> Option<String> {
        self.sandbox.as_ref().err().cloned()
    }

    fn files_of(&self, id: &str) -> Option<PathBuf> {
        Some(self.mounts_of(id).files)
    }

    fn files_root(&self, workspace: &Workspace) -> Option<WorkspaceRoot> {
        Some(WorkspaceRoot { path: self.mounts(workspace).files, owner: self.owner() })
    }

    fn desktop_folders(&self, id: &str) -> Option<Folders> {
        // Beside the workspace's folder, not in it: a workspace with a file system of its own
        // has it mounted over that folder where its commands run.
        let base = self.root.join(".desktops").join(id);
        Some(Folders { x11: base.join("x11"), vnc: base.join("vnc") })
    }

    fn desktop_problem(&self) -> Option<String> {
        match &self.sandbox {
            Err(why) => Some(why.clone()),
            Ok(sandbox) if sandbox.mode() != SandboxMode::Bubblewrap => Some(
                "desktops run only in the bubblewrap sandbox (each needs a /tmp of its own); this server runs commands unsandboxed".into(),
            ),
            Ok(_) => None,
        }
    }

    fn prepare_desktop(&self, workspace: &Workspace) -> Result<Folders, WorkspaceError> {
        if let Some(why) = self.desktop_problem() {
            return Err(WorkspaceError::Failed(why));
        }
        let folders = self
            .desktop_folders(&workspace.id)
            .ok_or_else(|| WorkspaceError::Failed("this workspace's files are not on this machine".into()))?;
        let lay_out = |folder: &std::path::Path| -> std::io::Result<()> {
            remove_tree(folder)?;
            std::fs::create_dir_all(folder)?;
            std::fs::set_permissions(folder, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
            match self.owner() {
                Some(owner) => chown_tree(folder, owner),
                None => Ok(()),
            }
        };
        for folder in [&folders.x11, &folders.vnc] {
            lay_out(folder).map_err(|e| {
                WorkspaceError::Failed(format!("the desktop's folder {} cannot be made: {e}", folder.display()))
            })?;
        }
        Ok(folders)
    }

    fn destroy<'a>(&'a self, workspace: &'a Workspace) -> BoxFuture<'a, Result<(), WorkspaceError>> {
        Box::pin(async move {
            let folder = self.root.join(&workspace.id);
            if let Ok(sandbox) = &self.sandbox {
                sandbox.forget_workspace(&workspace.id);
            }
            if let Some(desktop) = self.desktop_folders(&workspace.id) {
                for folder in [&desktop.x11, &desktop.vnc] {
                    let _ = remove_tree(folder);
                }
                let _ = desktop.x11.parent().map(std::fs::remove_dir);
            }
            let (disks, id) = (self.disks.clone(), workspace.id.clone());
            tokio::task::spawn_blocking(move || {
                if let Some(disks) = disks {
                    disks.destroy(&id, &folder).map_err(std::io::Error::other)?;
                }
                remove_tree(&folder)
            })
            .await
            .map_err(|e| WorkspaceError::Failed(e.to_string()))?
            .map_err(|e| WorkspaceError::Failed(format!("the workspace's files cannot be removed: {e}")))
        })
    }
}

/// Removes a folder and everything in it, first giving its owner back the rights a command
/// may have taken away (`chmod 0 dir`), so that a non-root server can delete it too. The
/// rights are given back without following links (a planted link must not lead a chmod out).
fn remove_tree(folder: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(folder) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    let _ = super::confined::open_up_tree(folder);
    std::fs::remove_dir_all(folder)
}
