//! Outbound HTTP (capability `http`, the WASI interface `wasi:http/outgoing-handler`): requests
//! to the hosts the admin's tool policy grants the plugin. The host checks each request's
//! origin, refuses addresses that are not the public internet unless granted, never follows a
//! redirect for you (a redirect is a new request, checked again) and limits the time, the
//! response size and the requests in flight.
//!
//! ```ignore
//! let response = toolhost_plugin::http::Request::get("https://api.example.com/v1/items").send()?;
//! let text = response.text();
//! ```

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// One request, built up and then sent with [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// A response, its body read in full.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, by its name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed, in words a model can act on.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpError {
    /// The URL is not `http://` or `https://` with a host.
    InvalidUrl(String),
    /// The tool policy does not grant this plugin the request's origin.
    Denied,
    /// The name leads to an address that is not the public internet, which the policy does not grant.
    PrivateAddress,
    /// The response body was larger than the plugin's limit.
    TooLarge(Option<u64>),
    /// The request took longer than the plugin's limit.
    Timeout,
    /// The call already has as many requests in flight as its limit.
    TooManyInFlight,
    /// Anything else (DNS, connection, TLS, protocol), as the host reported it.
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(url) => write!(f, "`{url}` is not an http:// or https:// URL with a host"),
            HttpError::Denied => f.write_str(
                "the server's tool policy does not let this plugin reach that origin; an admin can grant it",
            ),
            HttpError::PrivateAddress => f.write_str(
                "that name leads to an address that is not on the public internet, which the tool policy does not grant",
            ),
            HttpError::TooLarge(Some(limit)) => write!(f, "the response is larger than this plugin's limit of {limit} bytes"),
            HttpError::TooLarge(None) => f.write_str("the response is larger than this plugin's limit"),
            HttpError::Timeout => f.write_str("the request took longer than this plugin's time limit"),
            HttpError::TooManyInFlight => f.write_str("this call already has as many requests in flight as it may"),
            HttpError::Failed(why) => write!(f, "the request failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied,
            ErrorCode::DestinationIpProhibited => HttpError::PrivateAddress,
            ErrorCode::HttpResponseBodySize(limit) => HttpError::TooLarge(limit),
            ErrorCode::HttpResponseTimeout | ErrorCode::ConnectionTimeout | ErrorCode::DnsTimeout => HttpError::Timeout,
            ErrorCode::ConnectionLimitReached => HttpError::TooManyInFlight,
            other => HttpError::Failed(format!("{other:?}")),
        }
    }
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.to_string(), url: url.to_string(), headers: Vec::new(), body: None, timeout: None }
    }

    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", url).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// A shorter time limit than the plugin's (a longer one is cut to the plugin's).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(&self) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&self.url).ok_or_else(|| HttpError::InvalidUrl(self.url.clone()))?;
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| HttpError::Failed(format!("the header `{name}` cannot be sent: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = || HttpError::InvalidUrl(self.url.clone());
        request.set_method(&method).map_err(|()| HttpError::Failed(format!("invalid method `{}`", self.method)))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
        request.set_authority(Some(authority)).map_err(|()| invalid())?;
        request.set_path_with_query(Some(&path)).map_err(|()| invalid())?;
        let outgoing = request.body().map_err(|()| HttpError::Failed("the request body was taken".into()))?;
        let options = self.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = timeout.as_nanos().min(u64::MAX as u128) as u64;
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            options
        });
        // Sent first, written after: the host reads the body as it is written.
        let pending = outgoing_handler::handle(request, options)?;
        if let Some(body) = &self.body {
            let stream =
                outgoing.write().map_err(|()| HttpError::Failed("the request body cannot be written".into()))?;
            for chunk in body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(|e| stream_failed(e, "writing the request body"))?;
            }
        }
        OutgoingBody::finish(outgoing, None)?;
        let response = loop {
            match pending.get() {
                Some(Ok(outcome)) => break outcome?,
                Some(Err(())) => return Err(HttpError::Failed("the response was already taken".into())),
                None => pending.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| HttpError::Failed("the response body was taken".into()))?;
        let body = read_all(&incoming)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response { status, headers, body })
    }
}

fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming.stream().map_err(|()| HttpError::Failed("the response body was taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(error) => return Err(stream_failed(error, "reading the response body")),
        }
    }
}

fn stream_failed(error: StreamError, doing: &str) -> HttpError {
    match error {
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => HttpError::from(code),
            // A body stopped while it is read comes as a stream error with the host's words only.
            None => {
                let said = e.to_debug_string();
                if said.contains("body size exceeds limit") {
                    HttpError::TooLarge(None)
                } else if said.contains("timeout") || said.contains("timed out") {
                    HttpError::Timeout
                } else {
                    HttpError::Failed(format!("{doing}: {said}"))
                }
            }
        },
        StreamError::Closed => HttpError::Failed(format!("{doing}: the stream closed")),
    }
}

/// `https://host:port/path?q` as (scheme, authority, path with query).
fn split_url(url: &str) -> Option<(Scheme, &str, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or("");
    if authority.is_empty() {
        return None;
    }
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    Some((scheme, authority, path))
}
