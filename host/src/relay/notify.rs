//! Notices between replicas on PostgreSQL's LISTEN/NOTIFY.
//!
//! Sending: notices are queued without waiting, then sent in batches (an envelope per NOTIFY,
//! well under PostgreSQL's 8,000-byte payload limit) on a connection of their own, each NOTIFY
//! in its own short transaction: never inside a step's transaction, whose commit would then
//! take the database-wide notify lock while holding the chat's row. A failed send is retried on
//! a new connection; nothing queued is dropped.
//!
//! Listening: one connection LISTENs. When it is lost (`pg_terminate_backend`, a restart of
//! PostgreSQL), a new one is made, and the replica then catches up from the tables, since
//! whatever was announced meanwhile never arrives.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Relay;
use crate::chat::notices::{Announcer, Notice};

/// The NOTIFY channel every replica of a database listens on.
const CHANNEL: &str = "toolhost";
/// Largest envelope sent in one NOTIFY (PostgreSQL refuses payloads of 8,000 bytes and more).
const MAX_PAYLOAD: usize = 7000;
/// How long to wait before trying a lost connection again.
const RETRY: Duration = Duration::from_millis(500);

/// What one NOTIFY carries: who sent it, and its notices in the order they were announced.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "o")]
    origin: String,
    #[serde(rename = "n")]
    notices: Vec<Notice>,
}

enum Outgoing {
    Notice(Notice),
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// The queue of notices to send. Cloned into the event hub, which announces through it.
#[derive(Clone)]
pub(super) struct Outbox {
    queue: mpsc::UnboundedSender<Outgoing>,
}

/// What the sender task takes from an [`Outbox`].
pub(super) struct Outgoings {
    origin: String,
    queue: mpsc::UnboundedReceiver<Outgoing>,
}

impl Outbox {
    pub(super) fn new(origin: &str) -> (Outbox, Outgoings) {
        let (queue, receiver) = mpsc::unbounded_channel();
        (Outbox { queue }, Outgoings { origin: origin.to_string(), queue: receiver })
    }

    /// Waits until every notice queued so far was sent.
    pub(super) async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.queue.send(Outgoing::Flush(done)).is_ok() {
            let _ = sent.await;
        }
    }
}

impl Announcer for Outbox {
    fn announce(&self, notice: Notice) {
        // Only fails once the sender task is gone, at the very end of a shutdown.
        let _ = self.queue.send(Outgoing::Notice(notice));
    }
}

/// Packs notices into envelopes of at most [`MAX_PAYLOAD`] bytes, in order. Repeated `pending`
/// notices say nothing more than one.
fn envelopes(origin: &str, notices: Vec<Notice>) -> Vec<String> {
    let mut packed = Vec::new();
    let mut current: Vec<Notice> = Vec::new();
    let mut size = 0;
    let mut pending_sent = false;
    for notice in notices {
        if notice == Notice::Pending {
            if pending_sent {
                continue;
            }
            pending_sent = true;
        }
        let length = serde_json::to_string(&notice).map(|t| t.len() + 1).unwrap_or_default();
        if !current.is_empty() && size + length > MAX_PAYLOAD - origin.len() - 32 {
            packed.push(std::mem::take(&mut current));
            size = 0;
        }
        size += length;
        current.push(notice);
    }
    if !current.is_empty() {
        packed.push(current);
    }
    packed
        .into_iter()
        .filter_map(|notices| serde_json::to_string(&Envelope { origin: origin.to_string(), notices }).ok())
        .collect()
}

async fn connect(url: &str, application_name: &str) -> Result<PgConnection, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name(application_name);
    PgConnection::connect_with(&options).await
}

/// Sends queued notices until every [`Outbox`] is dropped.
pub(super) async fn send_notices(url: String, mut outgoing: Outgoings) {
    let mut connection: Option<PgConnection> = None;
    loop {
        let Some(first) = outgoing.queue.recv().await else { return };
        // Whatever else is queued goes in the same batch: under load, a NOTIFY per many events.
        let mut batch = vec![first];
        while let Ok(next) = outgoing.queue.try_recv() {
            batch.push(next);
        }
        let mut notices = Vec::new();
        let mut flushes = Vec::new();
        for item in batch {
            match item {
                Outgoing::Notice(notice) => notices.push(notice),
                Outgoing::Flush(done) => flushes.push(done),
            }
        }
        for payload in envelopes(&outgoing.origin, notices) {
            send_until_sent(&url, &mut connection, &payload).await;
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Sends one NOTIFY, on a new connection when the old one failed, until it is sent.
async fn send_until_sent(url: &str, connection: &mut Option<PgConnection>, payload: &str) {
    loop {
        if connection.is_none() {
            match connect(url, "toolhost-notify").await {
                Ok(fresh) => *connection = Some(fresh),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to send notices to the other replicas; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else { continue };
        match sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(open).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a notice to the other replicas failed; sending it again on a new connection");
                *connection = None;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Listens to the other replicas' notices until `shutdown`, on a connection made again
/// whenever it is lost.
pub(super) async fn listen(relay: Arc<Relay>, shutdown: CancellationToken) {
    let mut first = true;
    loop {
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            listener = listener(&relay.database_url) => listener,
        };
        if !first {
            tracing::info!("listening to the other replicas again; catching up from the database");
            relay.catch_up_everything().await;
        }
        first = false;
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => match serde_json::from_str::<Envelope>(notification.payload()) {
                    Ok(envelope) if envelope.origin != relay.identity.replica_id => {
                        for notice in envelope.notices {
                            relay.on_notice(notice).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "a notice this replica cannot read (another version?)"),
                },
                Ok(None) => {
                    tracing::warn!("lost the connection that hears the other replicas; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the connection that hears the other replicas failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A listener on [`CHANNEL`], made again and again until the database gives one.
async fn listener(url: &str) -> PgListener {
    loop {
        match try_listener(url).await {
            Ok(listener) => return listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other replicas yet");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn try_listener(url: &str) -> Result<PgListener, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("toolhost-listen");
    let pool = PgPoolOptions::new().max_connections(1).connect_with(options).await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_packed_in_order_under_the_payload_limit_and_pending_once() {
        let mut notices = vec![Notice::Pending];
        for seq in 0..500 {
            notices.push(Notice::Event { chat: format!("chat-{seq:0>36}"), seq, kind: "status".into() });
            notices.push(Notice::Pending);
        }
        let packed = envelopes("worker-1", notices);
        assert!(packed.len() > 1, "500 notices do not fit one NOTIFY");
        let mut seqs = Vec::new();
        let mut pending = 0;
        for payload in &packed {
            assert!(payload.len() < MAX_PAYLOAD, "{} bytes", payload.len());
            let envelope: Envelope = serde_json::from_str(payload).unwrap();
            assert_eq!(envelope.origin, "worker-1");
            for notice in envelope.notices {
                match notice {
                    Notice::Event { seq, .. } => seqs.push(seq),
                    Notice::Pending => pending += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(seqs, (0..500).collect::<Vec<_>>());
        assert_eq!(pending, 1);
    }
}
