//! Signing in and out of the browser app, the session a page reads its CSRF token from, and
//! each user's own API tokens.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, SignedIn, session_cookie_header};
use super::error::ApiJson;
use super::{ApiError, AppState};
use crate::accounts::SignInError;
use crate::store::{Session, TokenInfo, User};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// A signed-in browser's session, as its pages see it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionView {
    pub user: UserView,
    /// Sent back in `X-CSRF-Token` with every request that changes something.
    pub csrf_token: String,
    pub expires_at: i64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView { id: user.id.clone(), name: user.name.clone(), is_admin: user.is_admin }
    }
}

impl From<&Session> for SessionView {
    fn from(session: &Session) -> SessionView {
        SessionView {
            user: UserView::from(&session.user),
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires_at,
        }
    }
}

/// `POST /auth/sign-in`: a session cookie for a name and password.
pub async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let ApiJson(body) = ApiJson::<SignIn>::from_request(request, &()).await?;
    let (cookie, session) =
        state.accounts.sign_in(body.name.trim(), &body.password, address).await.map_err(|e| match e {
            SignInError::Refused => ApiError::unauthorized(
                "the name or the password is wrong; an operator sets passwords with `toolhost users set-password NAME`",
            ),
            SignInError::TooMany { retry_after_secs } => ApiError {
                retry_after_secs: Some(u32::try_from(retry_after_secs).unwrap_or(u32::MAX)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", e.to_string())
            },
            SignInError::Invalid(m) => ApiError::bad_request(m),
            SignInError::Store(e) => e.into(),
        })?;
    let max_age = state.accounts.session_length().as_secs() as i64;
    let mut response = Json(SessionView::from(&session)).into_response();
    set_cookie(&mut response, &session_cookie_header(&cookie, max_age, state.secure_cookies));
    Ok(response)
}

/// `POST /auth/sign-out`: ends the session (the cookie goes too).
pub async fn sign_out(State(state): State<AppState>, signed_in: SignedIn) -> Result<Response, ApiError> {
    state.store.end_session(&signed_in.cookie).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &session_cookie_header("", 0, state.secure_cookies));
    Ok(response)
}

/// `GET /auth/session`: the browser's session, with its CSRF token (a reloaded page reads it
/// here; the cookie itself is out of the page's reach).
pub async fn session(signed_in: SignedIn) -> Json<SessionView> {
    Json(SessionView::from(&signed_in.session))
}

fn set_cookie(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for (shown in the list).
    #[schemars(length(max = 100), regex(pattern = r"[^\s]"))]
    pub label: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The token itself: shown this once.
    pub token: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `GET /users/me/tokens`
pub async fn list_tokens(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList { tokens: state.store.tokens(&user.id).await? }))
}

/// `POST /users/me/tokens`
pub async fn create_token(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 100 {
        return Err(ApiError::bad_request("a token's label is 1 to 100 characters: say what the token is for"));
    }
    let (info, token) = state.store.create_listed_token(&user, label).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

/// `DELETE /users/me/tokens/{id}`
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.revoke_token(&user.id, &id).await? {
        return Err(ApiError::not_found(format!("you have no token `{id}`")));
    }
    state.accounts.forget_tokens();
    Ok(StatusCode::NO_CONTENT)
}
