//! `http`: a plugin's requests to the world outside, through `wasi:http/outgoing-handler` (the
//! interface the Python and JavaScript runtimes already use for `fetch` and `urllib`).
//!
//! wasmtime's wasi:http turns the guest's request into an `http::Request`; this module sends it
//! with a client of its own, so that the host decides every step:
//! - the request's origin (`https://api.example.com:443`) is checked by the policy as the
//!   `http` capability's `context.scope` before anything leaves, for every request: a redirect
//!   is a new request the guest makes, so it is checked again (the host never follows one);
//! - the name is resolved here and the connection made to an address this module checked: an
//!   address that is not the public internet (loopback, private, link-local with the cloud
//!   metadata address, ...) is used only when the policy grants [`PRIVATE_ADDRESS`] with that
//!   exact `ip:port` as the scope, so a name cannot be pointed at the inside (and resolving once
//!   leaves no window for a second, different answer);
//! - `Host` is set from the URL by wasmtime and the guest may not set it, so the origin checked
//!   is the origin addressed;
//! - a request may take [`http_timeout_ms`](crate::plugins::PluginLimits::http_timeout_ms) in all, read at most
//!   [`http_max_response_kib`](crate::plugins::PluginLimits::http_max_response_kib) of body, and a call may have at most
//!   [`http_max_concurrent`](crate::plugins::PluginLimits::http_max_concurrent) requests in flight.
//!
//! Policy refusals are recorded in the audit log by the call's policy check; limit refusals
//! are logged with the chat, plugin and tool.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::secrets::{Issued, IssuedSecrets, SecretSource, binds};
use super::{CallIdentity, CallSetup, CallState, Capability, Grants};

/// A capability that is not an interface: an outbound request may connect to an address that
/// is not the public internet. Asked with the address (`127.0.0.1:8080`, `[::1]:8080`) as the
/// scope; no rule grants it by default, bundled plugins included.
pub const PRIVATE_ADDRESS: &str = "http-private-address";

pub struct Http;

impl Capability for Http {
    const NAME: &'static str = "http";
    const WASI_INTERFACE: Option<&'static str> = Some("wasi:http/outgoing-handler");
    type State = HttpState;

    fn new_state(setup: &CallSetup) -> HttpState {
        HttpState {
            ctx: WasiHttpCtx::new(),
            outbound: Outbound {
                grants: setup.grants.clone(),
                identity: setup.identity.clone(),
                timeout: Duration::from_millis(setup.limits.http_timeout_ms),
                max_response_bytes: setup.limits.http_max_response_kib.saturating_mul(1024),
                max_in_flight: setup.limits.http_max_concurrent,
                in_flight: Arc::new(Semaphore::new(setup.limits.http_max_concurrent as usize)),
                secrets: setup.issued_secrets.clone(),
                source: setup.chat.as_ref().map(|chat| chat.secrets.clone()),
                every_secret: Arc::new(tokio::sync::OnceCell::new()),
            },
        }
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
    }
}

/// A call's wasi:http context and the client that sends its requests.
pub struct HttpState {
    ctx: WasiHttpCtx,
    outbound: Outbound,
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let state = &mut self.states.Http;
        WasiHttpCtxView { ctx: &mut state.ctx, hooks: &mut state.outbound, table: &mut self.table }
    }
}

/// Sends one call's requests, within its grants and limits.
#[derive(Clone)]
struct Outbound {
    grants: Grants,
    identity: CallIdentity,
    timeout: Duration,
    max_response_bytes: u64,
    max_in_flight: u32,
    in_flight: Arc<Semaphore>,
    /// Secrets handed out in this call: substituted in request headers.
    secrets: IssuedSecrets,
    /// Where every secret's value is read from, to mask responses (`None` outside a chat).
    source: Option<Arc<dyn SecretSource>>,
    /// Every secret's name and value, read at the call's first request.
    every_secret: Arc<tokio::sync::OnceCell<Vec<(String, String)>>>,
}

type Exchange = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

impl WasiHttpHooks for Outbound {
    /// `Host` is set from the checked target in [`Outbound::exchange`], never from the guest's
    /// authority as written (which may carry userinfo).
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_result: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Exchange, Error>> + Send> {
        let outbound = self.clone();
        Box::new(async move { outbound.send(request, options).await })
    }
}

/// Where a request goes, as the policy sees it.
#[derive(Debug, PartialEq)]
struct Target {
    tls: bool,
    /// Lower-case; an IPv6 literal without its brackets.
    host: String,
    port: u16,
}

impl Target {
    /// The target of `uri`, with one spelling per destination (the policy's scope must not have
    /// two): IP literals in standard form, no trailing dot, no userinfo, no numeric names that a
    /// resolver would read as an address (`2130706433`, `0x7f.1`).
    fn of(uri: &http::Uri) -> Result<Target, Error> {
        let tls = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            Some(scheme) if *scheme == Scheme::HTTP => false,
            _ => return Err(Error::HttpProtocolError),
        };
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        if authority.as_str().contains('@') {
            return Err(Error::HttpRequestUriInvalid);
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let last = host.rsplit('.').next().unwrap_or_default();
                let numeric = last.chars().all(|c| c.is_ascii_digit()) || last.starts_with("0x");
                if host.is_empty() || numeric {
                    return Err(Error::HttpRequestUriInvalid);
                }
                host
            }
        };
        let port = uri.port_u16().unwrap_or(Target::default_port(tls));
        Ok(Target { tls, host, port })
    }

    /// The scheme's port when the URL names none.
    fn default_port(tls: bool) -> u16 {
        if tls { 443 } else { 80 }
    }

    /// The host as a URL writes it: an IPv6 literal in brackets.
    fn url_host(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        }
    }

    /// The `Host` header: the host, and the port when it is not the scheme's.
    fn host_header(&self) -> String {
        if self.port == Target::default_port(self.tls) {
            self.url_host()
        } else {
            format!("{}:{}", self.url_host(), self.port)
        }
    }

    /// `scheme://host:port`, always with the port: the scope the policy decides on.
    fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.url_host(), self.port)
    }
}

/// A stream to the destination, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

static TLS: LazyLock<tokio_rustls::TlsConnector> = LazyLock::new(|| {
    let roots = tokio_rustls::rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
});

impl Outbound {
    async fn send(self, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Result<Exchange, Error> {
        let target = Target::of(request.uri())?;
        let origin = target.origin();
        let span = tracing::info_span!(
            "outbound_http",
            chat_id = %self.identity.chat_id,
            plugin = %self.identity.plugin,
            tool = %self.identity.tool,
            origin = %origin
        );
        self.exchange(request, options, target, span.clone()).instrument(span).await
    }

    async fn exchange(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        target: Target,
        span: tracing::Span,
    ) -> Result<Exchange, Error> {
        let origin = target.origin();
        if let Err(why) = self.grants.check_extra_scoped(Http::NAME, &origin) {
            tracing::info!(reason = %why, "outbound request refused");
            return Err(Error::HttpRequestDenied);
        }
        let masks = match self.masks().await {
            Ok(masks) => masks,
            Err(why) => {
                tracing::error!(error = %why, "outbound request refused: the secrets to mask responses of cannot be read");
                return Err(Error::InternalError(Some("the server cannot read its secrets; try again".into())));
            }
        };
        let secrets = self.secrets.all();
        let host = http::HeaderValue::from_str(&target.host_header()).map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(http::header::HOST, host);
        if !masks.is_empty() {
            // Masking reads the bytes as sent: a compressed body would carry a value past it.
            request.headers_mut().insert(http::header::ACCEPT_ENCODING, http::HeaderValue::from_static("identity"));
        }
        if let Err(secret) = substitute_secrets(request.headers_mut(), &secrets, &target) {
            let reason = format!("the secret `{secret}` is not bound to {}", target.host);
            tracing::warn!(secret = %secret, "outbound request refused: {reason}");
            self.grants.record_refusal(super::secrets::Secrets::NAME, Some(&format!("{secret} to {origin}")), &reason);
            return Err(Error::HttpRequestDenied);
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let reason = format!("more than {} requests in flight in one call (http_max_concurrent)", self.max_in_flight);
            tracing::warn!("outbound request refused: {reason}");
            self.grants.record_refusal(Http::NAME, Some(&origin), &reason);
            return Err(Error::ConnectionLimitReached);
        };
        // The guest may ask for shorter timeouts, never for longer ones.
        let timeout = [options.and_then(|o| o.connect_timeout), options.and_then(|o| o.first_byte_timeout)]
            .into_iter()
            .flatten()
            .fold(self.timeout, Duration::min);
        let deadline = Instant::now() + self.timeout;
        let connect_by = Instant::now() + timeout;
        let address = tokio::time::timeout_at(connect_by, self.destination(&target)).await.map_err(|_| Error::DnsTimeout)??;
        let tcp = tokio::time::timeout_at(connect_by, TcpStream::connect(address))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?;
        let stream: Box<dyn Connection> = if target.tls {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let tls = tokio::time::timeout_at(connect_by, TLS.connect(name, tcp))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = tokio::time::timeout_at(connect_by, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        // On the wire, the request line carries the path only; the origin went into `Host`.
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

        let mut connection = Some(Box::pin(tokio::time::timeout_at(deadline, connection)));
        let mut exchange = Box::pin(tokio::time::timeout_at(deadline, sender.send_request(request)));
        let answered = |outcome: Result<Result<_, hyper::Error>, _>| match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_elapsed) => Err(Error::HttpResponseTimeout),
        };
        // The connection is driven while the response is awaited; it may end first (the
        // server closed it after answering), and then the response is ready.
        let response: http::Response<hyper::body::Incoming> = std::future::poll_fn(|cx| {
            if let Poll::Ready(outcome) = exchange.as_mut().poll(cx) {
                return Poll::Ready(answered(outcome));
            }
            if let Some(driving) = connection.as_mut()
                && let Poll::Ready(ended) = driving.as_mut().poll(cx)
            {
                connection = None;
                return match ended {
                    Ok(Ok(())) => exchange.as_mut().poll(cx).map(answered),
                    Ok(Err(e)) => Poll::Ready(Err(Error::from(e))),
                    Err(_elapsed) => Poll::Ready(Err(Error::HttpResponseTimeout)),
                };
            }
            Poll::Pending
        })
        .await?;
        let (mut head, incoming) = response.into_parts();
        let encoding = head.headers.get(http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::to_string);
        if !masks.is_empty() && encoding.as_deref().is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
            let reason = "the response is compressed although it was asked for uncompressed, so secrets could not be masked";
            tracing::warn!("outbound response refused: {reason}");
            self.grants.record_refusal(Http::NAME, Some(&origin), reason);
            return Err(Error::HttpResponseContentCoding(encoding));
        }
        // A body announced as too large is refused before any of it is read.
        let announced = head.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|length| length > self.max_response_bytes) {
            let reason = format!("the response was larger than {} bytes (http_max_response_kib)", self.max_response_bytes);
            tracing::warn!("outbound response refused: {reason}");
            self.grants.record_refusal(Http::NAME, Some(&origin), &reason);
            return Err(Error::HttpResponseBodySize(announced));
        }
        mask_headers(&mut head.headers, &masks);
        let limited = Limited {
            inner: incoming,
            read: 0,
            max: self.max_response_bytes,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            masker: Masker::new(masks),
            refusals: Refusals { grants: self.grants.clone(), origin, span: span.clone() },
            _permit: permit,
        };
        let response = http::Response::from_parts(head, limited.boxed_unsync());
        let drive: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
            match connection {
                Some(driving) => match driving.await {
                    Ok(ended) => ended.map_err(Error::from),
                    Err(_elapsed) => Err(Error::HttpResponseTimeout),
                },
                None => Ok(()),
            }
        });
        Ok((response, drive))
    }

    /// What responses are masked of: every secret's value, replaced by the placeholder this
    /// call was given for it or else by a stand-in naming it; longest values first, so a value
    /// that contains another is masked whole.
    async fn masks(&self) -> Result<Vec<Mask>, String> {
        let every = match &self.source {
            Some(source) => {
                let loaded = self.every_secret.get_or_try_init(|| source.values()).await;
                loaded.map_err(|e| e.to_string())?.clone()
            }
            None => Vec::new(),
        };
        let issued = self.secrets.all();
        let mut masks: Vec<Mask> = every
            .into_iter()
            .map(|(name, value)| {
                let with = issued
                    .iter()
                    .find(|i| i.name == name)
                    .map_or_else(|| format!("toolhost-secret-{name}-masked"), |i| i.placeholder.clone());
                Mask { value, with }
            })
            .chain(issued.iter().map(|i| Mask { value: i.value.clone(), with: i.placeholder.clone() }))
            .filter(|m| !m.value.is_empty())
            .collect();
        masks.sort_by(|a, b| b.value.len().cmp(&a.value.len()).then_with(|| a.value.cmp(&b.value)));
        masks.dedup_by(|a, b| a.value == b.value);
        Ok(masks)
    }

    /// The address to connect to: the public one, or a private one the policy grants by its
    /// exact `ip:port`.
    async fn destination(&self, target: &Target) -> Result<SocketAddr, Error> {
        let mut candidates: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => resolve(&target.host, target.port).await?,
        };
        // Public addresses first, then IPv4 (what most local services listen on).
        candidates.sort_by_key(|a| (!crate::net::is_public(a.ip()), a.is_ipv6()));
        candidates.dedup();
        let mut refused = None;
        for address in candidates {
            if crate::net::is_public(address.ip()) {
                return Ok(address);
            }
            match self.grants.check_extra_scoped(PRIVATE_ADDRESS, &address.to_string()) {
                Ok(()) => return Ok(address),
                Err(why) => refused = Some(why),
            }
        }
        match refused {
            Some(why) => {
                tracing::info!(reason = %why, "outbound request refused: the name leads to an address that is not public");
                Err(Error::DestinationIpProhibited)
            }
            None => Err(Error::DestinationNotFound),
        }
    }
}

/// Name lookups of every call at once. A lookup runs on a blocking thread that a timeout
/// cannot stop; its permit is held by that thread, so names whose servers never answer fill
/// these, not the runtime's blocking pool that file and database work shares.
const MAX_LOOKUPS: usize = 16;
static LOOKUPS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_LOOKUPS)));

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let Ok(permit) = LOOKUPS.clone().try_acquire_owned() else {
        tracing::warn!("outbound request refused: {MAX_LOOKUPS} name lookups are already running");
        return Err(Error::DnsTimeout);
    };
    let name = host.to_string();
    let lookup = tokio::task::spawn_blocking(move || {
        let _held = permit;
        std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port)).map(Iterator::collect::<Vec<_>>)
    });
    match lookup.await {
        Ok(Ok(addresses)) => Ok(addresses),
        Ok(Err(e)) => Err(Error::DnsError { rcode: Some(e.to_string()), info_code: None }),
        Err(_) => Err(Error::DnsError { rcode: Some("the lookup failed".into()), info_code: None }),
    }
}

/// A secret's value, and what a response shows in its place.
#[derive(Clone)]
struct Mask {
    value: String,
    with: String,
}

/// Puts each secret's value in place of its placeholder in the request's headers; `Err` names
/// a secret whose placeholder is there but which is not bound to the destination.
fn substitute_secrets(headers: &mut http::HeaderMap, secrets: &[Issued], target: &Target) -> Result<(), String> {
    for value in headers.values_mut() {
        let mut bytes = value.as_bytes().to_vec();
        let mut changed = false;
        for secret in secrets {
            if !contains(&bytes, secret.placeholder.as_bytes()) {
                continue;
            }
            if !binds(&secret.hosts, target.tls, &target.host, target.port) {
                return Err(secret.name.clone());
            }
            bytes = replace(&bytes, secret.placeholder.as_bytes(), secret.value.as_bytes());
            changed = true;
        }
        if changed {
            let mut substituted = http::HeaderValue::from_bytes(&bytes).map_err(|_| "a secret's value".to_string())?;
            substituted.set_sensitive(true);
            *value = substituted;
        }
    }
    Ok(())
}

/// Replaces each secret's value in the response's headers. Masking may change the body's
/// length, so while there are secrets, bodies come with their length unannounced.
fn mask_headers(headers: &mut http::HeaderMap, masks: &[Mask]) {
    if masks.is_empty() {
        return;
    }
    headers.remove(http::header::CONTENT_LENGTH);
    for value in headers.values_mut() {
        let mut bytes = value.as_bytes().to_vec();
        for mask in masks {
            bytes = replace(&bytes, mask.value.as_bytes(), mask.with.as_bytes());
        }
        if bytes != value.as_bytes() {
            // A mask is printable ASCII, so the masked value is a valid header value.
            *value = http::HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| http::HeaderValue::from_static("masked"));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Replaces secrets' values by their placeholders in a body that arrives in pieces: the last
/// bytes of each piece that could begin a value are held back until the next one.
struct Masker {
    secrets: Vec<Mask>,
    held: Vec<u8>,
    /// The longest value, less one: what may be held back.
    hold: usize,
}

impl Masker {
    fn new(secrets: Vec<Mask>) -> Masker {
        let secrets: Vec<Mask> = secrets.into_iter().filter(|s| !s.value.is_empty()).collect();
        let hold = secrets.iter().map(|s| s.value.len()).max().unwrap_or(1) - 1;
        Masker { secrets, held: Vec::new(), hold }
    }

    /// The masked bytes that can be passed on after `piece`.
    fn push(&mut self, piece: &[u8]) -> Bytes {
        if self.secrets.is_empty() {
            return Bytes::copy_from_slice(piece);
        }
        self.held.extend_from_slice(piece);
        let mut masked = std::mem::take(&mut self.held);
        for secret in &self.secrets {
            masked = replace(&masked, secret.value.as_bytes(), secret.with.as_bytes());
        }
        let keep = self.hold.min(masked.len());
        self.held = masked.split_off(masked.len() - keep);
        Bytes::from(masked)
    }

    /// What is still held back, at the end of the body.
    fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.held)))
    }
}

/// Where a body's limit refusals are recorded.
struct Refusals {
    grants: Grants,
    origin: String,
    span: tracing::Span,
}

impl Refusals {
    fn record(&self, reason: &str) {
        self.span.in_scope(|| tracing::warn!("outbound response stopped: {reason}"));
        self.grants.record_refusal(Http::NAME, Some(&self.origin), reason);
    }
}

/// A response body that ends with an error past the size limit or the request's deadline,
/// masks secrets' values, and holds the call's in-flight permit until it is read to the end
/// or dropped.
struct Limited {
    inner: hyper::body::Incoming,
    read: u64,
    max: u64,
    deadline: Pin<Box<Sleep>>,
    masker: Masker,
    refusals: Refusals,
    _permit: OwnedSemaphorePermit,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            if self.deadline.as_mut().poll(cx).is_ready() {
                self.refusals.record("the request took longer than its time limit (http_timeout_ms)");
                return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Error::from(e)))),
                Poll::Ready(None) => return Poll::Ready(self.masker.finish().map(|rest| Ok(Frame::data(rest)))),
                Poll::Pending => return Poll::Pending,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers pass as they are, unless there are secrets to keep out of them.
                Err(frame) if self.masker.secrets.is_empty() => return Poll::Ready(Some(Ok(frame))),
                Err(_trailers) => continue,
            };
            self.read += data.len() as u64;
            if self.read > self.max {
                let max = self.max;
                self.refusals.record(&format!("the response was larger than {max} bytes (http_max_response_kib)"));
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(max)))));
            }
            let masked = self.masker.push(&data);
            if !masked.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(masked))));
            }
            // Everything was held back: read on.
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.masker.held.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Masking changes lengths.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Result<Target, Error> {
        Target::of(&uri.parse::<http::Uri>().unwrap())
    }

    #[test]
    fn the_origin_always_names_scheme_host_and_port() {
        assert_eq!(target("https://API.Example.com/v1?q=1").unwrap().origin(), "https://api.example.com:443");
        assert_eq!(target("http://example.com/").unwrap().origin(), "http://example.com:80");
        assert_eq!(target("http://127.0.0.1:8080/x").unwrap().origin(), "http://127.0.0.1:8080");
        assert_eq!(target("http://[::1]:9/").unwrap().origin(), "http://[::1]:9");
    }

    #[test]
    fn one_destination_has_one_spelling() {
        assert_eq!(target("http://[0:0::1]:9/").unwrap().origin(), "http://[::1]:9");
        assert_eq!(target("https://example.com./").unwrap().origin(), "https://example.com:443");
        assert_eq!(target("http://127.000.000.001/").ok().map(|t| t.origin()), None, "not a standard literal");
        for refused in ["http://2130706433/", "http://0x7f000001/", "http://127.1/", "https://user:pw@example.com/"] {
            assert!(matches!(target(refused), Err(Error::HttpRequestUriInvalid)), "{refused}");
        }
    }

    #[test]
    fn the_host_header_names_the_checked_target() {
        assert_eq!(target("https://api.example.com/x").unwrap().host_header(), "api.example.com");
        assert_eq!(target("http://localhost:8080/").unwrap().host_header(), "localhost:8080");
        assert_eq!(target("http://[::1]:9/").unwrap().host_header(), "[::1]:9");
    }

    fn issued(value: &str) -> Issued {
        Issued {
            name: "key".into(),
            placeholder: "toolhost-secret-key-0123".into(),
            value: value.into(),
            hosts: vec!["api.example.com".into()],
        }
    }

    #[test]
    fn a_secret_is_masked_even_when_split_across_pieces() {
        let mask = Mask { value: "s3cr3t".into(), with: "toolhost-secret-key-0123".into() };
        let mut masker = Masker::new(vec![mask]);
        let mut out = Vec::new();
        for piece in ["the key is s3", "cr", "3t, again: s3cr3t", " and s3cr"] {
            out.extend_from_slice(&masker.push(piece.as_bytes()));
        }
        out.extend_from_slice(&masker.finish().unwrap_or_default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "the key is toolhost-secret-key-0123, again: toolhost-secret-key-0123 and s3cr"
        );
    }

    #[test]
    fn placeholders_become_values_only_for_bound_hosts() {
        let secrets = vec![issued("s3cr3t")];
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer toolhost-secret-key-0123".parse().unwrap());
        let mut elsewhere = headers.clone();
        let mut in_the_clear = headers.clone();
        substitute_secrets(&mut headers, &secrets, &target("https://api.example.com/").unwrap()).unwrap();
        assert_eq!(
            substitute_secrets(&mut in_the_clear, &secrets, &target("http://api.example.com/").unwrap()),
            Err("key".to_string()),
            "not over plain HTTP"
        );
        assert_eq!(headers["authorization"], "Bearer s3cr3t");
        assert_eq!(
            substitute_secrets(&mut elsewhere, &secrets, &target("https://evil.example/").unwrap()),
            Err("key".to_string())
        );
    }

    #[test]
    fn only_http_and_https_are_sent() {
        assert!(matches!(target("ftp://example.com/"), Err(Error::HttpProtocolError)));
    }
}
