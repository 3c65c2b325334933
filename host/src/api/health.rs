//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.lifecycle.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if state.store.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}
