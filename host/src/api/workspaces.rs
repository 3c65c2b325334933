//! `/api/v1/templates` and `/api/v1/workspaces`: templates to make workspaces from, and the
//! caller's workspaces with their lifecycle (create, start, stop, delete).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::auth::{Admin, Caller};
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::store::{User, Workspace};
use crate::workspace::template::{Template, TemplateProblem};
use crate::workspace::{CreateRequest, WorkspaceError};

impl From<WorkspaceError> for ApiError {
    fn from(error: WorkspaceError) -> ApiError {
        match error {
            WorkspaceError::NotFound(m) => ApiError::not_found(m),
            WorkspaceError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameters", m),
            WorkspaceError::Denied(m) => ApiError::forbidden(m),
            WorkspaceError::NotReady(m) | WorkspaceError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", m)
            }
            WorkspaceError::Failed(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "workspace_failed", m),
            WorkspaceError::Store(e) => e.into(),
        }
    }
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
    /// Templates that could not be loaded (shown to admins only).
    pub problems: Vec<TemplateProblem>,
}

fn template_list(templates: &crate::workspace::template::Templates, user: &User) -> TemplateList {
    TemplateList {
        templates: templates.templates.iter().filter(|t| user.is_admin || !t.admins_only).cloned().collect(),
        problems: if user.is_admin { templates.problems.clone() } else { Vec::new() },
    }
}

pub async fn list_templates(State(state): State<AppState>, Caller(user): Caller) -> Json<TemplateList> {
    Json(template_list(&state.workspaces.templates(), &user))
}

pub async fn reload_templates(State(state): State<AppState>, Admin(user): Admin) -> Json<TemplateList> {
    let templates = state.workspaces.reload_templates();
    // Each replica reads its own templates folder: the others read theirs again too.
    state.chats.hub.announce(crate::chat::notices::Notice::Reload { what: crate::chat::notices::Reload::Templates });
    Json(template_list(&templates, &user))
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    template_id: String,
    /// Unique among the caller's workspaces; made up from the template when absent.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.\-]{1,64}$"))]
    name: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

pub async fn list(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<WorkspaceList>, ApiError> {
    Ok(Json(WorkspaceList { workspaces: state.store.workspaces_of(&user.id).await? }))
}

pub async fn create(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> Result<(StatusCode, Json<Workspace>), ApiError> {
    let request = CreateRequest { template_id: body.template_id, name: body.name, parameters: body.parameters };
    let workspace = state.workspaces.create(&user.id, user.is_admin, request).await?;
    Ok((StatusCode::CREATED, Json(workspace)))
}

/// The caller's workspace `id`; someone else's is "not found", as if it did not exist.
pub async fn owned_workspace(state: &AppState, user: &User, id: &str) -> Result<Workspace, ApiError> {
    match state.store.workspace(id).await? {
        Some(workspace) if workspace.owner_id == user.id => Ok(workspace),
        _ => Err(ApiError::not_found(format!("you have no workspace `{id}`"))),
    }
}

pub async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Workspace>, ApiError> {
    Ok(Json(owned_workspace(&state, &user, &id).await?))
}

pub async fn start(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Workspace>, ApiError> {
    let workspace = owned_workspace(&state, &user, &id).await?;
    Ok(Json(state.workspaces.start_workspace(&workspace.id).await?))
}

pub async fn stop(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Workspace>, ApiError> {
    let workspace = owned_workspace(&state, &user, &id).await?;
    Ok(Json(state.workspaces.stop(&workspace.id).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let workspace = owned_workspace(&state, &user, &id).await?;
    state.workspaces.delete(&workspace.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
