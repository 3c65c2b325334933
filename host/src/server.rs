//! `toolhost serve`: the store, the API, and a clean shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agents::AgentService;
use crate::api::{self, ApiLimits, AppState, Lifecycle};
use crate::catalog::{Catalog, seed};
use crate::chat::run::RunServices;
use crate::chat::service::ChatService;
use crate::chat::worker::{Worker, WorkerSettings};
use crate::config::Config;
use crate::plugins::PluginRuntime;
use crate::policy::{Inventory, PolicyEngine};
use crate::secrets::SecretBox;
use crate::store::Store;
use crate::workspace::WorkspaceService;
use std::future::IntoFuture;
use std::time::Duration;

/// Opens the database (creating and migrating it if needed) as configured.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory `{}`", config.data_dir.display()))?;
    }
    let url = config.database_url();
    Store::open(&url).await.with_context(|| format!("cannot open the database ({})", redact(&url)))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}

/// The providers and models, with the configuration's applied.
async fn open_catalog(config: &Config, store: &Store) -> anyhow::Result<Catalog> {
    let secrets = SecretBox::load(config.secret_key_file.as_deref(), &config.data_dir)?;
    let catalog = Catalog::new(store.clone(), secrets, crate::llm::ModelTimeouts::from_env());
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    seed::seed(&catalog, config, &env).await.context("cannot apply the configured providers and models")?;
    for model in catalog.models().await? {
        if let Some(reason) = &model.availability.unavailable_reason {
            eprintln!("toolhost: model `{}` is not usable: {reason}", model.name);
        }
    }
    Ok(catalog)
}

pub async fn serve(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    if store.count_users().await? == 0 {
        eprintln!(
            "toolhost: the database has no users yet. Create an admin and a token for it:\n  toolhost users create admin --admin\n  toolhost tokens create admin"
        );
    }
    let runtime = Arc::new(PluginRuntime::load(config.runtime_options()).await?);
    for refusal in runtime.refused() {
        eprintln!("toolhost: plugin refused: {refusal}");
    }
    let catalog = Arc::new(open_catalog(config, &store).await?);
    let policy = PolicyEngine::load(store.clone(), Inventory::of(runtime.plugins())).await?;
    let workspaces = WorkspaceService::start(store.clone(), &config.data_dir, &config.workspaces)
        .await
        .map_err(anyhow::Error::msg)?;
    if let Some(problem) = workspaces.sandbox_problem() {
        eprintln!("toolhost: workspace commands are disabled: {problem}");
    }
    let chats = ChatService::new(store.clone());
    let services = RunServices {
        chats: chats.clone(),
        runtime,
        catalog: catalog.clone(),
        policy: policy.clone(),
        workspaces: workspaces.clone(),
        agents: AgentService::new(store.clone(), chats.clone(), config.agents.clone()),
    };
    let settings = WorkerSettings {
        recover_all_on_start: store.backend() == crate::store::Backend::Sqlite,
        ..WorkerSettings::default()
    };
    let worker = Worker::new(services, settings);
    let stop_worker = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let lifecycle = Lifecycle::default();
    let state = AppState {
        store: store.clone(),
        chats,
        limits: ApiLimits { max_message_bytes: config.api.max_message_kib * 1024 },
        catalog,
        policy,
        workspaces: workspaces.clone(),
        lifecycle: lifecycle.clone(),
    };
    let signal = shutdown_signal();
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another address with --listen", config.listen))?;
    let address: SocketAddr = listener.local_addr()?;
    eprintln!("toolhost: listening on http://{address} (database: {})", redact(&config.database_url()));
    let closing = lifecycle.closing.clone();
    let mut server = tokio::spawn(
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(async move { closing.cancelled().await })
            .into_future(),
    );
    tokio::select! {
        _ = signal => {}
        served = &mut server => return served.context("the API server stopped")?.context("the API server failed"),
    }
    let limit = Duration::from_secs(config.api.shutdown_timeout_secs);
    let shut_down = async {
        // New work is refused, the worker stops its turns and hands their chats back (their
        // streams learn that first), then the streams end and the connections close.
        lifecycle.draining.cancel();
        stop_worker.cancel();
        let _ = worker_task.await;
        lifecycle.closing.cancel();
        let _ = server.await;
        lifecycle.websockets.close();
        lifecycle.websockets.wait().await;
        workspaces.shutdown().await;
        store.close().await;
    };
    if tokio::time::timeout(limit, shut_down).await.is_err() {
        eprintln!(
            "toolhost: shutdown took longer than {} s (api.shutdown_timeout_secs); exiting anyway",
            limit.as_secs()
        );
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM right after "listening" is printed must not kill the
/// process outright.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate => {}
        }
        tracing::info!("shutting down");
    }
}
