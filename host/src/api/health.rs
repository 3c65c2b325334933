//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers and the plugins it started with are loaded
/// (it listens before: the API answers, and chats accepted meanwhile wait for their tools).
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.lifecycle.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if !state.plugins.started() {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading plugins");
    }
    if state.store.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}
