//! Live streams: a chat's events (`GET /api/v1/chats/{id}/stream?after=SEQ`) and the caller's
//! chat changes (`GET /api/v1/chats/watch`), each as Server-Sent Events or as a WebSocket
//! (when the request asks to upgrade).
//!
//! A chat stream starts with a snapshot (status, messages after the cursor, the in-flight
//! step's parts after the cursor, the queue), then live events. Each event's sequence number is
//! its SSE `id`, so a client (or a browser's EventSource, through `Last-Event-ID`) that
//! reconnects gets every later event exactly once. Snapshot state events (status, queue) carry
//! no id: they describe state rather than advance the cursor.
//!
//! When the server shuts down, every stream gets the events already published, then a final
//! `shutdown` event saying where to resume, and is closed.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::chats::owned;
use super::{ApiError, AppState};
use crate::chat::events::{ChatEvent, EventBody, Published};

const PING_INTERVAL: Duration = Duration::from_secs(15);

/// The last event of a stream whose server is shutting down.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct ShutdownNotice {
    /// Always `shutdown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
    /// The `after` to reconnect with (chat streams; watch streams have no replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<i64>,
}

/// One event on the wire: its id (when it advances the cursor), and the event serialized once.
pub(super) struct Outgoing {
    id: Option<i64>,
    event: Arc<Published>,
}

impl Outgoing {
    /// A numbered event, or (`with_id` false) one that only describes state.
    fn of(event: &ChatEvent, with_id: bool) -> Outgoing {
        if with_id {
            Outgoing { id: Some(event.seq), event: Published::new(event) }
        } else {
            Outgoing { id: None, event: Published::state(event) }
        }
    }

    /// A published event: with its number as the id, unless it only describes state.
    fn shared(event: Arc<Published>) -> Outgoing {
        Outgoing { id: event.advances.then_some(event.seq), event }
    }

    fn raw(kind: &str, json: String) -> Outgoing {
        Outgoing { id: None, event: Arc::new(Published { seq: 0, kind: kind.to_string(), json, advances: false }) }
    }

    fn error(message: String) -> Outgoing {
        Outgoing::raw("error", serde_json::json!({"type": "error", "message": message}).to_string())
    }

    fn shutdown(resume_after: Option<i64>) -> Outgoing {
        let message = match resume_after {
            Some(after) => format!(
                "the server is shutting down; reconnect with after={after} (to another replica, or to this server once it is back): a turn under way goes on there"
            ),
            None => "the server is shutting down; reconnect and reload the chat list".to_string(),
        };
        let notice = ShutdownNotice { kind: "shutdown", message, resume_after };
        Outgoing::raw("shutdown", serde_json::to_string(&notice).unwrap_or_default())
    }

    /// Appends the SSE frame. The JSON is compact, so it never holds a newline.
    fn encode_sse(&self, buffer: &mut Vec<u8>) {
        use std::io::Write;
        if let Some(id) = self.id {
            let _ = writeln!(buffer, "id: {id}");
        }
        let _ = write!(buffer, "event: {}\ndata: {}\n\n", self.event.kind, self.event.json);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    after: Option<i64>,
}

pub async fn stream(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let chat = owned(&state, &user.id, &id).await?;
    let last_event_id =
        request.headers().get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = last_event_id.or(query.after).unwrap_or(0).max(0);
    if let Some(relay) = &state.relay {
        // A chat another replica runs: its live parts are relayed into this replica's channel.
        relay.follow(&chat.id).await;
    }
    let events = chat_events(&state, &chat.id, after, Snapshot::Unmarked).await?;
    let events = until_shutdown(events, state.lifecycle.closing.clone(), Some(after));
    respond(&state, request, events).await
}

/// Whether a stream says where its snapshot ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Snapshot {
    Unmarked,
    /// A `relay_ready` event follows it: the replica relaying the stream then knows that its
    /// channel holds the in-flight step.
    Marked,
}

/// The snapshot, then live events, exactly once from `after`.
pub(super) async fn chat_events(
    state: &AppState,
    chat_id: &str,
    after: i64,
    marking: Snapshot,
) -> Result<BoxStream<'static, Outgoing>, ApiError> {
    let store = &state.chats.store;
    // Only the subscription and the parts in flight are taken under the channel lock (memory,
    // no database): the live turn's events wait for nothing else. The history read after it may
    // then hold messages published since; those arrive live too and are skipped by seq below.
    let (in_flight, live) = {
        let channel = state.chats.hub.channel(chat_id);
        let guard = channel.lock().await;
        (guard.in_flight_after(after), BroadcastStream::new(guard.subscribe()))
    };
    let chat = store.chat(chat_id).await?.ok_or_else(|| ApiError::not_found(format!("no chat `{chat_id}`")))?;
    let mut snapshot = vec![Outgoing::of(
        &ChatEvent { seq: after, body: EventBody::Status { status: chat.status, last_error: chat.last_error.clone() } },
        false,
    )];
    let mut cursor = after;
    for message in store.messages(chat_id, after).await? {
        cursor = cursor.max(message.seq);
        snapshot.push(Outgoing::of(
            &ChatEvent { seq: message.seq, body: EventBody::Message { message: message.public() } },
            true,
        ));
    }
    // A part numbered before a stored message belongs to a step that message completed (a
    // message is numbered past every part streamed before it): the message replaces it.
    let stored_through = cursor;
    for part in in_flight.into_iter().filter(|part| part.seq > stored_through) {
        cursor = cursor.max(part.seq);
        snapshot.push(Outgoing::shared(part));
    }
    let queued = store.queued_messages(chat_id).await?;
    if !queued.is_empty() {
        snapshot.push(Outgoing::of(
            &ChatEvent { seq: after, body: EventBody::QueueUpdate { queued_messages: queued } },
            false,
        ));
    }
    // Calls waiting for the person's answer, however long ago they asked.
    let waiting = store.approvals_of_chat(chat_id, None).await?;
    if !waiting.is_empty() {
        snapshot.push(Outgoing::of(
            &ChatEvent { seq: after, body: EventBody::ApprovalRequest { approvals: waiting } },
            false,
        ));
    }
    if marking == Snapshot::Marked {
        snapshot.push(Outgoing::raw("relay_ready", serde_json::json!({"type": "relay_ready"}).to_string()));
    }

    let metrics = state.metrics.clone();
    let live = live.scan((cursor, false), move |(cursor, ended), received| {
        if *ended {
            return std::future::ready(None);
        }
        let out = match received {
            // State (another replica's status or queue, as read here) moves no cursor.
            Ok(event) if !event.advances => Some(Outgoing::shared(event)),
            // Live events already in the snapshot are skipped: exactly once.
            Ok(event) if event.seq > *cursor => {
                *cursor = event.seq;
                Some(Outgoing::shared(event))
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                metrics.events_dropped.inc_by(missed);
                // A slow subscriber never holds up the turn: it is told where to resume.
                *ended = true;
                Some(Outgoing::error(format!("this subscriber fell behind; reconnect with after={cursor}")))
            }
        };
        std::future::ready(Some(out))
    });
    Ok(futures::stream::iter(snapshot).chain(live.filter_map(std::future::ready)).boxed())
}

/// `GET /api/v1/chats/watch`: created, status_change, title_change, archived and unarchived
/// events of the caller's chats, live (no replay).
pub async fn watch(
    State(state): State<AppState>,
    Caller(user): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let owner = user.id.clone();
    let metrics = state.metrics.clone();
    let events = BroadcastStream::new(state.chats.hub.watch())
        .scan(false, move |ended, received| {
            if *ended {
                return std::future::ready(None);
            }
            let out = match received {
                Ok(event) if event.chat().owner_id == owner => {
                    let value = serde_json::to_value(&event).unwrap_or_default();
                    Some(Outgoing::raw(value["type"].as_str().unwrap_or_default(), value.to_string()))
                }
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    metrics.events_dropped.inc_by(missed);
                    *ended = true;
                    Some(Outgoing::error("this subscriber fell behind; reconnect and reload the chat list".into()))
                }
            };
            std::future::ready(Some(out))
        })
        .filter_map(std::future::ready)
        .boxed();
    let events = until_shutdown(events, state.lifecycle.closing.clone(), None);
    respond(&state, request, events).await
}

/// Ends `events` when the server shuts down: what was published before is still sent, then a
/// `shutdown` event. `resume_from` (chat streams) is the cursor the stream started at; the
/// notice says to resume after the last event sent.
pub(super) fn until_shutdown(
    events: BoxStream<'static, Outgoing>,
    closing: CancellationToken,
    resume_from: Option<i64>,
) -> BoxStream<'static, Outgoing> {
    futures::stream::unfold(Some((events, resume_from)), move |state| {
        let closing = closing.clone();
        async move {
            let (mut events, mut cursor) = state?;
            let next = tokio::select! {
                biased;
                next = events.next() => next,
                _ = closing.cancelled() => match events.next().now_or_never() {
                    Some(next) => next,
                    None => return Some((Outgoing::shutdown(cursor), None)),
                },
            };
            // Once the API server has stopped, the chat channels go with it and the live
            // events end: that is the shutdown too.
            let Some(out) = next else {
                return closing.is_cancelled().then(|| (Outgoing::shutdown(cursor), None));
            };
            if let (Some(id), Some(cursor)) = (out.id, cursor.as_mut()) {
                *cursor = (*cursor).max(id);
            }
            Some((out, Some((events, cursor))))
        }
    })
    .boxed()
}

/// Serves `events` as a WebSocket when the request asks to upgrade, otherwise as SSE.
pub(super) async fn respond(
    state: &AppState,
    request: Request,
    events: BoxStream<'static, Outgoing>,
) -> Result<Response, ApiError> {
    let wants_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        let (mut parts, _) = request.into_parts();
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let open = state.lifecycle.websockets.token();
        return Ok(upgrade
            .on_upgrade(move |socket| async move {
                send_over_websocket(socket, events).await;
                drop(open);
            })
            .into_response());
    }
    Ok(sse(events))
}

/// SSE written by hand so that events already waiting go out in one write: with a thousand
/// subscribers, a write per event per subscriber is what costs.
fn sse(events: BoxStream<'static, Outgoing>) -> Response {
    let batches = events.ready_chunks(256);
    let body = futures::stream::unfold(batches, |mut batches| async move {
        tokio::select! {
            batch = batches.next() => batch.map(|batch| {
                let mut buffer = Vec::with_capacity(batch.len() * 128);
                for out in &batch {
                    out.encode_sse(&mut buffer);
                }
                (Ok::<_, Infallible>(Bytes::from(buffer)), batches)
            }),
            // A comment line keeps proxies from closing an idle stream.
            _ = tokio::time::sleep(PING_INTERVAL) => Some((Ok(Bytes::from_static(b": ping\n\n")), batches)),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Each event is a text frame of its JSON (which carries `seq`); pings keep proxies open.
async fn send_over_websocket(mut socket: WebSocket, mut events: BoxStream<'static, Outgoing>) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            next = events.next() => match next {
                Some(out) => {
                    if socket.send(WsMessage::Text(out.event.json.clone().into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = socket.send(WsMessage::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
