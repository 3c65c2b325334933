//! The gateway as an MCP server (rmcp's `ServerHandler`): `tools/list` and `tools/call`, for
//! the session the transport authenticated.

use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext, RoleServer};

use super::{Called, GatewayError, McpGateway, McpSession};
use crate::domain::ToolInfo;
use crate::plugins::capabilities::ProgressSink;
use crate::plugins::capabilities::progress::ProgressUpdate;
use crate::plugins::{ContentPart, ToolOutput};

/// One MCP server over the gateway: a transport makes one per connection or request.
#[derive(Clone)]
pub struct McpHandler {
    gateway: Arc<McpGateway>,
    /// The session, when the transport fixes it for the handler's whole life; otherwise it is
    /// read from each request (the HTTP transport puts it in the request's extensions).
    session: Option<McpSession>,
}

impl McpHandler {
    /// A handler that reads each request's session from the HTTP request it came in.
    pub fn per_request(gateway: Arc<McpGateway>) -> McpHandler {
        McpHandler { gateway, session: None }
    }

    /// A handler for one session throughout.
    pub fn for_session(gateway: Arc<McpGateway>, session: McpSession) -> McpHandler {
        McpHandler { gateway, session: Some(session) }
    }

    fn session(&self, context: &RequestContext<RoleServer>) -> Result<McpSession, ErrorData> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        context
            .extensions
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<McpSession>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("toolhost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Toolhost's tools, as its tool policy lets this token's user use them from MCP clients. Tools that work on files or run commands work in the workspace the connection names.",
            )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let session = self.session(&context)?;
        let cursor = request.and_then(|r| r.cursor);
        let page = self.gateway.tools(&session, cursor.as_deref()).await.map_err(protocol_error)?;
        let mut result = ListToolsResult::with_all_items(page.tools.iter().map(to_mcp_tool).collect());
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let session = self.session(&context)?;
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let (progress, forwarded) = match context.meta.get_progress_token() {
            Some(token) => {
                let (sink, forwarded) = progress_to_client(context.peer.clone(), token);
                (Some(sink), Some(forwarded))
            }
            None => (None, None),
        };
        let call = self.gateway.call(&session, &request.name, arguments, progress);
        // A client's cancellation ends the call: dropping it stops the plugin's instance.
        let called = tokio::select! {
            called = call => called,
            _ = context.ct.cancelled() => Ok(Called::Failed("the client cancelled the call".into())),
        };
        // The call's reports go out before its result (the sink went with the call).
        if let Some(forwarded) = forwarded {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), forwarded).await;
        }
        answer(called).map(CallToolResponse::Complete)
    }
}

/// `tools/call` without progress reports, for a session: what [`McpHandler::call_tool`] answers
/// when the client asks for none. The HTTP transport's fast path for plain calls uses it.
pub async fn call_without_progress(
    gateway: &McpGateway,
    session: &McpSession,
    tool: &str,
    arguments: serde_json::Map<String, serde_json::Value>,
) -> Result<CallToolResult, ErrorData> {
    answer(gateway.call(session, tool, serde_json::Value::Object(arguments), None).await)
}

/// How a call ended, as an MCP result (a failed tool is `isError` inside it) or a protocol error.
fn answer(called: Result<Called, GatewayError>) -> Result<CallToolResult, ErrorData> {
    Ok(match called.map_err(protocol_error)? {
        Called::Output(output) => to_mcp_result(output),
        Called::Failed(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
    })
}

/// Where a call's progress reports go when the client asked for them (`_meta.progressToken`):
/// `notifications/progress`, in the order the plugin made them. The task ends with the call.
fn progress_to_client(peer: Peer<RoleServer>, token: ProgressToken) -> (ProgressSink, tokio::task::JoinHandle<()>) {
    let (reports, mut received) = tokio::sync::mpsc::unbounded_channel::<ProgressUpdate>();
    let forwarded = tokio::spawn(async move {
        let mut count = 0.0;
        while let Some(report) = received.recv().await {
            count += 1.0;
            // Progress must grow: the plugin's fraction when it gives one, else a count.
            let notice = match report.fraction {
                Some(fraction) => ProgressNotificationParam::new(token.clone(), f64::from(fraction)).with_total(1.0),
                None => ProgressNotificationParam::new(token.clone(), count),
            };
            if peer.notify_progress(notice.with_message(report.message)).await.is_err() {
                break;
            }
        }
    });
    let sink: ProgressSink = Arc::new(move |report| {
        let _ = reports.send(report);
    });
    (sink, forwarded)
}

fn protocol_error(error: GatewayError) -> ErrorData {
    match error {
        GatewayError::UnknownTool(_) => ErrorData::invalid_params(error.to_string(), None),
        GatewayError::Policy(_) => ErrorData::internal_error(error.to_string(), None),
    }
}

/// A tool as MCP lists it; its annotations are hints, as the protocol says.
fn to_mcp_tool(tool: &ToolInfo) -> Tool {
    let schema = match &tool.input_schema {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::from_iter([("type".to_string(), serde_json::Value::from("object"))]),
    };
    let hints = &tool.annotations;
    Tool::new(tool.name.clone(), tool.description.clone(), Arc::new(schema)).with_annotations(
        ToolAnnotations::new()
            .read_only(hints.read_only)
            .destructive(hints.destructive)
            .idempotent(hints.idempotent)
            .open_world(hints.open_world),
    )
}

/// A tool's output as an MCP result: text and JSON as text, images as images; a plugin's own
/// error is `isError` inside the result, for the model to read.
fn to_mcp_result(output: ToolOutput) -> CallToolResult {
    let content = output
        .content
        .into_iter()
        .map(|part| match part {
            ContentPart::Text { text } => ContentBlock::text(text),
            ContentPart::Json { json } => ContentBlock::text(json.to_string()),
            ContentPart::Image { mime_type, data } => ContentBlock::image(data, mime_type),
        })
        .collect();
    if output.is_error { CallToolResult::error(content) } else { CallToolResult::success(content) }
}
