//! Who calls: every `/api/v1` call names its user, by an API token (`Authorization: Bearer`,
//! for scripts) or by a browser's session cookie.
//!
//! A cookie is sent by the browser whoever made the page, so a cookie alone proves nothing
//! about intent: a request that changes something must also carry the session's CSRF token in
//! `X-CSRF-Token` (which another site's page cannot read), and a WebSocket opened with a cookie
//! must come from a page of this server (its `Origin`). The cookie is `SameSite=Strict` and
//! `HttpOnly` besides.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::{ApiError, AppState};
use crate::store::{Session, User};

/// The browser session's cookie.
pub const SESSION_COOKIE: &str = "toolhost_session";
/// The header a browser's state-changing request carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller.
pub struct Caller(pub User);

/// Proof that the caller is an admin.
pub struct Admin(pub User);

/// The caller's browser session, with the cookie's value (for signing out).
pub struct SignedIn {
    pub session: Session,
    pub cookie: String,
}

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
        if let Some(user) = bearer_user(&parts.headers, state).await? {
            return Ok(Caller(user));
        }
        if session_cookie(&parts.headers).is_some() {
            let SignedIn { session, .. } = SignedIn::from_request_parts(parts, state).await?;
            return Ok(Caller(session.user));
        }
        Err(ApiError::unauthorized(
            "sign in (POST /api/v1/auth/sign-in), or send `Authorization: Bearer TOKEN`; an operator creates tokens with `toolhost tokens create USER`",
        ))
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedIn, ApiError> {
        let Some(cookie) = session_cookie(&parts.headers) else {
            return Err(ApiError::unauthorized("not signed in; sign in with POST /api/v1/auth/sign-in"));
        };
        let Some(session) = state.store.session(&cookie).await? else {
            return Err(ApiError::unauthorized("the session ended; sign in again"));
        };
        if changes_state(&parts.method) && !carries_csrf_token(&parts.headers, &session.csrf_token) {
            return Err(ApiError::forbidden(format!(
                "a request that changes something must carry the session's CSRF token in `{CSRF_HEADER}` (from sign-in or GET /api/v1/auth/session)"
            )));
        }
        if opens_websocket(&parts.headers) && !from_this_server(&parts.headers) {
            return Err(ApiError::forbidden(
                "a WebSocket opened with a session cookie must come from this server's pages",
            ));
        }
        Ok(SignedIn { session, cookie })
    }
}

/// The user of the request's API token (`Authorization: Bearer`); `None` without the header.
pub(super) async fn bearer_user(headers: &HeaderMap, state: &AppState) -> Result<Option<User>, ApiError> {
    let Some(header) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(token) = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(ApiError::unauthorized(
            "send `Authorization: Bearer TOKEN`; an operator creates tokens with `toolhost tokens create USER`",
        ));
    };
    match state.accounts.authenticate(token).await? {
        Some(user) => Ok(Some(user)),
        None => {
            Err(ApiError::unauthorized("the token is not valid; create a new one with `toolhost tokens create USER`"))
        }
    }
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn carries_csrf_token(headers: &HeaderMap, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    given.len() == expected.len() && bool::from(given.ct_eq(expected.as_bytes()))
}

fn opens_websocket(headers: &HeaderMap) -> bool {
    headers.get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether the request's `Origin` is this server (the host the request was sent to).
pub(super) fn from_this_server(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) =
        (headers.get(ORIGIN).and_then(|v| v.to_str().ok()), headers.get(HOST).and_then(|v| v.to_str().ok()))
    else {
        // Browsers always send an Origin with a WebSocket; a script without one is no page.
        return headers.get(ORIGIN).is_none();
    };
    origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// The `Set-Cookie` value that opens a session (`max_age_secs`) or, with an empty value and
/// no age, ends it.
pub fn session_cookie_header(value: &str, max_age_secs: i64, secure: bool) -> String {
    let mut built = cookie::Cookie::build((SESSION_COOKIE, value.to_string()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(time::Duration::seconds(max_age_secs))
        .build();
    if value.is_empty() {
        built.make_removal();
    }
    built.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_the_csrf_token_must_match_exactly() {
        let with = headers(&[("cookie", "theme=dark; toolhost_session=abc123"), ("x-csrf-token", "t0k")]);
        assert_eq!(session_cookie(&with).as_deref(), Some("abc123"));
        assert!(carries_csrf_token(&with, "t0k"));
        assert!(!carries_csrf_token(&with, "t0k2"));
        assert!(!carries_csrf_token(&headers(&[]), "t0k"));
        assert_eq!(session_cookie(&headers(&[("cookie", "toolhost_session=")])), None);
    }

    #[test]
    fn a_websocket_with_a_cookie_must_come_from_this_servers_pages() {
        let same = headers(&[("host", "127.0.0.1:7420"), ("origin", "http://127.0.0.1:7420")]);
        assert!(from_this_server(&same));
        let other = headers(&[("host", "127.0.0.1:7420"), ("origin", "https://evil.example")]);
        assert!(!from_this_server(&other));
        assert!(from_this_server(&headers(&[("host", "127.0.0.1:7420")])), "no Origin: not a browser page");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_removable() {
        let set = session_cookie_header("v", 60, true);
        for part in ["toolhost_session=v", "HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=60"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(session_cookie_header("", 0, false).contains("Max-Age=0"));
    }
}
