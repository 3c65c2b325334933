//! Users, administered by admins: the list (with whether each can sign in and how many API
//! tokens they hold), new users with a password, a new password or role, and a user's tokens,
//! which an admin can revoke (a leaked token is stopped without waiting for its owner).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiJson;
use super::sessions::{TokenList, UserView};
use super::{ApiError, AppState};
use crate::accounts::SignInError;
use crate::store::{ListedUser, User};

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserList {
    /// By name.
    pub users: Vec<ListedUser>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Letters, digits, `.`, `_` and `-`; 1 to 64 of them.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._\-]{1,64}$"))]
    pub name: String,
    #[serde(default)]
    pub admin: bool,
    /// 8 characters or more; without one the user cannot sign in (a token still works).
    #[schemars(length(min = 8, max = 1024))]
    pub password: Option<String>,
}

/// Absent fields stay as they are.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub admin: Option<bool>,
    /// A new password: the user's browsers are signed out.
    #[schemars(length(min = 8, max = 1024))]
    pub password: Option<String>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn password_refused(error: SignInError) -> ApiError {
    match error {
        SignInError::Store(e) => e.into(),
        other => ApiError::bad_request(other.to_string()),
    }
}

async fn existing(state: &AppState, id: &str) -> Result<User, ApiError> {
    state.store.user(id).await?.ok_or_else(|| ApiError::not_found(format!("there is no user `{id}`")))
}

/// `GET /users`
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList { users: state.store.list_users().await? }))
}

/// `POST /users`
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a user name: use 1 to 64 letters, digits, `.`, `_` or `-`",
            body.name
        )));
    }
    if let Some(password) = &body.password {
        crate::accounts::check_password(password).map_err(ApiError::bad_request)?;
    }
    let user = state.store.create_user(&body.name, body.admin).await?;
    if let Some(password) = &body.password {
        state.accounts.set_password(&user, password).await.map_err(password_refused)?;
    }
    tracing::info!(by = %admin.name, user = %user.name, admin = user.is_admin, "user created");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// `PATCH /users/{id}`
pub async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    let mut user = existing(&state, &id).await?;
    if let Some(password) = &body.password {
        crate::accounts::check_password(password).map_err(ApiError::bad_request)?;
    }
    if let Some(is_admin) = body.admin {
        if !is_admin && user.id == admin.id {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "you cannot take away your own admin role (nobody might be left to give it back); ask another admin",
            ));
        }
        state.store.set_admin(&user.id, is_admin).await?;
        state.accounts.forget_tokens();
        user.is_admin = is_admin;
    }
    if let Some(password) = &body.password {
        state.accounts.set_password(&user, password).await.map_err(password_refused)?;
    }
    tracing::info!(by = %admin.name, user = %user.name, admin = ?body.admin, password = body.password.is_some(), "user changed");
    Ok(Json(UserView::from(&user)))
}

/// `GET /users/{id}/tokens`
pub async fn tokens(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    let user = existing(&state, &id).await?;
    Ok(Json(TokenList { tokens: state.store.tokens(&user.id).await? }))
}

/// `DELETE /users/{id}/tokens/{token_id}`
pub async fn revoke_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user = existing(&state, &id).await?;
    if !state.store.revoke_token(&user.id, &token_id).await? {
        return Err(ApiError::not_found(format!("`{}` has no token `{token_id}`", user.name)));
    }
    state.accounts.forget_tokens();
    tracing::info!(by = %admin.name, user = %user.name, token = %token_id, "token revoked by an admin");
    Ok(StatusCode::NO_CONTENT)
}
