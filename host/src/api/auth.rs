//! Bearer-token authentication: every `/api/v1` call names its user.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::store::User;

/// The authenticated caller.
pub struct Caller(pub User);

/// Proof that the caller is an admin.
pub struct Admin(pub User);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let Caller(user) = Caller::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err(ApiError::forbidden(
                "only admins may do this; an operator makes admins with `toolhost users create NAME --admin`",
            ));
        }
        Ok(Admin(user))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty())
        else {
            return Err(ApiError::unauthorized(
                "send `Authorization: Bearer TOKEN`; an operator creates tokens with `toolhost tokens create USER`",
            ));
        };
        match state.store.authenticate(token).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(ApiError::unauthorized(
                "the token is not valid; create a new one with `toolhost tokens create USER`",
            )),
        }
    }
}
