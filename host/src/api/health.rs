//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, AppState};

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers and the plugins it started with are loaded
/// (it listens before: the API answers, and chats accepted meanwhile wait for their tools).
pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    if state.lifecycle.draining.is_cancelled() {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    if !state.plugins.started() {
        let compiling: Vec<String> = state.plugins.compiling().into_iter().map(|c| c.source).collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "loading_plugins",
            format!(
                "the plugins the server started with are not all in service yet (compiling: {})",
                compiling.join(", ")
            ),
        ));
    }
    Ok(if state.store.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    })
}
