//! The HTTP API under `/api/v1`: one file per resource, one JSON error shape.

mod approvals;
mod auth;
mod catalog;
mod chats;
mod desktop;
mod error;
mod git_watch;
mod health;
mod mcp;
pub mod metrics;
mod openapi;
mod plugins;
mod policy;
mod prompts;
mod relay;
mod secrets;
mod sessions;
mod stream;
mod usage;
mod users;
mod web_app;
mod workspaces;

pub use error::ApiError;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::chat::service::ChatService;
use crate::store::Store;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub chats: Arc<ChatService>,
    pub limits: ApiLimits,
    pub catalog: Arc<Catalog>,
    pub policy: Arc<crate::policy::PolicyEngine>,
    pub workspaces: Arc<crate::workspace::WorkspaceService>,
    pub lifecycle: Lifecycle,
    /// The relay to the other replicas (PostgreSQL `serve` only).
    pub relay: Option<Arc<crate::relay::Relay>>,
    /// Signing in from a browser.
    pub accounts: Arc<crate::accounts::Accounts>,
    /// Whether the session cookie is sent over HTTPS only.
    pub secure_cookies: bool,
    /// Secrets admins bind to plugins.
    pub vault: Arc<crate::vault::Vault>,
    /// The tools MCP clients use (`/mcp`).
    pub mcp: Arc<crate::mcp::McpGateway>,
    /// Plugins administered live.
    pub plugins: Arc<crate::plugin_admin::PluginAdmin>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::ServerMetrics>,
}

/// Where the server is in its shutdown.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Cancelled when the server was told to stop: not ready for new work.
    pub draining: tokio_util::sync::CancellationToken,
    /// Cancelled once the worker has handed its chats back: streams end.
    pub closing: tokio_util::sync::CancellationToken,
    /// WebSocket streams, which the HTTP server's graceful shutdown does not wait for (their
    /// connections were upgraded out of it): the shutdown waits for their last event here.
    pub websockets: tokio_util::task::TaskTracker,
}

#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// Largest user message (all parts together), in bytes.
    pub max_message_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits { max_message_bytes: 256 * 1024 }
    }
}

pub fn router(state: AppState) -> Router {
    // Room for JSON framing and escapes around the largest accepted message.
    let body_limit = state.limits.max_message_bytes * 2 + 64 * 1024;
    let api = Router::new()
        .route("/chats", get(chats::list).post(chats::create))
        .route("/chats/watch", get(stream::watch))
        .route("/openapi.json", get(openapi::openapi))
        .route("/chats/{id}", get(chats::get))
        .route("/chats/{id}/messages", get(chats::messages).post(chats::send))
        .route("/chats/{id}/interrupt", post(chats::interrupt))
        .route("/chats/{id}/messages/{message_id}", patch(chats::edit))
        .route("/chats/{id}/queue/{queued_id}", delete(chats::delete_queued))
        .route("/chats/{id}/queue/{queued_id}/promote", post(chats::promote_queued))
        .route("/chats/{id}/archive", post(chats::archive))
        .route("/chats/{id}/unarchive", post(chats::unarchive))
        .route("/chats/{id}/stream", get(stream::stream))
        .route("/providers", get(catalog::list_providers).post(catalog::create_provider))
        .route("/providers/{id}", patch(catalog::update_provider).delete(catalog::delete_provider))
        .route("/models", get(catalog::list_models).post(catalog::create_model))
        .route("/models/{id}", patch(catalog::update_model).delete(catalog::delete_model))
        .route("/usage", get(usage::usage))
        .route("/settings/system-prompt", get(prompts::get_system_prompt).put(prompts::put_system_prompt))
        .route("/users/me/prompt", get(prompts::get_user_prompt).put(prompts::put_user_prompt))
        .route("/policy", get(policy::get).put(policy::put))
        .route("/policy/versions", get(policy::versions))
        .route("/policy/versions/{version}", get(policy::version))
        .route("/policy/versions/{version}/restore", post(policy::restore))
        .route("/policy/explain", post(policy::explain))
        .route("/policy/audit", get(policy::audit))
        .route("/templates", get(workspaces::list_templates))
        .route("/templates/reload", post(workspaces::reload_templates))
        .route("/workspaces", get(workspaces::list).post(workspaces::create))
        .route("/workspaces/{id}", get(workspaces::get).delete(workspaces::delete))
        .route("/workspaces/{id}/start", post(workspaces::start))
        .route("/workspaces/{id}/stop", post(workspaces::stop))
        .route("/chats/{id}/git/watch", get(git_watch::watch))
        .route("/chats/{id}/desktop", get(desktop::connect))
        .route("/chats/{id}/children", get(chats::children))
        .route("/chats/{id}/approvals", get(approvals::list_for_chat))
        .route("/chats/{id}/approvals/{approval_id}", post(approvals::answer))
        .route("/approvals", get(approvals::list_mine))
        .route("/auth/sign-in", post(sessions::sign_in))
        .route("/auth/sign-out", post(sessions::sign_out))
        .route("/auth/session", get(sessions::session))
        .route("/users/me/tokens", get(sessions::list_tokens).post(sessions::create_token))
        .route("/users/me/tokens/{id}", delete(sessions::revoke_token))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", patch(users::update))
        .route("/users/{id}/tokens", get(users::tokens))
        .route("/users/{id}/tokens/{token_id}", delete(users::revoke_token))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route(
            "/plugins",
            get(plugins::list)
                .post(plugins::upload)
                .layer(DefaultBodyLimit::max(crate::plugin_admin::MAX_UPLOAD_BYTES + 1)),
        )
        .route("/plugins/{id}", get(plugins::get).patch(plugins::update).delete(plugins::remove));
    let mcp = Router::new()
        .route_service("/mcp", mcp::service(&state))
        .layer(axum::middleware::from_fn_with_state(state.clone(), mcp::answer_plain_calls))
        .layer(axum::middleware::from_fn_with_state(state.clone(), mcp::authenticate));
    Router::new()
        .merge(mcp)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::for_admins))
        .nest("/api/v1", api)
        .route("/internal/v1/chats/{id}/stream", get(relay::stream))
        .route("/internal/v1/workspaces/{id}/desktop/{mode}", get(relay::desktop))
        .fallback(web_app::page)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}
