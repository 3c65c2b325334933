//! Capability modules: each WIT capability interface a plugin may import is one module with the
//! same small shape. It owns its per-call state ([`Capability::State`], made from the call's
//! [`CallSetup`]), links its host functions into the linker, and checks the call's grant before
//! doing anything.
//!
//! The runtime knows none of them by name: adding a capability means writing its module and
//! adding one line to the list in [`capabilities!`] below.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::plugins::CallLimiter;
use crate::plugins::slots::CallSlot;
use crate::workspace::confined::WorkspaceRoot;

/// One WIT capability interface: its host functions, its state in a call, and the grant that
/// guards them.
pub trait Capability {
    /// The interface name, e.g. `workspace-fs`: what policy grants and `plugin inspect` shows.
    const NAME: &'static str;
    /// A WASI interface that is this capability, when it is one (`wasi:http/outgoing-handler`,
    /// without its version); otherwise the capability is `toolhost:plugin/NAME`.
    const WASI_INTERFACE: Option<&'static str> = None;
    /// What the capability keeps for the length of one call (`()` when nothing).
    type State: Send;
    /// The state a new call starts with.
    fn new_state(setup: &CallSetup) -> Self::State;
    /// Links the interface's host functions.
    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()>;
}

/// A call's state of capability `C`, reached by the capability's type.
pub trait StateOf<C: Capability> {
    fn state(&mut self) -> &mut C::State;
}

/// Declares the capability modules, once each: the list the runtime composes them from (their
/// names, their linker registrations and their per-call states).
macro_rules! capabilities {
    ($($module:ident :: $capability:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Names of the capability interfaces this host provides.
        pub const PROVIDED: &[&str] = &[$(<$module::$capability as Capability>::NAME),*];

        /// The capabilities that are WASI interfaces: (interface without version, capability).
        pub const WASI_INTERFACES: &[(&str, &str)] = &[$(
            (
                match <$module::$capability as Capability>::WASI_INTERFACE { Some(i) => i, None => "" },
                <$module::$capability as Capability>::NAME,
            )
        ),*];

        fn link_capabilities(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
            $(<$module::$capability as Capability>::add_to_linker(linker)?;)*
            Ok(())
        }

        /// Every capability's state in one call.
        #[allow(non_snake_case)]
        pub(crate) struct CapabilityStates {
            $($capability: <$module::$capability as Capability>::State,)*
        }

        impl CapabilityStates {
            fn new(setup: &CallSetup) -> CapabilityStates {
                CapabilityStates { $($capability: <$module::$capability as Capability>::new_state(setup),)* }
            }
        }

        $(
            impl StateOf<$module::$capability> for CallState {
                fn state(&mut self) -> &mut <$module::$capability as Capability>::State {
                    &mut self.states.$capability
                }
            }
        )*
    };
}

capabilities! {
    log::Log,
    progress::Progress,
    workspace_fs::WorkspaceFs,
    workspaces::Workspaces,
    workspace_exec::WorkspaceExec,
    agents::Agents,
    desktop::DesktopCapability,
    http::Http,
    secrets::Secrets,
    settings::Settings,
}

/// A capability that is not an interface: a workspace command may reach the network. Asked
/// of the policy for each command in a workspace whose template allows the network.
pub const NETWORK: &str = "network";

/// What a plugin is told when the database failed a capability's call; the error itself goes
/// to the operator's log.
fn database_failed(error: &crate::store::StoreError, capability: &str) -> String {
    tracing::error!(error = %error, capability, "a capability's database call failed");
    "the server could not reach its database; try again".into()
}

/// Every capability the policy decides on: the interfaces, [`NETWORK`] and
/// [`http::PRIVATE_ADDRESS`].
pub fn governed() -> impl Iterator<Item = &'static str> {
    PROVIDED.iter().copied().chain([NETWORK, http::PRIVATE_ADDRESS])
}

/// The capabilities asked per use that come with an imported one: the network of a workspace
/// command, private addresses of an outbound request.
pub fn implied_by(capability: &str) -> Option<&'static str> {
    match capability {
        "workspace-exec" => Some(NETWORK),
        "http" => Some(http::PRIVATE_ADDRESS),
        _ => None,
    }
}

/// Links every capability interface, and a locked-down WASI (no files, no network, no
/// environment) that language runtimes need to start.
pub fn add_all_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    link_capabilities(linker)
}

/// Decides each use of a capability, with the use's scope where one applies (a path, a host).
pub trait ScopeCheck: Send + Sync {
    /// `Err` carries the message the plugin (and so the model) receives.
    fn check(&self, capability: &str, scope: Option<&str>) -> Result<(), String>;
    /// Records a use the host refused for a reason of its own (a limit, a secret's binding),
    /// beside the policy's denials.
    fn record_refusal(&self, capability: &str, scope: Option<&str>, reason: &str);
}

/// The capabilities a plugin may use in one call, as decided by policy when the call started,
/// and the check of each use.
#[derive(Clone, Default)]
pub struct Grants {
    capabilities: BTreeSet<String>,
    check: Option<Arc<dyn ScopeCheck>>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("capabilities", &self.capabilities)
            .field("checked", &self.check.is_some())
            .finish()
    }
}

impl Grants {
    /// Grants exactly the named capabilities.
    pub fn of<I, S>(capabilities: I) -> Grants
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Grants { capabilities: capabilities.into_iter().map(Into::into).collect(), check: None }
    }

    /// Grants nothing.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Has every use checked (and denials recorded) by `check`.
    pub fn with_check(mut self, check: Arc<dyn ScopeCheck>) -> Grants {
        self.check = Some(check);
        self
    }

    pub fn allows(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }

    /// `Ok` when granted; otherwise the message a plugin (and so the model) receives.
    pub fn require(&self, capability: &str, plugin: &str) -> Result<(), String> {
        if self.allows(capability) {
            return Ok(());
        }
        if let Some(check) = &self.check {
            // Not granted at the start: the check says why, and records the denial.
            check.check(capability, None)?;
        }
        Err(format!(
            "plugin `{plugin}` is not granted the `{capability}` capability for this chat; an admin can grant it in the tool policy"
        ))
    }

    /// A capability that is not an interface (see [`NETWORK`]): only the policy grants it, so
    /// without a policy check (development tools) it is refused.
    pub fn check_extra(&self, capability: &str) -> Result<(), String> {
        match &self.check {
            Some(check) => check.check(capability, None),
            None => Err(format!("the `{capability}` capability is granted only by the tool policy")),
        }
    }

    /// [`Grants::check_extra`] for one scope of the capability (a destination of `network`).
    pub fn check_extra_scoped(&self, capability: &str, scope: &str) -> Result<(), String> {
        match &self.check {
            Some(check) => check.check(capability, Some(scope)),
            None => Err(format!("the `{capability}` capability is granted only by the tool policy")),
        }
    }

    /// Records a refusal that was not the policy's (see [`ScopeCheck::record_refusal`]).
    pub fn record_refusal(&self, capability: &str, scope: Option<&str>, reason: &str) {
        if let Some(check) = &self.check {
            check.record_refusal(capability, scope, reason);
        }
    }

    /// [`Grants::require`], then the check of this use's scope.
    pub fn require_scoped(&self, capability: &str, plugin: &str, scope: &str) -> Result<(), String> {
        self.require(capability, plugin)?;
        match &self.check {
            Some(check) => check.check(capability, Some(scope)),
            None => Ok(()),
        }
    }
}

/// Receives progress reports of running calls.
pub type ProgressSink = Arc<dyn Fn(progress::ProgressUpdate) + Send + Sync>;

/// Who a call is for; carried into log lines and error messages.
#[derive(Clone, Debug)]
pub struct CallIdentity {
    pub plugin: String,
    pub tool: String,
    pub chat_id: String,
    pub call_id: String,
}

/// The services a chat's tool calls reach through the `workspaces`, `workspace-exec` and
/// `agents` capabilities, and the chat the call works for.
#[derive(Clone)]
pub struct ChatServices {
    pub workspaces: Arc<crate::workspace::WorkspaceService>,
    pub agents: Arc<dyn agents::AgentBackend>,
    /// The secrets admins bound to plugins, for `secrets`.
    pub secrets: Arc<dyn secrets::SecretSource>,
    pub scope: crate::workspace::ChatScope,
}

/// Time a call has spent waiting on the host (a command, a workspace's start). A plugin's time
/// limit is for its own work: host waits have limits of their own and are not charged to it.
#[derive(Clone, Default)]
pub struct HostWaits(Arc<std::sync::Mutex<WaitClock>>);

#[derive(Default)]
struct WaitClock {
    finished: std::time::Duration,
    current: Option<std::time::Instant>,
}

impl HostWaits {
    /// Runs `work`, counting its time as host time.
    pub async fn during<F: Future>(&self, work: F) -> F::Output {
        struct End<'a>(&'a HostWaits);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                let mut clock = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(since) = clock.current.take() {
                    clock.finished += since.elapsed();
                }
            }
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).current = Some(std::time::Instant::now());
        let _end = End(self);
        work.await
    }

    /// Host time so far, including a wait in progress.
    pub fn total(&self) -> std::time::Duration {
        let clock = self.0.lock().unwrap_or_else(|e| e.into_inner());
        clock.finished + clock.current.map(|since| since.elapsed()).unwrap_or_default()
    }

    /// Whether the call is waiting on the host right now.
    pub fn waiting(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).current.is_some()
    }
}

/// What a call starts with: who it is for, what it may use and what it may reach. Each
/// capability makes its own state from it.
pub struct CallSetup {
    pub identity: CallIdentity,
    pub grants: Grants,
    /// The chat's workspace files, for `workspace-fs`.
    pub workspace: Option<WorkspaceRoot>,
    /// The chat's services and scope, for `workspaces`, `workspace-exec` and `agents`.
    pub chat: Option<ChatServices>,
    /// Where `progress` reports go.
    pub progress: Option<ProgressSink>,
    /// The plugin's limits (outbound HTTP reads its own).
    pub limits: crate::plugins::PluginLimits,
    /// The secrets handed out in this call (shared by `secrets` and `http`).
    pub issued_secrets: secrets::IssuedSecrets,
    /// What an admin set for the plugin (a JSON object), for `settings`.
    pub settings: Arc<serde_json::Value>,
}

/// Everything a single tool call carries into the sandbox. One per call, dropped with it.
pub struct CallState {
    pub identity: CallIdentity,
    pub grants: Grants,
    pub(crate) chat: Option<ChatServices>,
    pub(crate) host_waits: HostWaits,
    /// The call's slot in the engine's pool, given up for a waiting one during agent waits.
    pub(crate) slot: CallSlot,
    pub(crate) limiter: CallLimiter,
    /// What an admin set for the plugin.
    pub(crate) settings: Arc<serde_json::Value>,
    states: CapabilityStates,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl CallState {
    /// A fresh state whose WASI stdout and stderr go to `output` (kept for crash reports).
    pub(crate) fn new(setup: CallSetup, limiter: CallLimiter, output: MemoryOutputPipe, slot: CallSlot) -> CallState {
        let wasi = WasiCtx::builder().stdout(output.clone()).stderr(output).build();
        let states = CapabilityStates::new(&setup);
        CallState {
            identity: setup.identity,
            grants: setup.grants,
            chat: setup.chat,
            host_waits: HostWaits::default(),
            slot,
            limiter,
            settings: setup.settings,
            states,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// This call's state of capability `C`.
    pub(crate) fn state_of<C: Capability>(&mut self) -> &mut C::State
    where
        Self: StateOf<C>,
    {
        StateOf::<C>::state(self)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
