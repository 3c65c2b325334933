//! The composition root: the one place that knows how the server's parts are made from a
//! [`Config`] and wired to each other. `serve`, the CLI, the tests and the benchmarks all build
//! what they run here, so a new service is wired once.

use crate::metrics::ServerMetrics;
use std::sync::Arc;

use anyhow::Context;

use crate::accounts::Accounts;
use crate::agents::AgentService;
use crate::api::{ApiLimits, AppState, Lifecycle};
use crate::catalog::{Catalog, seed};
use crate::chat::notices::{Notice, Reload};
use crate::chat::run::RunServices;
use crate::chat::service::ChatService;
use crate::chat::worker::{Worker, WorkerSettings};
use crate::config::Config;
use crate::llm::ModelTimeouts;
use crate::plugin_admin::PluginAdmin;
use crate::plugins::PluginRuntime;
use crate::policy::{Inventory, PolicyEngine};
use crate::relay::{Identity, Relay, RelayServices};
use crate::secrets::SecretBox;
use crate::store::Store;
use crate::vault::Vault;
use crate::workspace::WorkspaceService;

/// What building the server takes besides its configuration file: settings an operator sets
/// in the environment, and that tests and benchmarks choose for themselves.
pub struct Setup {
    /// `None`: the defaults, with chats left running taken back at start on SQLite (where
    /// this is the only server).
    pub worker: Option<WorkerSettings>,
    pub model_timeouts: ModelTimeouts,
    /// Seals provider keys at rest; `None` loads the configured key (see `secrets`).
    pub secrets: Option<SecretBox>,
    /// Reads the environment variables that seed providers (`OPENAI_API_KEY`, ...).
    pub environment: fn(&str) -> Option<String>,
}

impl Setup {
    /// What `serve` uses: the environment's, with the worker set for the database's backend.
    pub fn from_env() -> Setup {
        Setup {
            worker: None,
            model_timeouts: ModelTimeouts::from_env(),
            secrets: None,
            environment: |name| std::env::var(name).ok().filter(|v| !v.is_empty()),
        }
    }
}

/// The server's services, made and wired.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub chats: Arc<ChatService>,
    pub runtime: Arc<PluginRuntime>,
    pub catalog: Arc<Catalog>,
    pub policy: Arc<PolicyEngine>,
    pub workspaces: Arc<WorkspaceService>,
    pub agents: Arc<AgentService>,
    pub accounts: Arc<Accounts>,
    pub worker_settings: WorkerSettings,
    /// What replicas sharing this deployment's secret key show each other.
    relay_token: String,
    /// Secrets admins bound to plugins.
    pub vault: Arc<Vault>,
    /// Plugins admins upload and manage through the API.
    pub plugins: Arc<PluginAdmin>,
    /// Every module's metrics, for `/metrics`.
    pub metrics: Arc<ServerMetrics>,
}

impl App {
    /// Builds everything `serve` runs, as configured. Problems that leave the server usable (a
    /// model without a key, a refused plugin, no sandbox) are reported on stderr, not fatal.
    ///
    /// Plugins load in the background (compiling one written in Python or JavaScript takes
    /// seconds): the server serves at once, and tools come into service as they are ready.
    pub async fn build(config: &Config, setup: Setup) -> anyhow::Result<App> {
        let store = open_store(config).await?;
        let options = config.runtime_options();
        let runtime = Arc::new(PluginRuntime::new(&options)?);
        let plugin_files = PluginRuntime::configured_files(&options)?;
        let secrets = match setup.secrets {
            Some(secrets) => secrets,
            None => SecretBox::load(config.secret_key_file.as_deref(), &config.data_dir)?,
        };
        let relay_token = secrets.relay_token().to_string();
        let vault = Arc::new(Vault::new(store.clone(), secrets.clone()));
        let catalog = Arc::new(Catalog::new(store.clone(), secrets, setup.model_timeouts));
        seed::seed(&catalog, config, &setup.environment)
            .await
            .context("cannot apply the configured providers and models")?;
        for model in catalog.models().await? {
            if let Some(reason) = &model.availability.unavailable_reason {
                eprintln!("toolhost: model `{}` is not usable: {reason}", model.name);
            }
        }
        let policy = PolicyEngine::load(store.clone(), Inventory::default()).await?;
        policy.follow_plugins(runtime.clone());
        let workspaces = WorkspaceService::start(store.clone(), &config.data_dir, &config.workspaces)
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(problem) = workspaces.sandbox_problem() {
            eprintln!("toolhost: workspace commands are disabled: {problem}");
        }
        let chats = ChatService::new(store.clone());
        let announcer = chats.clone();
        let plugins = PluginAdmin::new(
            store.clone(),
            runtime.clone(),
            Box::new(move || announcer.hub.announce(Notice::Reload { what: Reload::Plugins })),
        );
        tokio::spawn(load_plugins(runtime.clone(), plugins.clone(), options.include_bundled, plugin_files));
        let agents = AgentService::new(store.clone(), chats.clone(), config.agents.clone(), catalog.clone());
        let worker_settings = setup.worker.unwrap_or_else(|| WorkerSettings {
            recover_all_on_start: store.backend() == crate::store::Backend::Sqlite,
            stale_after: std::time::Duration::from_secs(config.replicas.stale_after_secs),
            // A run heartbeats its chat three times per stale window: a live run is never
            // taken for a vanished one, whatever the window.
            heartbeat: std::time::Duration::from_secs(config.replicas.stale_after_secs) / 3,
            approval_timeout: std::time::Duration::from_secs(config.approvals.timeout_secs),
            ..WorkerSettings::default()
        });
        let session_length = std::time::Duration::from_secs(config.api.session_days.max(1) * 24 * 3600);
        let accounts = Accounts::new(store.clone(), session_length);
        let metrics = Arc::new(ServerMetrics::new(|registry| {
            chats.register_metrics(registry);
            runtime.register_metrics(registry);
            policy.register_metrics(registry);
            workspaces.register_metrics(registry);
        }));
        Ok(App {
            metrics,
            config: config.clone(),
            accounts,
            store,
            chats,
            runtime,
            catalog,
            policy,
            workspaces,
            agents,
            worker_settings,
            relay_token,
            vault,
            plugins,
        })
    }

    /// What each chat's run uses.
    pub fn run_services(&self) -> RunServices {
        RunServices {
            chats: self.chats.clone(),
            runtime: self.runtime.clone(),
            catalog: self.catalog.clone(),
            policy: self.policy.clone(),
            workspaces: self.workspaces.clone(),
            agents: self.agents.clone(),
            secrets: self.vault.clone(),
        }
    }

    /// A worker with a new identity over these services (a restart makes another).
    pub fn worker(&self) -> Arc<Worker> {
        Worker::new(self.run_services(), self.worker_settings.clone())
    }

    /// What the HTTP API's handlers share.
    pub fn api_state(&self, lifecycle: Lifecycle) -> AppState {
        AppState {
            store: self.store.clone(),
            chats: self.chats.clone(),
            limits: ApiLimits { max_message_bytes: self.config.api.max_message_kib * 1024 },
            catalog: self.catalog.clone(),
            policy: self.policy.clone(),
            workspaces: self.workspaces.clone(),
            lifecycle,
            relay: None,
            accounts: self.accounts.clone(),
            secure_cookies: self.config.api.secure_cookies,
            vault: self.vault.clone(),
            mcp: self.mcp_gateway(),
            plugins: self.plugins.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The tools MCP clients use, over the same services as chats' tool calls.
    pub fn mcp_gateway(&self) -> Arc<crate::mcp::McpGateway> {
        Arc::new(crate::mcp::McpGateway {
            runtime: self.runtime.clone(),
            policy: self.policy.clone(),
            workspaces: self.workspaces.clone(),
            agents: self.agents.clone(),
            secrets: self.vault.clone(),
        })
    }

    /// Joins the other replicas on the database as `worker`'s replica, reached at `address`
    /// (PostgreSQL; `None` on SQLite, where this is the only server), until `shutdown`.
    pub async fn start_relay(
        &self,
        worker: &Worker,
        address: Option<String>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<Arc<Relay>>> {
        if self.store.backend() != crate::store::Backend::Postgres {
            return Ok(None);
        }
        let identity =
            Identity { replica_id: worker.id().to_string(), node_id: self.workspaces.node_id().to_string(), address };
        let services = RelayServices {
            chats: self.chats.clone(),
            policy: self.policy.clone(),
            workspaces: self.workspaces.clone(),
            plugins: self.plugins.clone(),
        };
        let relay = Relay::start(
            identity,
            &self.relay_token,
            services,
            &self.config.database_url(),
            &self.config.replicas,
            shutdown,
        )
        .await?;
        Ok(Some(relay))
    }
}

/// Opens the database (creating and migrating it if needed) as configured.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory `{}`", config.data_dir.display()))?;
    }
    let url = config.database_url();
    Store::open(&url).await.with_context(|| format!("cannot open the database ({})", redact(&url)))
}

/// Loads the plugins to serve with in the background: the bundled ones, the plugins
/// directory's, then the uploaded ones; says so on stderr when they are all in service (or
/// refused); then follows the uploaded plugins' changes for as long as the server runs.
async fn load_plugins(
    runtime: Arc<PluginRuntime>,
    plugins: Arc<PluginAdmin>,
    bundled: bool,
    files: Vec<std::path::PathBuf>,
) {
    let started = std::time::Instant::now();
    runtime.load_configured(bundled, files).await;
    if let Err(e) = plugins.sync().await {
        eprintln!("toolhost: cannot load the uploaded plugins yet ({e}); trying again at the next change");
    }
    runtime.mark_started();
    let set = runtime.loaded();
    for refusal in set.refused() {
        eprintln!("toolhost: plugin refused: {refusal}");
    }
    eprintln!(
        "toolhost: plugins ready: {} plugins, {} tools in service after {:.1} s",
        set.plugins().count(),
        set.tools().count(),
        started.elapsed().as_secs_f64()
    );
    plugins.follow().await;
}

/// Loads the bundled and configured plugins (refused ones are listed by `refused()`).
pub async fn plugin_runtime(config: &Config) -> anyhow::Result<PluginRuntime> {
    Ok(PluginRuntime::load(config.runtime_options()).await?)
}

/// The tool policy over the configured database and plugins, for the CLI's policy commands.
pub async fn policy_engine(config: &Config, runtime: &PluginRuntime) -> anyhow::Result<(Store, Arc<PolicyEngine>)> {
    let store = open_store(config).await?;
    let engine = PolicyEngine::load(store.clone(), Inventory::of(runtime.loaded().plugins())).await?;
    Ok((store, engine))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
