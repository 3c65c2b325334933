//! Templates and the workspace of the calling chat's tree (capability `workspaces`).

use crate::ToolError;
use crate::bindings::toolhost::plugin::workspaces as wit;
pub use crate::bindings::toolhost::plugin::workspaces::{
    CreateOutcome, ParameterType, TemplateInfo, TemplateParameter, WorkspaceError, WorkspaceInfo, WorkspaceStatus,
};

/// Templates whose id, name or description contain every word of `query`.
pub fn list_templates(query: Option<&str>) -> Vec<TemplateInfo> {
    wit::list_templates(query)
}

pub fn read_template(template_id: &str) -> Result<TemplateInfo, WorkspaceError> {
    wit::read_template(template_id)
}

/// The workspace bound to the calling chat's tree, if any.
pub fn current() -> Option<WorkspaceInfo> {
    wit::current()
}

/// Makes a workspace for the chat's tree (or reuses its own); returns before the startup
/// script has finished: follow with [`wait_ready`].
pub fn create(
    template_id: &str,
    name: Option<&str>,
    parameters_json: &str,
) -> Result<(CreateOutcome, WorkspaceInfo), WorkspaceError> {
    wit::create(template_id, name, parameters_json)
}

pub fn start() -> Result<WorkspaceInfo, WorkspaceError> {
    wit::start()
}

pub fn stop() -> Result<WorkspaceInfo, WorkspaceError> {
    wit::stop()
}

/// Waits until the chat's workspace is no longer building, or `timeout_ms` passes.
pub fn wait_ready(timeout_ms: u64) -> Result<WorkspaceInfo, WorkspaceError> {
    wit::wait_ready(timeout_ms)
}

impl WorkspaceStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkspaceStatus::Created => "created",
            WorkspaceStatus::Starting => "starting",
            WorkspaceStatus::Ready => "ready",
            WorkspaceStatus::StartError => "start_error",
            WorkspaceStatus::StartTimeout => "start_timeout",
            WorkspaceStatus::Stopped => "stopped",
        }
    }

    /// Still on its way to ready or not.
    pub fn is_building(&self) -> bool {
        matches!(self, WorkspaceStatus::Created | WorkspaceStatus::Starting)
    }
}

impl From<WorkspaceError> for ToolError {
    fn from(e: WorkspaceError) -> ToolError {
        match e {
            WorkspaceError::Denied(m) => ToolError::Denied(m),
            WorkspaceError::NotFound(m) => ToolError::NotFound(m),
            WorkspaceError::InvalidParameters(m) => ToolError::InvalidArguments(m),
            WorkspaceError::NoWorkspace => {
                ToolError::Failed("this chat has no workspace; create one with create_workspace".into())
            }
            WorkspaceError::Failed(m) => ToolError::Failed(m),
        }
    }
}
