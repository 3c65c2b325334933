//! `GET /metrics`: every module's metrics in Prometheus's text format. Served without a token
//! on the metrics address (loopback by default, off the public port: see `serve`), and on the
//! API's port to admins' tokens.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::auth::Admin;
use super::{ApiError, AppState};

/// The metrics address's routes: `/metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(state)
}

/// `/metrics` on the API's port: admins only.
pub async fn for_admins(State(state): State<AppState>, Admin(_): Admin) -> Result<Response, ApiError> {
    scrape(State(state)).await
}

async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    metrics.stream_subscribers.set(state.chats.hub.subscriber_count() as i64);
    metrics.relay_connections.set(state.relay.as_ref().map_or(0, |relay| relay.relaying()) as i64);
    let (in_use, idle) = state.store.pool_connections();
    let pool = &metrics.database_connections;
    pool.get_or_create(&crate::metrics::PoolState { state: "in_use" }).set(in_use as i64);
    pool.get_or_create(&crate::metrics::PoolState { state: "idle" }).set(idle as i64);
    let text = metrics.render().map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the metrics could not be written: {e}"))
    })?;
    Ok(([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}
