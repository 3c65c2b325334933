//! `/mcp`: the MCP gateway over streamable HTTP (rmcp's transport, stateless: any replica
//! answers any request, so there is no session to lose behind a load balancer).
//!
//! Before rmcp sees a request, this layer decides who it is for: an API token (`Authorization:
//! Bearer`; a browser's cookie is not accepted here), an `Origin`, when one is sent, that is
//! this server's own (a page of another site must not drive a person's tools), and the
//! session's workspace (`?workspace_id=ID`), which must be the token user's.
//!
//! A plain `tools/call` (one request, no `_meta`, headers of a revision before the standard
//! headers) is answered by [`answer_plain_calls`] without rmcp's per-request service, which
//! would cost more than the call of a small tool; its answer is the one rmcp gives, and every
//! other message, including any this path cannot vouch for, goes to rmcp.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{CallToolResponse, ProtocolVersion, RequestId, ServerJsonRpcMessage, ServerResult};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::auth::{bearer_user, from_this_server};
use super::workspaces::owned_workspace;
use super::{ApiError, AppState};
use crate::mcp::{McpHandler, McpSession, call_without_progress};

/// The largest body the fast path reads; a larger call goes to rmcp, which has its own limit.
const PLAIN_CALL_MAX_BYTES: u64 = 64 * 1024;

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

/// A `tools/call` request with nothing but a tool's name and arguments. Any other field
/// (`_meta` with a progress token or a protocol version, a task) makes it rmcp's to answer.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCall {
    jsonrpc: String,
    id: RequestId,
    method: String,
    params: PlainCallParams,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCallParams {
    name: String,
    #[serde(default)]
    arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Answers a plain `tools/call` itself (after [`authenticate`]); passes everything else on to
/// rmcp unchanged.
pub async fn answer_plain_calls(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !plain_headers(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, PLAIN_CALL_MAX_BYTES as usize).await else {
        // Shorter or longer than its Content-Length said, or the client went away.
        return (StatusCode::BAD_REQUEST, "Bad Request: the body does not match its Content-Length").into_response();
    };
    let call = serde_json::from_slice::<PlainCall>(&bytes)
        .ok()
        .filter(|call| call.jsonrpc == "2.0" && call.method == "tools/call");
    let (Some(call), Some(session)) = (call, parts.extensions.get::<McpSession>()) else {
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    };
    let arguments = call.params.arguments.unwrap_or_default();
    let message = match call_without_progress(&state.mcp, session, &call.params.name, arguments).await {
        Ok(result) => {
            // As rmcp answers a peer on a revision before 2026-07-28 (the only ones this path takes).
            let mut result = ServerResult::from(CallToolResponse::Complete(result));
            result.strip_result_type_for_legacy_peer();
            result.strip_non_object_output_for_legacy_peer();
            ServerJsonRpcMessage::response(result, call.id)
        }
        Err(error) => ServerJsonRpcMessage::error(error, Some(call.id)),
    };
    match serde_json::to_vec(&message) {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], Bytes::from(body)).into_response(),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("the answer could not be written: {error}")).into_response()
        }
    }
}

/// Whether a request's headers are ones rmcp would accept for a `tools/call` and check nothing
/// more in: both answer types accepted, a JSON body of a known small length, no session, and a
/// protocol revision (when named) older than the one that adds headers checked against the body.
fn plain_headers(headers: &HeaderMap) -> bool {
    let accepts = |wanted: &str| {
        headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| media.split(';').next().is_some_and(|essence| essence.trim().eq_ignore_ascii_case(wanted)))
    };
    let json_body = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    let small = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|length| length <= PLAIN_CALL_MAX_BYTES);
    let mut revision = None;
    for (name, value) in headers {
        let name = name.as_str();
        if name == "mcp-protocol-version" {
            if revision.is_some() {
                return false;
            }
            revision = Some(value.to_str().unwrap_or_default());
        } else if name.starts_with("mcp-") {
            return false;
        }
    }
    let revision_plain = revision.is_none_or(|named| {
        ProtocolVersion::KNOWN_VERSIONS.iter().any(|known| known.as_str() == named)
            && named < ProtocolVersion::STANDARD_HEADERS.as_str()
    });
    accepts("application/json") && accepts("text/event-stream") && json_body && small && revision_plain
}
