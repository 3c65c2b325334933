//! Capability `workspaces`: templates, and creating, starting, stopping and waiting for the
//! workspace of the calling chat's tree. Each use is checked against the policy; `create` is
//! checked with the template as its scope (`template:<id>`), so a policy can keep templates
//! from some chats.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability};
use crate::plugins::bindings::toolhost::plugin::workspaces::{
    self as wit, CreateOutcome, ParameterType, TemplateInfo, TemplateParameter, WorkspaceError, WorkspaceInfo,
    WorkspaceStatus,
};
use crate::store::{Workspace, WorkspaceStatus as Status};
use crate::workspace::template::{self, Template};
use crate::workspace::{self as service, CreateRequest};

/// Longest a single `wait-ready` waits, whatever the plugin asks.
const MAX_WAIT: Duration = Duration::from_secs(3600);

pub struct Workspaces;

impl Capability for Workspaces {
    const NAME: &'static str = "workspaces";
    // Its state is the chat's services, shared by the capabilities that reach them.
    type State = ();

    fn new_state(_: &CallSetup) {}

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl CallState {
    /// The grant, then the service and the chat it works for. An owned copy: no borrow of the
    /// call's state may be held across an await (it is not `Sync`).
    fn workspaces_access(&self, scope: Option<&str>) -> Result<super::ChatServices, WorkspaceError> {
        let plugin = &self.identity.plugin;
        match scope {
            Some(scope) => self.grants.require_scoped(Workspaces::NAME, plugin, scope),
            None => self.grants.require(Workspaces::NAME, plugin),
        }
        .map_err(WorkspaceError::Denied)?;
        self.chat
            .clone()
            .ok_or_else(|| WorkspaceError::Failed("workspaces are not available in this context (no chat)".into()))
    }
}

async fn chat_workspace(access: &super::ChatServices) -> Result<Workspace, WorkspaceError> {
    access.workspaces.of_scope(&access.scope).await.map_err(to_wit)?.ok_or(WorkspaceError::NoWorkspace)
}

impl wit::Host for CallState {
    async fn list_templates(&mut self, query: Option<String>) -> Vec<TemplateInfo> {
        let Ok(access) = self.workspaces_access(None) else { return Vec::new() };
        access.workspaces.templates().search(query.as_deref()).into_iter().map(template_info).collect()
    }

    async fn read_template(&mut self, template_id: String) -> Result<TemplateInfo, WorkspaceError> {
        let access = self.workspaces_access(None)?;
        access.workspaces.template(&template_id, access.scope.owner_is_admin).map(|t| template_info(&t)).map_err(to_wit)
    }

    async fn current(&mut self) -> Option<WorkspaceInfo> {
        let access = self.workspaces_access(None).ok()?;
        chat_workspace(&access).await.ok().map(|w| workspace_info(&w))
    }

    async fn create(
        &mut self,
        template_id: String,
        name: Option<String>,
        parameters_json: String,
    ) -> Result<(CreateOutcome, WorkspaceInfo), WorkspaceError> {
        let access = self.workspaces_access(Some(&format!("template:{template_id}")))?;
        let parameters = match serde_json::from_str::<serde_json::Value>(if parameters_json.trim().is_empty() {
            "{}"
        } else {
            &parameters_json
        }) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(WorkspaceError::InvalidParameters(
                    "parameters must be a JSON object of parameter names to values".into(),
                ));
            }
        };
        let request = CreateRequest { template_id, name, parameters };
        let host_waits = self.host_waits.clone();
        let (outcome, workspace) =
            host_waits.during(access.workspaces.create_for_chat(&access.scope, request)).await.map_err(to_wit)?;
        let outcome = match outcome {
            service::CreateOutcome::Created => CreateOutcome::Created,
            service::CreateOutcome::Reused => CreateOutcome::Reused,
            service::CreateOutcome::Stopped => CreateOutcome::Stopped,
        };
        Ok((outcome, workspace_info(&workspace)))
    }

    async fn start(&mut self) -> Result<WorkspaceInfo, WorkspaceError> {
        let access = self.workspaces_access(None)?;
        let workspace = chat_workspace(&access).await?;
        access.workspaces.start_workspace(&workspace.id).await.map(|w| workspace_info(&w)).map_err(to_wit)
    }

    async fn stop(&mut self) -> Result<WorkspaceInfo, WorkspaceError> {
        let access = self.workspaces_access(None)?;
        let workspace = chat_workspace(&access).await?;
        access.workspaces.stop(&workspace.id).await.map(|w| workspace_info(&w)).map_err(to_wit)
    }

    async fn wait_ready(&mut self, timeout_ms: u64) -> Result<WorkspaceInfo, WorkspaceError> {
        let access = self.workspaces_access(None)?;
        let workspace = chat_workspace(&access).await?;
        let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT);
        let host_waits = self.host_waits.clone();
        let settled = host_waits.during(access.workspaces.wait_settled(&workspace.id, timeout)).await;
        settled.map(|w| workspace_info(&w)).map_err(to_wit)
    }
}

fn to_wit(error: service::WorkspaceError) -> WorkspaceError {
    use service::WorkspaceError as E;
    match error {
        E::NotFound(m) => WorkspaceError::NotFound(m),
        E::Invalid(m) => WorkspaceError::InvalidParameters(m),
        E::Denied(m) => WorkspaceError::Denied(m),
        E::NotReady(m) | E::Conflict(m) | E::Failed(m) => WorkspaceError::Failed(m),
        E::Store(e) => WorkspaceError::Failed(super::database_failed(&e, "workspaces")),
    }
}

fn workspace_info(workspace: &Workspace) -> WorkspaceInfo {
    WorkspaceInfo {
        id: workspace.id.clone(),
        name: workspace.name.clone(),
        template_id: workspace.template_id.clone(),
        status: match workspace.status {
            Status::Created => WorkspaceStatus::Created,
            Status::Starting => WorkspaceStatus::Starting,
            Status::Ready => WorkspaceStatus::Ready,
            Status::StartError => WorkspaceStatus::StartError,
            Status::StartTimeout => WorkspaceStatus::StartTimeout,
            Status::Stopped => WorkspaceStatus::Stopped,
        },
        detail: workspace.detail.clone(),
    }
}

fn template_info(template: &Template) -> TemplateInfo {
    TemplateInfo {
        id: template.id.clone(),
        name: template.name.clone(),
        description: template.description.clone(),
        network: template.network,
        startup_timeout_seconds: template.startup.timeout_seconds,
        parameters: template
            .parameters
            .iter()
            .map(|p| TemplateParameter {
                name: p.name.clone(),
                description: p.description.clone(),
                type_: match p.kind {
                    template::ParameterType::String => ParameterType::String,
                    template::ParameterType::Number => ParameterType::Number,
                    template::ParameterType::Bool => ParameterType::Bool,
                },
                required: p.required,
                default: p.default.as_ref().map(|v| v.to_string()),
                options: p.options.iter().map(|v| v.to_string()).collect(),
                pattern: p.pattern.clone(),
                min: p.min,
                max: p.max,
            })
            .collect(),
    }
}
