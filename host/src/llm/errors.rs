//! What went wrong talking to a provider, classified so the turn knows whether to retry.

use std::time::Duration;

use serde_json::Value;

/// The classes of provider failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No API key or no model configured.
    NotConfigured,
    /// The provider could not be reached (DNS, refused, TLS, timeout before answering).
    Connection,
    /// The stream stopped before the model finished (connection cut, silence).
    Dropped,
    /// The provider accepted the request and sent nothing within the first-byte timeout.
    Timeout,
    RateLimited,
    Overloaded,
    /// A 5xx, or an internal error event mid-stream.
    Server,
    /// The API key was refused.
    Auth,
    /// The account is out of credit or quota.
    Quota,
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextTooLong,
    /// The provider sent something that is not its wire format.
    Protocol,
}

impl ErrorKind {
    /// Whether trying again later may succeed. A dropped stream only counts before any output
    /// (the turn checks that); everything the provider refused on its merits does not.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Connection
                | ErrorKind::Dropped
                | ErrorKind::Timeout
                | ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::Server
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LlmError {
    pub kind: ErrorKind,
    /// Readable, naming the provider, and saying what to do where there is something to do.
    pub message: String,
    /// What the provider asked for (`retry-after`).
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> LlmError {
        LlmError { kind, message: message.into(), retry_after: None }
    }

    /// An HTTP error answer, classified from its status and body.
    pub fn from_status(provider: &str, status: u16, body: &str, retry_after: Option<Duration>) -> LlmError {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let detail = parsed
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str().or_else(|| v["message"].as_str()).map(String::from))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let code = parsed
            .as_ref()
            .and_then(|v| v["error"]["type"].as_str().or_else(|| v["error"]["code"].as_str()).map(String::from))
            .unwrap_or_default();
        let kind = classify(status, &code, &detail);
        let advice = match kind {
            ErrorKind::Auth => format!(
                "; check the API key of provider `{provider}` (PUT /api/v1/providers/{{id}} with a new `api_key`)"
            ),
            ErrorKind::Quota => format!("; the account behind provider `{provider}` is out of credit or quota"),
            ErrorKind::ContextTooLong => "; the conversation is too long for this model".to_string(),
            _ => String::new(),
        };
        let message = format!("provider `{provider}` answered {status}: {detail}{advice}");
        LlmError { kind, message, retry_after }
    }

    /// An error event inside a stream (`{"type": "overloaded_error", "message": ...}`).
    pub fn from_stream_error(provider: &str, error_type: &str, detail: &str) -> LlmError {
        let status = match error_type {
            "overloaded_error" => 529,
            "rate_limit_error" => 429,
            "api_error" => 500,
            "authentication_error" => 401,
            "permission_error" => 403,
            "billing_error" => 402,
            "request_too_large" => 413,
            "invalid_request_error" => 400,
            _ => 500,
        };
        let kind = classify(status, error_type, detail);
        LlmError::new(kind, format!("provider `{provider}` reported an error mid-answer ({error_type}): {detail}"))
    }
}

fn classify(status: u16, code: &str, detail: &str) -> ErrorKind {
    let lower = detail.to_ascii_lowercase();
    let too_long = code == "context_length_exceeded"
        || code == "exceed_context_size_error"
        || [
            "context length",
            "context_length",
            "context size",
            "prompt is too long",
            "maximum context",
            "context window",
            "too many tokens",
        ]
        .iter()
        .any(|needle| lower.contains(needle));
    let quota = code == "insufficient_quota"
        || code == "billing_error"
        || lower.contains("quota")
        || lower.contains("credit balance");
    match status {
        401 | 403 => ErrorKind::Auth,
        402 => ErrorKind::Quota,
        429 if quota => ErrorKind::Quota,
        429 => ErrorKind::RateLimited,
        400 | 413 | 422 if too_long => ErrorKind::ContextTooLong,
        408 | 409 | 425 => ErrorKind::Server,
        529 => ErrorKind::Overloaded,
        503 if code == "overloaded_error" || lower.contains("overloaded") => ErrorKind::Overloaded,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::InvalidRequest,
    }
}

/// `retry-after` (seconds or an HTTP date) or `retry-after-ms`, as providers send them.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies_are_classified() {
        let kind = |status, body: &str| LlmError::from_status("p", status, body, None).kind;
        assert_eq!(
            kind(401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
            ErrorKind::Auth
        );
        assert_eq!(
            kind(429, r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#),
            ErrorKind::RateLimited
        );
        assert_eq!(
            kind(429, r#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#),
            ErrorKind::Quota
        );
        assert_eq!(
            kind(
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#
            ),
            ErrorKind::ContextTooLong
        );
        assert_eq!(
            kind(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#
            ),
            ErrorKind::ContextTooLong
        );
        assert_eq!(
            kind(
                400,
                r#"{"error":{"code":400,"message":"request (9000 tokens) exceeds the available context size (8192 tokens), try increasing it","type":"exceed_context_size_error"}}"#
            ),
            ErrorKind::ContextTooLong,
            "llama.cpp"
        );
        assert_eq!(kind(400, r#"{"error":{"message":"messages: field required"}}"#), ErrorKind::InvalidRequest);
        assert_eq!(
            kind(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            ErrorKind::Overloaded
        );
        assert_eq!(kind(502, "<html>bad gateway</html>"), ErrorKind::Server);
        assert!(LlmError::from_status("anthropic", 401, "{}", None).message.contains("provider `anthropic`"));
        assert_eq!(LlmError::from_stream_error("p", "overloaded_error", "Overloaded").kind, ErrorKind::Overloaded);
    }

    #[test]
    fn retry_after_is_read_in_every_form() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        let mut dated = reqwest::header::HeaderMap::new();
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        dated.insert("retry-after", later.parse().unwrap());
        let wait = retry_after(&dated).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
    }
}
