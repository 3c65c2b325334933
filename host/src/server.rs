//! `toolhost serve`: the application (see `app`) behind the HTTP API, and a clean shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::api::{self, Lifecycle};
use crate::app::{App, Setup, redact};
use crate::config::Config;
use std::future::IntoFuture;
use std::time::Duration;

pub async fn serve(config: &Config) -> anyhow::Result<()> {
    let app = App::build(config, Setup::from_env()).await?;
    if app.store.count_users().await? == 0 {
        eprintln!(
            "toolhost: the database has no users yet. Create an admin and a token for it:\n  toolhost users create admin --admin\n  toolhost tokens create admin"
        );
    }
    let worker = app.worker();
    let signal = shutdown_signal();
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another address with --listen", config.listen))?;
    let address: SocketAddr = listener.local_addr()?;
    let metrics_listener = bind_metrics(&config.api.metrics_listen).await?;
    // Joined before the worker takes a chat, so that the others can reach the chats it runs.
    let stop_relay = CancellationToken::new();
    let relay_address = config.replicas.relay_address.clone().or_else(|| crate::relay::default_address(address));
    let relay = app.start_relay(&worker, relay_address, stop_relay.clone()).await?;
    let stop_worker = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop_worker.clone()));
    let lifecycle = Lifecycle::default();
    let mut state = app.api_state(lifecycle.clone());
    state.relay = relay.clone();
    // Said before "listening", which tells a supervisor the server is up.
    if let Some(listener) = metrics_listener {
        eprintln!("toolhost: metrics on http://{}/metrics", listener.local_addr()?);
        let closing = lifecycle.closing.clone();
        tokio::spawn(
            axum::serve(listener, api::metrics::router(state.clone()))
                .with_graceful_shutdown(async move { closing.cancelled().await })
                .into_future(),
        );
    }
    eprintln!("toolhost: listening on http://{address} (database: {})", redact(&config.database_url()));
    let closing = lifecycle.closing.clone();
    let mut server = tokio::spawn(
        // The client's address is known to handlers (sign-in attempts are limited by it).
        axum::serve(listener, api::router(state).into_make_service_with_connect_info::<SocketAddr>())
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
        app.workspaces.shutdown().await;
        // Last: the others hear that this replica's chats are pending again, and that it left.
        // Its heartbeat stops first, so that it does not register again once it has left.
        stop_relay.cancel();
        if let Some(relay) = &relay {
            relay.leave().await;
        }
        app.store.close().await;
    };
    if tokio::time::timeout(limit, shut_down).await.is_err() {
        eprintln!(
            "toolhost: shutdown took longer than {} s (api.shutdown_timeout_secs); exiting anyway",
            limit.as_secs()
        );
    }
    Ok(())
}

/// The metrics address's listener: `None` when it is `off`, or when the default address is
/// taken (another server on this machine has it; this one's metrics are then on its API port,
/// for admins). An address the operator chose that cannot be had stops the start.
async fn bind_metrics(address: &str) -> anyhow::Result<Option<TcpListener>> {
    if address == "off" {
        return Ok(None);
    }
    match TcpListener::bind(address).await {
        Ok(listener) => Ok(Some(listener)),
        Err(error) if address == crate::metrics::DEFAULT_LISTEN => {
            eprintln!(
                "toolhost: metrics are not served on {address} ({error}); admins can read /metrics on the API's port, or set --metrics-listen"
            );
            Ok(None)
        }
        Err(error) => Err(anyhow::anyhow!(
            "cannot serve metrics on {address} ({error}); pick another address with --metrics-listen, or `off`"
        )),
    }
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
