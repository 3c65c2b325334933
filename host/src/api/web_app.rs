//! The browser app's pages and files, for every GET outside the API (`web`): a file of the app
//! when the path names one, else the app's page, whose own router shows the route. Paths under
//! `/api/` and `/internal/` that match nothing get the API's JSON 404.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::web::{self, Asset};

/// What the app's pages may load and reach: this server only (no CDN: it may run offline),
/// images also as data (screenshots) and blobs; no framing by other sites.
const CONTENT_SECURITY: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub async fn page(request: Request) -> Response {
    let path = request.uri().path();
    let is_api = path == "/api" || path.starts_with("/api/") || path.starts_with("/internal/");
    if is_api || !matches!(*request.method(), Method::GET | Method::HEAD) {
        return ApiError::not_found("no such endpoint; the API lives under /api/v1").into_response();
    }
    let file = path.trim_start_matches('/');
    let found = match web::asset(file) {
        Some(asset) if !file.is_empty() => Some(asset),
        // A file that is not there is a 404; any other path is a route of the app.
        _ if file.starts_with("assets/") || file.rsplit('/').next().is_some_and(|name| name.contains('.')) => None,
        _ => web::index(),
    };
    match found {
        Some(asset) => respond(asset),
        None => ApiError::not_found(format!("the app has no file `{path}`")).into_response(),
    }
}

fn respond(asset: Asset) -> Response {
    let cache = if asset.immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = Response::new(Body::from(asset.bytes.into_owned()));
    let headers = response.headers_mut();
    if let Ok(content_type) = HeaderValue::from_str(&asset.content_type) {
        headers.insert(CONTENT_TYPE, content_type);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
