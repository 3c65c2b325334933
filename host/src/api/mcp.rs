//! `/mcp`: the MCP gateway over streamable HTTP (rmcp's transport, stateless: any replica
//! answers any request, so there is no session to lose behind a load balancer).
//!
//! Before rmcp sees a request, this layer decides who it is for: an API token (`Authorization:
//! Bearer`; a browser's cookie is not accepted here), an `Origin`, when one is sent, that is
//! this server's own (a page of another site must not drive a person's tools), and the
//! session's workspace (`?workspace_id=ID`), which must be the token user's.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::header::ORIGIN;
use axum::middleware::Next;
use axum::response::Response;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::auth::{bearer_user, from_this_server};
use super::workspaces::owned_workspace;
use super::{ApiError, AppState};
use crate::mcp::{McpHandler, McpSession};

/// The MCP service, behind [`authenticate`].
pub fn service(state: &AppState) -> StreamableHttpService<McpHandler, NeverSessionManager> {
    let gateway = state.mcp.clone();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Host names are the operator's to choose; requests from pages are stopped by the
        // Origin check in `authenticate`, and every request needs a token.
        .disable_allowed_hosts()
        .with_cancellation_token(state.lifecycle.closing.child_token());
    StreamableHttpService::new(move || Ok(McpHandler::per_request(gateway.clone())), Default::default(), config)
}

/// Authenticates an MCP request and attaches its [`McpSession`].
pub async fn authenticate(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.headers().get(ORIGIN).is_some() && !from_this_server(request.headers()) {
        return Err(ApiError::forbidden(
            "MCP requests from another site's pages are refused (their `Origin` is not this server); MCP clients send no `Origin`",
        ));
    }
    let Some(user) = bearer_user(request.headers(), &state).await? else {
        return Err(ApiError::unauthorized(
            "MCP clients send an API token: `Authorization: Bearer TOKEN` (make one in Settings, or `toolhost tokens create USER`)",
        ));
    };
    let workspace = match query.get("workspace_id").filter(|id| !id.is_empty()) {
        Some(id) => Some(owned_workspace(&state, &user, id).await?),
        None => None,
    };
    request.extensions_mut().insert(McpSession { user, workspace });
    Ok(next.run(request).await)
}
