//! The one error shape of the API: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::{ALLOW, CONTENT_TYPE, SEC_WEBSOCKET_VERSION};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::catalog::CatalogError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Structured detail a client can act on (e.g. the problems of a refused policy).
    /// (Boxed: errors travel in every handler's `Result`, and are rarely this rich.)
    pub details: Option<Box<serde_json::Value>>,
    /// When to try again, for a refusal that says (`Retry-After`).
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None, retry_after_secs: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(details) = self.details {
            body["error"]["details"] = *details;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> ApiError {
        match error {
            CatalogError::Store(e) => e.into(),
            CatalogError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<crate::policy::PolicyError> for ApiError {
    fn from(error: crate::policy::PolicyError) -> ApiError {
        use crate::policy::PolicyError;
        match error {
            PolicyError::Store(e) => e.into(),
            PolicyError::NoSuchVersion(_) => ApiError::not_found(error.to_string()),
            PolicyError::Invalid(invalid) => {
                let details = json!({ "problems": invalid.problems });
                ApiError {
                    details: Some(Box::new(details)),
                    ..ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_policy",
                        format!("{invalid}; nothing was changed"),
                    )
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            other => {
                tracing::error!(error = %other, "request failed in the store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server could not complete the request; the server log has the details",
                )
            }
        }
    }
}

/// `Json` whose rejections (malformed JSON, unknown fields, wrong content type, too large)
/// come back in the API's error shape. Every body of this API is a JSON object: anything else
/// is refused before it is read into a request type (serde would read `[null, null]` into a
/// struct of two optional fields).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let value = match Json::<serde_json::Value>::from_request(request, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_json",
                format!("the body must be a JSON object, not {}", json_kind(&value)),
            ));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_json",
                format!("the body is not what this endpoint takes: {e}"),
            )
        })
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Puts every error answer in the one shape, whoever made it: axum's own rejections (a path
/// parameter that does not parse, a query string that does not fit, a WebSocket endpoint
/// reached without an upgrade, a method an endpoint does not have) come as plain text or
/// empty bodies. The status and headers such as `Allow` are kept.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, advice) = match status {
        StatusCode::BAD_REQUEST => {
            ("bad_request", "check the path and query parameters against GET /api/v1/openapi.json")
        }
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint; the API lives under /api/v1"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this endpoint does not take that method; the `Allow` header lists those it takes")
        }
        StatusCode::NOT_ACCEPTABLE => {
            ("not_acceptable", "ask for `application/json` or, for streams, `text/event-stream`")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "send the body as JSON with `Content-Type: application/json`")
        }
        StatusCode::UPGRADE_REQUIRED => ("upgrade_required", "connect to this endpoint with a WebSocket client"),
        status if status.is_server_error() => {
            ("internal", "the server could not complete the request; the server log has the details")
        }
        _ => ("bad_request", "see GET /api/v1/openapi.json for what this endpoint takes"),
    };
    let message = if text.is_empty() { advice.to_string() } else { format!("{text}; {advice}") };
    let mut answer = ApiError::new(status, code, message).into_response();
    for name in [ALLOW, SEC_WEBSOCKET_VERSION] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_json",
    };
    let message = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "send the body as JSON with `Content-Type: application/json`".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_string(),
        _ => rejection.body_text(),
    };
    ApiError::new(status, code, message)
}
