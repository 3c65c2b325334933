//! What both wire formats share: sending the request, reading HTTP errors, and turning the
//! server-sent events of the answer into [`StreamEvent`]s through a format's [`WireParser`].

use std::collections::VecDeque;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::errors::retry_after;
use super::{ErrorKind, LlmError, ModelTimeouts, StreamEvent};

/// One wire format's reading of server-sent events.
pub trait WireParser: Send + 'static {
    /// Appends the events one SSE event carries to `out`; returns true when the answer is
    /// complete and anything after it is to be ignored.
    fn feed(&mut self, event: &Event, out: &mut Vec<StreamEvent>) -> Result<bool, LlmError>;
}

/// The HTTP client of a provider. [`request_stream`] keeps the timeouts; the client's read
/// timeout is only a backstop, well past them so that it never decides first.
pub fn http_client(timeouts: ModelTimeouts) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(timeouts.first_byte.max(timeouts.silence) + Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Sends the request; an HTTP error becomes a classified [`LlmError`].
async fn send(provider: &str, http: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
    let response = http.send().await.map_err(|e| {
        let what = if e.is_timeout() { "did not answer in time" } else { "could not be reached" };
        LlmError::new(ErrorKind::Connection, format!("provider `{provider}` {what}: {e}"))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let wait = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    Err(LlmError::from_status(provider, status.as_u16(), &body, wait))
}

/// The request's answer as a stream of events. A provider that sends no byte of its answer
/// within `timeouts.first_byte` of the request fails with [`ErrorKind::Timeout`]; one that then
/// stays silent for `timeouts.silence` breaks off ([`ErrorKind::Dropped`]).
pub fn request_stream<P: WireParser>(
    provider: String,
    http: reqwest::RequestBuilder,
    parser: P,
    timeouts: ModelTimeouts,
) -> BoxStream<'static, Result<StreamEvent, LlmError>> {
    let ModelTimeouts { first_byte, silence } = timeouts;
    futures::stream::once(async move {
        let started = async {
            let response = send(&provider, http).await?;
            let mut bytes = response.bytes_stream().map(|chunk| chunk.map_err(|e| e.to_string()));
            let first = bytes.next().await;
            Ok::<_, LlmError>(futures::stream::iter(first).chain(until_silent(bytes, silence)))
        };
        match tokio::time::timeout(first_byte, started).await {
            Ok(Ok(bytes)) => parse(provider, bytes.boxed(), parser).boxed(),
            Ok(Err(error)) => futures::stream::iter([Err(error)]).boxed(),
            Err(_) => {
                let message = format!(
                    "provider `{provider}` sent nothing within {} s of the request (raise TOOLHOST_MODEL_FIRST_BYTE_TIMEOUT_SECS for a model that takes longer to begin)",
                    first_byte.as_secs_f64()
                );
                futures::stream::iter([Err(LlmError::new(ErrorKind::Timeout, message))]).boxed()
            }
        }
    })
    .flatten()
    .boxed()
}

/// `bytes`, ending in an error once nothing arrives for `silence`.
fn until_silent<S>(bytes: S, silence: Duration) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static,
{
    futures::stream::unfold(Some(bytes), move |bytes| async move {
        let mut bytes = bytes?;
        match tokio::time::timeout(silence, bytes.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(bytes))),
            Ok(None) => None,
            Err(_) => Some((
                Err(format!("nothing arrived for {} s (TOOLHOST_MODEL_TIMEOUT_SECS)", silence.as_secs_f64())),
                None,
            )),
        }
    })
}

struct Reader<S, P> {
    provider: String,
    events: S,
    parser: P,
    queue: VecDeque<Result<StreamEvent, LlmError>>,
    finished: bool,
    over: bool,
}

impl<S, P> Reader<S, P> {
    fn end(&mut self, error: Option<LlmError>) {
        self.over = true;
        if let Some(error) = error {
            self.queue.push_back(Err(error));
        } else if !self.finished {
            let message = format!("the answer of provider `{}` ended before the model finished", self.provider);
            self.queue.push_back(Err(LlmError::new(ErrorKind::Dropped, message)));
        }
    }
}

/// Reads an answer's bytes. A stream that stops before the model's finish yields an
/// [`ErrorKind::Dropped`] error; an error ends the stream.
pub fn parse<S, E, P>(
    provider: String,
    bytes: S,
    parser: P,
) -> impl Stream<Item = Result<StreamEvent, LlmError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Display + Send + 'static,
    P: WireParser,
{
    let reader =
        Reader { provider, events: bytes.eventsource(), parser, queue: VecDeque::new(), finished: false, over: false };
    futures::stream::unfold(reader, |mut reader| async move {
        loop {
            if let Some(item) = reader.queue.pop_front() {
                return Some((item, reader));
            }
            if reader.over {
                return None;
            }
            match reader.events.next().await {
                Some(Ok(event)) => {
                    let mut out = Vec::new();
                    let fed = reader.parser.feed(&event, &mut out);
                    reader.finished |= out.iter().any(|e| matches!(e, StreamEvent::Finish(_)));
                    reader.queue.extend(out.into_iter().map(Ok));
                    match fed {
                        Ok(false) => {}
                        Ok(true) => reader.end(None),
                        Err(error) => reader.end(Some(error)),
                    }
                }
                Some(Err(error)) => {
                    let message = format!("the answer of provider `{}` broke off: {error}", reader.provider);
                    reader.end(Some(LlmError::new(ErrorKind::Dropped, message)));
                }
                None => reader.end(None),
            }
        }
    })
}

/// Parses an SSE payload as JSON; a payload that is not becomes a protocol error.
pub fn payload<'a, T: serde::Deserialize<'a>>(provider: &str, data: &'a str) -> Result<T, LlmError> {
    serde_json::from_str(data).map_err(|e| {
        let sample: String = data.chars().take(200).collect();
        LlmError::new(ErrorKind::Protocol, format!("provider `{provider}` sent an unreadable event ({e}): {sample}"))
    })
}
