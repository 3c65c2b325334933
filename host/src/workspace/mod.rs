//! Workspaces: made from templates, started by their startup script, and where a chat's
//! commands run. The service keeps the lifecycle (created -> starting -> ready | start_error |
//! start_timeout; stopped) in the store and leaves files and processes to a [`Backend`].

pub mod backend;
pub mod cgroup;
pub mod command;
pub mod confined;
pub mod desktop;
pub mod desktops;
mod disk;
pub mod git;
mod metrics;
mod netns;
pub mod processes;
pub mod sandbox;
mod seccomp;
pub mod template;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::keyed_lock::KeyedLock;
use crate::store::{NewWorkspace, Store, StoreError, Workspace, WorkspaceStatus};
use backend::{Backend, LocalBackend};
use processes::{ProcessInfo, ProcessTable};
use sandbox::{CommandLimits, CommandSpec, Completed, Sandbox, SandboxError, SandboxMode};
use template::{Template, Templates, parameter_environment};

/// How often a waiter re-reads a workspace's status (another replica may have changed it).
const STATUS_POLL: Duration = Duration::from_millis(250);
/// Background processes one workspace may have running at once.
const MAX_BACKGROUND: usize = 16;
/// How often workspaces with background processes are measured against their quota.
const QUOTA_WATCH: Duration = Duration::from_secs(2);
/// The end of a startup script's output kept in the workspace's `detail`.
const DETAIL_BYTES: usize = 4096;

/// `[workspaces]` in the configuration file.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspacesConfig {
    /// Extra templates: one folder per template (default: `<data_dir>/templates`).
    pub templates_dir: Option<PathBuf>,
    /// `bubblewrap` (default) or `unsandboxed` (commands run with the server's rights).
    pub sandbox: SandboxMode,
    /// Longest a single command may run, whatever a tool asks.
    pub max_command_seconds: u64,
    /// The host user and group commands run as when the server runs as root: unprivileged,
    /// and owning nothing but the workspaces' files (no account is needed for them).
    pub sandbox_uid: u32,
    pub sandbox_gid: u32,
    pub limits: CommandLimits,
    /// The desktops beside workspaces.
    pub desktop: desktop::DesktopConfig,
}

/// The default host identity of commands: far above the ids of accounts (1000-59999) and of
/// the subordinate ranges tools hand out (from 100000, 65536 per user).
pub const DEFAULT_SANDBOX_ID: u32 = 2_000_000_000;

impl Default for WorkspacesConfig {
    fn default() -> WorkspacesConfig {
        WorkspacesConfig {
            templates_dir: None,
            sandbox: SandboxMode::Bubblewrap,
            max_command_seconds: 1800,
            sandbox_uid: DEFAULT_SANDBOX_ID,
            sandbox_gid: DEFAULT_SANDBOX_ID,
            limits: CommandLimits::default(),
            desktop: desktop::DesktopConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for WorkspaceError {
    fn from(error: StoreError) -> WorkspaceError {
        match error {
            StoreError::Conflict(message) => WorkspaceError::Conflict(message),
            other => WorkspaceError::Store(other),
        }
    }
}

impl From<SandboxError> for WorkspaceError {
    fn from(error: SandboxError) -> WorkspaceError {
        match error {
            SandboxError::Invalid(message) => WorkspaceError::Invalid(message),
            other => WorkspaceError::Failed(other.to_string()),
        }
    }
}

/// The chat tree a tool call works for.
#[derive(Clone, Debug)]
pub struct ChatScope {
    pub chat_id: String,
    pub root_chat_id: String,
    pub owner_id: String,
    pub owner_is_admin: bool,
    /// The workspace the calls work in when it is not found through the chat: an MCP session
    /// names one (checked to be the owner's); `None` for chats.
    pub workspace_id: Option<String>,
}

/// What creating a workspace for a chat did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The chat's tree has a workspace that is building or ready.
    Reused,
    /// The chat's tree has a workspace that is stopped or failed to start.
    Stopped,
}

/// A request to make a workspace.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub template_id: String,
    pub name: Option<String>,
    pub parameters: Map<String, Value>,
}

pub struct WorkspaceService {
    store: Store,
    templates_dir: Option<PathBuf>,
    templates: RwLock<Arc<Templates>>,
    backend: Arc<dyn Backend>,
    max_command: Duration,
    processes: ProcessTable,
    /// One lock per chat tree, so two create calls of one chat never make two workspaces.
    create_locks: KeyedLock,
    /// Wakes waiters when a workspace's status changes on this replica.
    changed: Arc<tokio::sync::Notify>,
    /// Per workspace: cancelled when it stops, which ends its startup script and commands.
    stops: Mutex<HashMap<String, CancellationToken>>,
    /// Per workspace: start, stop and the recording of a startup script's outcome take turns,
    /// so that a script killed by a stop never records its outcome over a later start's.
    lifecycle: Arc<KeyedLock>,
    /// The machine whose disk holds this server's workspaces (see [`node_id`]).
    node_id: String,
    desktops: desktops::Desktops,
    metrics: metrics::WorkspaceMetrics,
}

/// The node id of the machine whose disk holds `data_dir`: made once, kept in the directory,
/// so that a restarted server is the same node (its workspaces' files are still there).
pub fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            std::fs::create_dir_all(data_dir)?;
            let id = format!("node-{}", crate::store::new_id());
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

impl WorkspaceService {
    /// Loads the templates and checks the sandbox. A sandbox that cannot run does not stop the
    /// server: workspaces can still be made, and commands are refused with the reason.
    pub async fn start(
        store: Store,
        data_dir: &std::path::Path,
        config: &WorkspacesConfig,
    ) -> Result<Arc<WorkspaceService>, String> {
        config.limits.validate()?;
        if config.max_command_seconds == 0 {
            return Err("[workspaces] max_command_seconds must be at least 1".into());
        }
        let templates_dir = Some(config.templates_dir.clone().unwrap_or_else(|| data_dir.join("templates")));
        let templates = Templates::load(templates_dir.as_deref().filter(|d| d.is_dir()));
        let identity = confined::Owner { uid: config.sandbox_uid, gid: config.sandbox_gid };
        let sandbox = Sandbox::probe(config.sandbox, config.limits.clone(), identity).await.map_err(|e| e.to_string());
        if let Err(why) = &sandbox {
            tracing::error!(%why, "workspace commands are disabled");
        }
        let backend = Arc::new(LocalBackend::new(data_dir.join("workspaces"), sandbox));
        let node_id =
            node_id(data_dir).map_err(|e| format!("cannot keep a node id in `{}`: {e}", data_dir.display()))?;
        let service = WorkspaceService {
            store,
            templates_dir,
            templates: RwLock::new(Arc::new(templates)),
            backend,
            max_command: Duration::from_secs(config.max_command_seconds),
            processes: ProcessTable::default(),
            create_locks: KeyedLock::default(),
            changed: Arc::new(tokio::sync::Notify::new()),
            stops: Mutex::new(HashMap::new()),
            lifecycle: Arc::new(KeyedLock::default()),
            node_id,
            desktops: desktops::Desktops::new(config.desktop.clone()),
            metrics: metrics::WorkspaceMetrics::new(),
        };
        service.recover().await.map_err(|e| format!("cannot recover workspaces: {e}"))?;
        let service = Arc::new(service);
        tokio::spawn(watch_background_quotas(Arc::downgrade(&service)));
        Ok(service)
    }

    /// This node's workspaces caught starting by a restart: their script was killed with the
    /// server. (Another node's are starting there.)
    async fn recover(&self) -> Result<(), StoreError> {
        let starting = self.store.workspaces_in(WorkspaceStatus::Starting).await?;
        for workspace in starting.into_iter().filter(|w| w.node_id.as_deref().is_none_or(|n| n == self.node_id)) {
            let detail = "the server restarted while the startup script ran; start the workspace again";
            self.store
                .transition_workspace(
                    &workspace.id,
                    &[WorkspaceStatus::Starting],
                    WorkspaceStatus::Stopped,
                    Some(detail),
                )
                .await?;
        }
        Ok(())
    }

    /// The machine whose disk holds this server's workspaces.
    /// Adds the workspace metrics (commands, starts) to a server's registry.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        self.metrics.register(registry);
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn templates(&self) -> Arc<Templates> {
        self.templates.read().map(|t| t.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Reads the templates again (bundled and configured folder).
    pub fn reload_templates(&self) -> Arc<Templates> {
        let templates = Arc::new(Templates::load(self.templates_dir.as_deref().filter(|d| d.is_dir())));
        *self.templates.write().unwrap_or_else(|e| e.into_inner()) = templates.clone();
        templates
    }

    /// Why commands cannot run on this server, if they cannot.
    pub fn sandbox_problem(&self) -> Option<String> {
        self.backend.problem()
    }

    /// A template `owner_is_admin` may use.
    pub fn template(&self, id: &str, owner_is_admin: bool) -> Result<Template, WorkspaceError> {
        let templates = self.templates();
        let template = templates.get(id).ok_or_else(|| {
            let known: Vec<&str> = templates.templates.iter().map(|t| t.id.as_str()).collect();
            WorkspaceError::NotFound(format!("there is no template `{id}`; the templates are: {}", known.join(", ")))
        })?;
        if template.admins_only && !owner_is_admin {
            return Err(WorkspaceError::Denied(format!(
                "template `{id}` is for admins only; pick another template or ask an admin"
            )));
        }
        Ok(template.clone())
    }

    /// Makes a workspace from a template and starts it (the startup script runs in the
    /// background; see [`WorkspaceService::wait_settled`]).
    pub async fn create(
        self: &Arc<Self>,
        owner_id: &str,
        owner_is_admin: bool,
        request: CreateRequest,
    ) -> Result<Workspace, WorkspaceError> {
        let (service, owner_id) = (self.clone(), owner_id.to_string());
        to_the_end(async move { service.create_now(&owner_id, owner_is_admin, request).await }).await
    }

    async fn create_now(
        &self,
        owner_id: &str,
        owner_is_admin: bool,
        request: CreateRequest,
    ) -> Result<Workspace, WorkspaceError> {
        let template = self.template(&request.template_id, owner_is_admin)?;
        let parameters = template.resolve(&request.parameters).map_err(|problems| {
            WorkspaceError::Invalid(format!("invalid parameters for template `{}`: {problems}", template.id))
        })?;
        let name = match request.name {
            Some(name) => check_name(&name)?,
            // The random end of a new id (its start is a timestamp, shared by ids made together).
            None => format!("{}-{}", template.id, &crate::store::new_id().replace('-', "")[24..]),
        };
        let workspace = self
            .store
            .create_workspace(NewWorkspace {
                owner_id: owner_id.to_string(),
                name,
                template_id: template.id.clone(),
                parameters,
                network: template.network,
                backend: self.backend.name().to_string(),
                node_id: Some(self.node_id.clone()),
            })
            .await?;
        if let Err(e) = self.backend.provision(&workspace, &template).await {
            let _ = self.store.delete_workspace(&workspace.id).await;
            let _ = self.backend.destroy(&workspace).await;
            return Err(e);
        }
        tracing::info!(workspace_id = %workspace.id, template = %template.id, "workspace created");
        self.start_now(&workspace.id).await
    }

    /// [`WorkspaceService::create`] for a chat: serialized per chat tree, and idempotent (the
    /// tree's workspace is reused when building or ready, and reported when stopped).
    pub async fn create_for_chat(
        self: &Arc<Self>,
        scope: &ChatScope,
        request: CreateRequest,
    ) -> Result<(CreateOutcome, Workspace), WorkspaceError> {
        let (service, scope) = (self.clone(), scope.clone());
        to_the_end(async move { service.create_for_chat_now(&scope, request).await }).await
    }

    async fn create_for_chat_now(
        &self,
        scope: &ChatScope,
        request: CreateRequest,
    ) -> Result<(CreateOutcome, Workspace), WorkspaceError> {
        let _serialized = self.create_locks.lock(&scope.root_chat_id).await;
        if let Some(existing) = self.store.chat_workspace(&scope.chat_id).await? {
            return Ok((settled_outcome(&existing), existing));
        }
        let workspace = self.create_now(&scope.owner_id, scope.owner_is_admin, request).await?;
        if !self.store.bind_workspace(&scope.root_chat_id, &workspace.id).await? {
            // Another replica bound one first: keep theirs.
            self.delete_now(&workspace.id).await?;
            let existing = self
                .store
                .chat_workspace(&scope.chat_id)
                .await?
                .ok_or_else(|| WorkspaceError::Failed("the chat's workspace vanished".into()))?;
            return Ok((settled_outcome(&existing), existing));
        }
        Ok((CreateOutcome::Created, workspace))
    }

    /// Starts a workspace unless it is building or ready: its startup script runs in the
    /// background.
    pub async fn start_workspace(self: &Arc<Self>, id: &str) -> Result<Workspace, WorkspaceError> {
        let (service, id) = (self.clone(), id.to_string());
        to_the_end(async move { service.start_now(&id).await }).await
    }

    async fn start_now(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        self.on_this_node(&self.get(id).await?)?;
        let startable = [
            WorkspaceStatus::Created,
            WorkspaceStatus::Stopped,
            WorkspaceStatus::StartError,
            WorkspaceStatus::StartTimeout,
        ];
        let _turn = self.lifecycle.lock(id).await;
        if self.store.transition_workspace(id, &startable, WorkspaceStatus::Starting, None).await? {
            let workspace = self.get(id).await?;
            self.changed.notify_waiters();
            let template = self.templates().get(&workspace.template_id).cloned();
            let store = self.store.clone();
            let backend = self.backend.clone();
            let changed = self.changed.clone();
            let lifecycle = self.lifecycle.clone();
            let cancel = self.stop_token(id);
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let (status, detail) = run_startup(backend.as_ref(), &workspace, template.as_ref(), &cancel).await;
                metrics.started(status.as_str(), started.elapsed());
                let _turn = lifecycle.lock(&workspace.id).await;
                // A stop (or delete) cancelled this start and recorded its own status; any start
                // since then is another one, whose outcome is its own to record.
                if !cancel.is_cancelled()
                    && let Err(e) = store
                        .transition_workspace(&workspace.id, &[WorkspaceStatus::Starting], status, Some(&detail))
                        .await
                {
                    tracing::error!(workspace_id = %workspace.id, error = %e, "cannot record the end of a startup script");
                }
                changed.notify_waiters();
            });
        }
        self.get(id).await
    }

    /// Whether the workspace's processes and files are on this server's node.
    pub fn lives_here(&self, workspace: &Workspace) -> bool {
        workspace.node_id.as_deref().is_none_or(|node| node == self.node_id)
    }

    /// A workspace's processes and files are on its node: another node's server refuses to
    /// start, stop or delete it, rather than act on a disk that does not hold it.
    pub(crate) fn on_this_node(&self, workspace: &Workspace) -> Result<(), WorkspaceError> {
        if self.lives_here(workspace) {
            return Ok(());
        }
        Err(WorkspaceError::Conflict(format!(
            "workspace `{}` lives on another host ({}); send this to a replica running there",
            workspace.name,
            workspace.node_id.as_deref().unwrap_or_default()
        )))
    }

    /// The token that stops a workspace's commands when it stops.
    fn stop_token(&self, id: &str) -> CancellationToken {
        self.stops.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default().clone()
    }

    /// Ends every command of a workspace: its startup script, foreground and background ones.
    fn stop_commands(&self, id: &str) {
        if let Some(token) = self.stops.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            token.cancel();
        }
        self.processes.kill_all(id);
        self.desktops.end(id);
    }

    /// Stops a workspace: its startup script and commands are killed, its files kept.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<Workspace, WorkspaceError> {
        let (service, id) = (self.clone(), id.to_string());
        to_the_end(async move { service.stop_now(&id).await }).await
    }

    async fn stop_now(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        let workspace = self.get(id).await?;
        self.on_this_node(&workspace)?;
        let _turn = self.lifecycle.lock(id).await;
        self.stop_commands(&workspace.id);
        let stoppable = [
            WorkspaceStatus::Created,
            WorkspaceStatus::Starting,
            WorkspaceStatus::Ready,
            WorkspaceStatus::StartError,
            WorkspaceStatus::StartTimeout,
        ];
        self.store.transition_workspace(id, &stoppable, WorkspaceStatus::Stopped, Some("stopped by its owner")).await?;
        self.changed.notify_waiters();
        self.get(id).await
    }

    /// Deletes a workspace, its processes and its files; chats bound to it are unbound. The
    /// files go first: if they cannot be removed, the workspace stays, and so does the way to
    /// delete it again.
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<(), WorkspaceError> {
        let (service, id) = (self.clone(), id.to_string());
        to_the_end(async move { service.delete_now(&id).await }).await
    }

    async fn delete_now(&self, id: &str) -> Result<(), WorkspaceError> {
        let workspace = self.get(id).await?;
        self.on_this_node(&workspace)?;
        let _turn = self.lifecycle.lock(id).await;
        self.stop_commands(&workspace.id);
        self.store.transition_workspace(id, &ALL_STATUSES, WorkspaceStatus::Stopped, Some("being deleted")).await?;
        self.backend.destroy(&workspace).await?;
        self.store.delete_workspace(id).await?;
        self.changed.notify_waiters();
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        self.store.workspace(id).await?.ok_or_else(|| WorkspaceError::NotFound(format!("there is no workspace `{id}`")))
    }

    /// The workspace of a chat's tree.
    pub async fn of_chat(&self, chat_id: &str) -> Result<Option<Workspace>, WorkspaceError> {
        Ok(self.store.chat_workspace(chat_id).await?)
    }

    /// The workspace a tool call works in: the one its scope names, else its chat's.
    pub async fn of_scope(&self, scope: &ChatScope) -> Result<Option<Workspace>, WorkspaceError> {
        match &scope.workspace_id {
            Some(id) => Ok(Some(self.get(id).await?)),
            None => self.of_chat(&scope.chat_id).await,
        }
    }

    /// Waits until a workspace is no longer building, or `timeout` passes.
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> Result<Workspace, WorkspaceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let workspace = self.get(id).await?;
            if !workspace.status.is_building() || tokio::time::Instant::now() >= deadline {
                return Ok(workspace);
            }
            let wake = deadline.min(tokio::time::Instant::now() + STATUS_POLL);
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
    }

    /// The destinations off the public internet that the workspace's template names.
    pub fn private_destinations(&self, workspace: &Workspace) -> Vec<String> {
        self.templates().get(&workspace.template_id).map(|t| t.private_destinations.clone()).unwrap_or_default()
    }

    /// Where the files of workspace `id` are on this machine (through the server's own mount
    /// namespace when the workspace has a file system of its own).
    pub fn local_files(&self, id: &str) -> Option<PathBuf> {
        self.backend.files_of(id)
    }

    /// Where a workspace's files are on this machine, and who owns them.
    pub fn files_root(&self, workspace: &Workspace) -> Option<confined::WorkspaceRoot> {
        self.backend.files_root(workspace)
    }

    /// Runs a command in a ready workspace. `network` is the caller's permission; the
    /// workspace's template must allow it too.
    pub async fn run(
        &self,
        workspace: &Workspace,
        mut spec: CommandSpec,
        timeout: Duration,
        network: bool,
    ) -> Result<Completed, WorkspaceError> {
        require_ready(workspace)?;
        spec.network = network && workspace.network;
        spec.private_destinations.retain(|_| spec.network);
        self.share_display(workspace, &mut spec);
        let cancel = self.stop_token(&workspace.id);
        let started = std::time::Instant::now();
        let ran = self.backend.run(workspace, &spec, timeout.min(self.max_command), &cancel).await;
        self.metrics.command(&ran, started.elapsed());
        ran
    }

    /// Starts a background command in a ready workspace.
    pub fn spawn(
        &self,
        workspace: &Workspace,
        mut spec: CommandSpec,
        network: bool,
    ) -> Result<ProcessInfo, WorkspaceError> {
        require_ready(workspace)?;
        spec.network = network && workspace.network;
        spec.private_destinations.retain(|_| spec.network);
        let running_now = self.processes.list(&workspace.id).iter().filter(|p| p.running).count();
        if running_now >= MAX_BACKGROUND {
            return Err(WorkspaceError::Invalid(format!(
                "workspace `{}` already has {running_now} background processes running, the most allowed; stop some with process_signal first",
                workspace.name
            )));
        }
        self.share_display(workspace, &mut spec);
        let running = self.backend.start(workspace, &spec)?;
        Ok(self.processes.adopt(&workspace.id, &spec.command, running))
    }

    /// Kills every background process and waits (up to five seconds) until they are gone; the
    /// server calls it on its way out.
    pub async fn shutdown(&self) {
        self.processes.kill_everything();
        for _ in 0..100 {
            if !self.processes.any_running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!("some workspace processes had not ended five seconds after being killed");
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.processes
    }

    pub fn max_command(&self) -> Duration {
        self.max_command
    }
}

fn settled_outcome(workspace: &Workspace) -> CreateOutcome {
    match workspace.status {
        WorkspaceStatus::Created | WorkspaceStatus::Starting | WorkspaceStatus::Ready => CreateOutcome::Reused,
        WorkspaceStatus::Stopped | WorkspaceStatus::StartError | WorkspaceStatus::StartTimeout => {
            CreateOutcome::Stopped
        }
    }
}

/// `Err` saying what to do when commands cannot run in `workspace` yet.
fn require_ready(workspace: &Workspace) -> Result<(), WorkspaceError> {
    let name = &workspace.name;
    match workspace.status {
        WorkspaceStatus::Ready => Ok(()),
        WorkspaceStatus::Created | WorkspaceStatus::Starting => Err(WorkspaceError::NotReady(format!(
            "workspace `{name}` is still starting (its startup script is running); wait for it to be ready"
        ))),
        WorkspaceStatus::Stopped => {
            Err(WorkspaceError::NotReady(format!("workspace `{name}` is stopped; start it with start_workspace")))
        }
        WorkspaceStatus::StartError | WorkspaceStatus::StartTimeout => Err(WorkspaceError::NotReady(format!(
            "workspace `{name}` failed to start ({}); start it again with start_workspace",
            workspace.detail.as_deref().unwrap_or("no detail")
        ))),
    }
}

fn check_name(name: &str) -> Result<String, WorkspaceError> {
    let name = name.trim();
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(WorkspaceError::Invalid(format!(
            "workspace name `{name}` must be 1 to 64 characters of a-z, A-Z, 0-9, `-`, `_`, `.`"
        )))
    }
}

const ALL_STATUSES: [WorkspaceStatus; 6] = [
    WorkspaceStatus::Created,
    WorkspaceStatus::Starting,
    WorkspaceStatus::Ready,
    WorkspaceStatus::StartError,
    WorkspaceStatus::StartTimeout,
    WorkspaceStatus::Stopped,
];

/// Kills the background processes of workspaces that grew past their quota. Foreground
/// commands are measured while they run; background ones, which outlive the call that started
/// them, are measured here.
async fn watch_background_quotas(service: std::sync::Weak<WorkspaceService>) {
    loop {
        tokio::time::sleep(QUOTA_WATCH).await;
        let Some(service) = service.upgrade() else { return };
        for id in service.processes.workspaces_with_running() {
            let Ok(Some(workspace)) = service.store.workspace(&id).await else { continue };
            if let Some(why) = service.backend.over_quota(&workspace).await {
                tracing::warn!(workspace_id = %id, %why, "background processes stopped");
                service.processes.kill_all(&id);
            }
        }
    }
}

/// Runs a lifecycle change to its end even if its caller stops waiting (a tool call's time
/// limit, an interrupted turn): one cut in half would leave a workspace `starting` for good, or
/// its commands stopped and its status not.
async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = Result<T, WorkspaceError>> + Send + 'static,
) -> Result<T, WorkspaceError> {
    tokio::spawn(change).await.map_err(|e| WorkspaceError::Failed(format!("a workspace change failed: {e}")))?
}

/// What of a script's output goes into a workspace's `detail`: its end, without NUL bytes
/// (which PostgreSQL's text refuses).
fn detail_text(text: &str) -> String {
    let clean = text.replace('\0', "");
    if clean.len() <= DETAIL_BYTES {
        return clean;
    }
    let mut start = clean.len() - DETAIL_BYTES;
    while !clean.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &clean[start..])
}

/// Runs the startup script; the status it leads to and what to say about it.
async fn run_startup(
    backend: &dyn Backend,
    workspace: &Workspace,
    template: Option<&Template>,
    cancel: &CancellationToken,
) -> (WorkspaceStatus, String) {
    let Some(template) = template else {
        return (
            WorkspaceStatus::Ready,
            format!("template `{}` is no longer installed; started without a startup script", workspace.template_id),
        );
    };
    if template.startup.script.trim().is_empty() {
        return (WorkspaceStatus::Ready, "no startup script".into());
    }
    let spec = CommandSpec {
        command: template.startup.script.clone(),
        env: parameter_environment(&workspace.parameters),
        network: workspace.network,
        private_destinations: template.private_destinations.clone(),
        ..CommandSpec::default()
    };
    let timeout = Duration::from_secs(template.startup.timeout_seconds);
    match backend.run(workspace, &spec, timeout, cancel).await {
        Ok(done) if done.timed_out => (
            WorkspaceStatus::StartTimeout,
            format!(
                "the startup script ran past its {} s limit and was stopped; output:\n{}",
                template.startup.timeout_seconds,
                detail_text(&done.output.text)
            ),
        ),
        Ok(done) if done.exit_code == Some(0) => (
            WorkspaceStatus::Ready,
            format!(
                "the startup script succeeded in {} ms; output:\n{}",
                done.duration_ms,
                detail_text(&done.output.text)
            ),
        ),
        Ok(done) => {
            let how = match (done.exit_code, &done.stopped_because) {
                (_, Some(why)) => format!("was stopped: {why}"),
                (Some(code), None) => format!("exited with code {code}"),
                (None, None) => "was killed by a signal".into(),
            };
            (
                WorkspaceStatus::StartError,
                format!("the startup script {how}; output:\n{}", detail_text(&done.output.text)),
            )
        }
        Err(e) => (WorkspaceStatus::StartError, format!("the startup script could not run: {e}")),
    }
}
