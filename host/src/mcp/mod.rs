//! The MCP gateway: Toolhost's tools for MCP clients (desktop apps, IDEs, other agents), as the
//! tool policy shows them to the principal kind `mcp` on behalf of the caller's user, each call
//! running the Wasm tool under the same policy checks, grants and limits as in a chat, in a
//! workspace that user owns.
//!
//! The protocol is rmcp's (`handler`); the transports are streamable HTTP at `/mcp` (`api::mcp`,
//! which authenticates the caller and names the session's workspace) and stdio (`toolhost mcp`,
//! which forwards each message to a server's `/mcp`: a workspace belongs to the server that holds
//! its mounts and sandboxes, so no second process may act on it).

mod handler;

use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::Instrument;

pub use handler::{McpHandler, call_without_progress};

use crate::domain::{ChatKind, ToolInfo};
use crate::plugins::capabilities::agents::AgentBackend;
use crate::plugins::capabilities::secrets::SecretSource;
use crate::plugins::capabilities::workspace_exec::WorkspaceExec;
use crate::plugins::capabilities::workspace_fs::WorkspaceFs;
use crate::plugins::capabilities::{Capability, ChatServices, ProgressSink};
use crate::plugins::{CallContext, CallRequest, ContentPart, PluginRuntime, ToolOutput};
use crate::policy::{ActivePolicy, Attendance, PolicyEngine, Principal};
use crate::store::{User, Workspace};
use crate::workspace::{ChatScope, WorkspaceService};

/// Tools per `tools/list` page.
pub const PAGE_SIZE: usize = 100;

/// How stale the policy an MCP call is checked under may be, when no notice of a change on
/// another replica has arrived.
const POLICY_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a client without a workspace is told when a workspace tool fails.
const NO_WORKSPACE: &str = "this MCP session names no workspace: add `?workspace_id=ID` to the MCP URL (or `--workspace ID` to `toolhost mcp`); GET /api/v1/workspaces lists yours";

/// Who an MCP request is for: the authenticated user, and the workspace the session works in
/// (already checked to be theirs).
#[derive(Clone, Debug)]
pub struct McpSession {
    pub user: User,
    pub workspace: Option<Workspace>,
}

/// One page of the tools a session sees, by name.
pub struct ToolPage {
    pub tools: Vec<ToolInfo>,
    /// The name of the last tool on this page, when more follow.
    pub next_cursor: Option<String>,
}

/// How a call ended, as the client reads it: a tool's own output (which may be an error the
/// plugin returned), or a refusal or failure the model can act on.
pub enum Called {
    Output(ToolOutput),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No plugin offers the tool: a protocol error, not a tool result.
    #[error("there is no tool named `{0}`; tools/list lists the tools this session may use")]
    UnknownTool(String),
    #[error("the tool policy cannot be read: {0}")]
    Policy(String),
}

/// The services a call through the gateway uses: the same a chat's tool calls use.
pub struct McpGateway {
    pub runtime: Arc<PluginRuntime>,
    pub policy: Arc<PolicyEngine>,
    pub workspaces: Arc<WorkspaceService>,
    pub agents: Arc<dyn AgentBackend>,
    pub secrets: Arc<dyn SecretSource>,
}

impl McpGateway {
    /// How the policy sees a session: kind `mcp`, owned by its user. One principal per user,
    /// so decisions are cached across that user's requests.
    pub fn principal(user: &User) -> Principal {
        Principal {
            id: format!("mcp:{}", user.id),
            kind: ChatKind::Mcp,
            depth: 0,
            owner: user.name.clone(),
            owner_role: Principal::role_of(user.is_admin),
            model: String::new(),
        }
    }

    /// The policy in force, checked against the store at most once a second (see
    /// [`PolicyEngine::recent`]).
    async fn policy(&self) -> Result<Arc<ActivePolicy>, GatewayError> {
        self.policy.recent(POLICY_CHECK_EVERY).await.map_err(|e| GatewayError::Policy(e.to_string()))
    }

    /// The tools the session sees, in name order, from after `cursor` (the last name of the
    /// previous page): a cursor stays valid when the policy or the plugins change between pages.
    pub async fn tools(&self, session: &McpSession, cursor: Option<&str>) -> Result<ToolPage, GatewayError> {
        let policy = self.policy().await?;
        let visible = policy.rules.visible_tools(&Self::principal(&session.user));
        Ok(page(self.runtime.loaded().tools(), &visible, cursor))
    }

    /// Runs `tool` for the session. Policy is checked as in a chat (the tool must be visible and
    /// callable; each capability use is checked as it happens) and denials are audited.
    pub async fn call(
        &self,
        session: &McpSession,
        tool: &str,
        arguments: serde_json::Value,
        progress: Option<ProgressSink>,
    ) -> Result<Called, GatewayError> {
        let Some(plugin) = self.runtime.loaded().tool(tool).map(|t| t.plugin.clone()) else {
            return Err(GatewayError::UnknownTool(tool.to_string()));
        };
        let policy = self.policy().await?;
        let principal = Self::principal(&session.user);
        let span = tracing::info_span!("mcp_call", tool, plugin = %plugin, user = %session.user.name);
        async {
            if let Some(refusal) = self.denial(&policy, &principal, &plugin, tool) {
                return Ok(Called::Failed(refusal));
            }
            let workspace = match self.workspace_for(session) {
                Ok(workspace) => workspace,
                Err(message) => return Ok(Called::Failed(message)),
            };
            let mut request = self.request(session, &policy, &principal, tool, arguments, workspace);
            request.progress = progress;
            let called = match self.runtime.call(request).await {
                Ok(output) => Called::Output(output),
                Err(error) => Called::Failed(error.to_string()),
            };
            Ok(self.explain_missing_workspace(session, &plugin, called))
        }
        .instrument(span)
        .await
    }

    /// The refusal the client reads when the policy denies the call (the denial is audited).
    fn denial(&self, policy: &ActivePolicy, principal: &Principal, plugin: &str, tool: &str) -> Option<String> {
        let shown = policy.rules.visible_tools(principal).contains(tool);
        let decision = self.policy.decide_call(policy, principal, shown, plugin, tool);
        if !decision.allowed {
            return Some(format!(
                "tool `{tool}` is not available to MCP clients: the tool policy denies it ({}); an admin can change the policy",
                decision.decided_by
            ));
        }
        // An MCP call has nobody to ask while it waits: a call that needs approval is refused.
        match self.policy.attendance(policy, principal, plugin, tool) {
            Attendance::Unattended => None,
            Attendance::Ask { rule } => Some(format!(
                "tool `{tool}` needs a person's approval under the tool policy ({rule}), which MCP calls cannot ask for; call it from a chat, or ask an admin to change the policy"
            )),
            Attendance::Undecidable { rule } => Some(format!(
                "tool `{tool}` did not run: the tool policy's approval rules cannot be evaluated ({rule}); an admin must fix the policy"
            )),
        }
    }

    /// The session's workspace, when it has one and this server holds it.
    fn workspace_for(&self, session: &McpSession) -> Result<Option<Workspace>, String> {
        let Some(workspace) = &session.workspace else { return Ok(None) };
        if !self.workspaces.lives_here(workspace) {
            return Err(format!(
                "workspace `{}` lives on another node ({}); connect the MCP client to a replica on that node",
                workspace.id,
                workspace.node_id.as_deref().unwrap_or("unknown")
            ));
        }
        Ok(Some(workspace.clone()))
    }

    /// A failed call of a plugin that works in workspaces, in a session that names none, most
    /// likely failed for that: the plugin's own words speak of a chat, so say how an MCP
    /// client names a workspace.
    fn explain_missing_workspace(&self, session: &McpSession, plugin: &str, called: Called) -> Called {
        let failed = match &called {
            Called::Output(output) => output.is_error,
            Called::Failed(_) => true,
        };
        let imports = self.runtime.loaded().plugin(plugin).map(|p| p.capabilities.clone());
        let works_in_one =
            imports.unwrap_or_default().iter().any(|c| c == WorkspaceFs::NAME || c == WorkspaceExec::NAME);
        if !(failed && works_in_one && session.workspace.is_none()) {
            return called;
        }
        let note = format!("{NO_WORKSPACE} (plugin `{plugin}` works in workspaces)");
        match called {
            Called::Output(mut output) => {
                output.content.push(ContentPart::Text { text: note });
                Called::Output(output)
            }
            Called::Failed(message) => Called::Failed(format!("{message}; {note}")),
        }
    }

    fn request(
        &self,
        session: &McpSession,
        policy: &Arc<ActivePolicy>,
        principal: &Principal,
        tool: &str,
        arguments: serde_json::Value,
        workspace: Option<Workspace>,
    ) -> CallRequest {
        let files = workspace.as_ref().and_then(|w| self.workspaces.files_root(w));
        let services = ChatServices {
            workspaces: self.workspaces.clone(),
            agents: self.agents.clone(),
            secrets: self.secrets.clone(),
            scope: ChatScope {
                chat_id: principal.id.clone(),
                root_chat_id: principal.id.clone(),
                owner_id: session.user.id.clone(),
                owner_is_admin: session.user.is_admin,
                workspace_id: workspace.map(|w| w.id),
            },
        };
        CallRequest {
            tool: tool.to_string(),
            arguments,
            context: CallContext {
                chat_id: principal.id.clone(),
                root_chat_id: principal.id.clone(),
                parent_chat_id: None,
                kind: ChatKind::Mcp,
                user_id: session.user.id.clone(),
                call_id: format!("mcp-{}", crate::store::new_id()),
            },
            workspace: files,
            chat: Some(services),
            grants: Some(self.policy.grants(policy, principal, tool)),
            progress: None,
        }
    }
}

/// The visible tools after `cursor`, in name order, at most a page of them.
fn page<'a>(
    installed: impl Iterator<Item = &'a ToolInfo>,
    visible: &BTreeSet<String>,
    cursor: Option<&str>,
) -> ToolPage {
    let mut tools: Vec<&ToolInfo> =
        installed.filter(|t| visible.contains(&t.name) && cursor.is_none_or(|after| t.name.as_str() > after)).collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let more = tools.len() > PAGE_SIZE;
    let tools: Vec<ToolInfo> = tools.into_iter().take(PAGE_SIZE).cloned().collect();
    let next_cursor = if more { tools.last().map(|t| t.name.clone()) } else { None };
    ToolPage { tools, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ToolAnnotations;

    fn tool(name: &str) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            plugin: "p".into(),
            description: String::new(),
            input_schema: serde_json::json!({"type": "object"}),
            annotations: ToolAnnotations { read_only: false, destructive: false, idempotent: false, open_world: false },
        }
    }

    #[test]
    fn pages_follow_each_other_by_name_and_skip_hidden_tools() {
        let installed: Vec<ToolInfo> = (0..250).rev().map(|n| tool(&format!("t{n:03}"))).collect();
        let visible: BTreeSet<String> = installed.iter().map(|t| t.name.clone()).filter(|n| n != "t150").collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = page(installed.iter(), &visible, cursor.as_deref());
            assert!(page.tools.len() <= PAGE_SIZE);
            seen.extend(page.tools.iter().map(|t| t.name.clone()));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 249, "every visible tool once");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in name order");
        assert!(!seen.contains(&"t150".to_string()), "a hidden tool is never listed");
    }
}
