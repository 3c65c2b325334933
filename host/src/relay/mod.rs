//! The relay between replicas: several `serve` processes on one PostgreSQL database, each
//! seeing and doing everything as if it were the only one.
//!
//! - The **registry** (`replicas` table): each replica registers its id (its worker's, the
//!   `worker_id` of the chats it runs), its node, the address the others reach it at, and a
//!   heartbeat; it leaves at shutdown, and entries whose heartbeat is stale expire.
//! - **Notices** (`notify`): small LISTEN/NOTIFY messages, batched on a dedicated connection,
//!   saying which chat had which durable event, that a chat became pending, or that cached
//!   configuration changed. The data is read from the tables; a lost LISTEN connection is
//!   reconnected and the replica catches up from the tables.
//! - **Live parts** (`follow`): a replica with subscribers of a chat that another replica runs
//!   keeps one connection to that replica's relay stream and republishes its events, with their
//!   numbers, into its own channel for the chat, which its subscribers read as usual.
//! - **Desktops** (`desktop`): a viewer of a desktop that runs on another node is carried to a
//!   replica there.
//!
//! Replicas trust each other by a token derived from the sealing key they share; a user's
//! token is never forwarded.

pub mod desktop;
mod follow;
mod notify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::chat::events::{ChatChannel, EventBody, WatchEvent};
use crate::chat::notices::{Notice, Reload, WatchChange};
use crate::chat::runs::StopReason;
use crate::chat::service::ChatService;
use crate::config::ReplicasConfig;
use crate::plugin_admin::PluginAdmin;
use crate::policy::PolicyEngine;
use crate::store::{Chat, ChatStatus, Store, StoreResult, now_ms};
use crate::workspace::WorkspaceService;

/// The header a replica's relay calls carry their signature in: `MILLIS.HEX`, an HMAC-SHA256
/// under the deployment's relay secret of the time and the path. The secret never crosses the
/// network; a signature is good for one path for [`SIGNATURE_WINDOW_MS`].
pub const RELAY_SIGNATURE_HEADER: &str = "x-toolhost-relay-signature";

/// How far a signature's time may be from the receiver's clock.
const SIGNATURE_WINDOW_MS: i64 = 60_000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &str, path: &str, millis: i64) -> HmacSha256 {
    use hmac::Mac;
    // Any key length is accepted by HMAC; the error case cannot happen.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{millis}\n{path}").as_bytes());
    mac
}

/// The signature of a call to `path` at `millis`.
pub fn sign(secret: &str, path: &str, millis: i64) -> String {
    use hmac::Mac;
    format!("{millis}.{}", hex::encode(mac(secret, path, millis).finalize().into_bytes()))
}

/// Whether `signature` signs `path` with `secret`, at a time within the window of `now`.
fn verify(secret: &str, path: &str, signature: &str, now: i64) -> bool {
    use hmac::Mac;
    let Some((millis, tag)) = signature.split_once('.') else { return false };
    let (Ok(millis), Ok(tag)) = (millis.parse::<i64>(), hex::decode(tag)) else { return false };
    // Constant time: the comparison says nothing of the expected tag.
    (now - millis).abs() <= SIGNATURE_WINDOW_MS && mac(secret, path, millis).verify_slice(&tag).is_ok()
}

/// Who this replica is to the others.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The worker id of this process: `chats.worker_id` of the chats it runs.
    pub replica_id: String,
    /// The machine whose disk this replica's data directory is on.
    pub node_id: String,
    /// Where the others reach this replica's relay endpoints, if they can.
    pub address: Option<String>,
}

/// What the relay acts on when another replica tells it something.
pub struct RelayServices {
    pub chats: Arc<ChatService>,
    pub policy: Arc<PolicyEngine>,
    pub workspaces: Arc<WorkspaceService>,
    pub plugins: Arc<PluginAdmin>,
}

/// This replica's part in the relay.
pub struct Relay {
    identity: Identity,
    token: String,
    services: RelayServices,
    database_url: String,
    settings: ReplicasConfig,
    http: reqwest::Client,
    outbox: notify::Outbox,
    followers: Mutex<HashMap<String, Arc<follow::Follower>>>,
}

impl Relay {
    /// Registers this replica and starts announcing its events and listening to the others'
    /// until `shutdown`; then call [`Relay::leave`].
    pub async fn start(
        identity: Identity,
        token: &str,
        services: RelayServices,
        database_url: &str,
        settings: &ReplicasConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Relay>> {
        let store = services.chats.store.clone();
        store.register_replica(&identity.replica_id, &identity.node_id, identity.address.as_deref(), VERSION).await?;
        let (outbox, outgoing) = notify::Outbox::new(&identity.replica_id);
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build()?;
        let relay = Arc::new(Relay {
            identity,
            token: token.to_string(),
            services,
            database_url: database_url.to_string(),
            settings: settings.clone(),
            http,
            outbox: outbox.clone(),
            followers: Mutex::new(HashMap::new()),
        });
        let _ = relay.services.chats.replica_id.set(relay.identity.replica_id.clone());
        relay.services.chats.hub.set_announcer(Arc::new(outbox));
        tokio::spawn(notify::send_notices(relay.database_url.clone(), outgoing));
        tokio::spawn(notify::listen(relay.clone(), shutdown.clone()));
        tokio::spawn(relay.clone().keep_registered(shutdown));
        tracing::info!(
            replica_id = %relay.identity.replica_id,
            address = relay.identity.address.as_deref().unwrap_or("none"),
            "registered as a replica"
        );
        Ok(relay)
    }

    /// Chats this replica relays live from the replica running them, right now.
    pub fn relaying(&self) -> usize {
        self.followers.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|f| f.relaying()).count()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether a relay call to `path` carries a fresh signature by a replica of this deployment.
    pub fn accepts(&self, path: &str, signature: &str) -> bool {
        verify(&self.token, path, signature, now_ms())
    }

    /// The signature of a relay call to `path`, made now.
    fn sign(&self, path: &str) -> String {
        sign(&self.token, path, now_ms())
    }

    /// Sends the notices queued so far and leaves the registry: the last step of a shutdown,
    /// after the worker has handed its chats back (which the others must hear of).
    pub async fn leave(&self) {
        if tokio::time::timeout(Duration::from_secs(2), self.outbox.flush()).await.is_err() {
            tracing::warn!("could not send the last notices to the other replicas in time");
        }
        if let Err(e) = self.store().remove_replica(&self.identity.replica_id).await {
            tracing::warn!(error = %e, "could not leave the replica registry; the entry expires on its own");
        }
    }

    fn store(&self) -> &Store {
        &self.services.chats.store
    }

    /// Heartbeats this replica's entry (registering again if it expired, say after a long
    /// database outage) and expires the entries of replicas that went silent.
    async fn keep_registered(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.settings.heartbeat_secs));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let id = &self.identity;
            let beat = match self.store().heartbeat_replica(&id.replica_id).await {
                Ok(true) => Ok(()),
                // Leaving (the entry was just removed) is not expiring.
                Ok(false) if shutdown.is_cancelled() => return,
                Ok(false) => {
                    self.store().register_replica(&id.replica_id, &id.node_id, id.address.as_deref(), VERSION).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = beat {
                tracing::warn!(error = %e, "cannot heartbeat this replica's registry entry");
            }
            let stale_before = now_ms() - (self.settings.stale_after_secs * 1000) as i64;
            match self.store().expire_replicas(stale_before).await {
                Ok(gone) if !gone.is_empty() => {
                    tracing::warn!(replicas = ?gone, "replicas went silent; their entries expired")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot expire silent replicas"),
            }
            // A workspace's files are on its node's disk: with no replica left there, it stops.
            match self.store().stop_workspaces_of_gone_nodes().await {
                Ok(stopped) if !stopped.is_empty() => {
                    tracing::warn!(workspaces = ?stopped, "stopped the workspaces of hosts that no replica runs on any more")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot stop the workspaces of gone hosts"),
            }
        }
    }

    /// The replica running the chat, when it is another one that can be reached: its id and
    /// relay address.
    async fn runner_elsewhere(&self, chat_id: &str) -> StoreResult<Option<(String, String)>> {
        let Some(chat) = self.store().chat(chat_id).await? else { return Ok(None) };
        let Some(worker) =
            chat.worker_id.filter(|w| chat.status == ChatStatus::Running && *w != self.identity.replica_id)
        else {
            return Ok(None);
        };
        let address = self.store().replica(&worker).await?.and_then(|r| r.relay_address);
        if address.is_none() {
            tracing::warn!(
                chat_id,
                worker,
                "the replica running this chat has no relay address; its live parts are not seen here"
            );
        }
        Ok(address.map(|a| (worker, a)))
    }

    /// What a notice from another replica changes here.
    async fn on_notice(&self, notice: Notice) {
        let chats = &self.services.chats;
        match notice {
            Notice::Event { chat, seq, kind } => {
                if kind == "approval_answered" {
                    // A step here may be waiting for that answer.
                    chats.approval_answered.notify_waiters();
                }
                if let Err(e) = self.on_chat_event(&chat, seq, &kind).await {
                    tracing::warn!(chat_id = chat, error = %e, "cannot follow another replica's event");
                }
            }
            Notice::Watch { chat, change } => {
                if chats.hub.watched()
                    && let Ok(Some(chat)) = self.store().chat(&chat).await
                {
                    let event = match change {
                        WatchChange::ApprovalRequest => match self.store().approvals_of_chat(&chat.id, None).await {
                            Ok(approvals) => WatchEvent::ApprovalRequest { chat, approvals },
                            Err(e) => {
                                tracing::warn!(chat_id = chat.id, error = %e, "cannot read the approvals another replica asked for");
                                return;
                            }
                        },
                        change => WatchEvent::of(change, chat),
                    };
                    chats.hub.notify_from_elsewhere(event);
                }
            }
            Notice::Pending => chats.wake.notify_one(),
            Notice::Reload { what } => self.reload(what).await,
        }
    }

    async fn reload(&self, what: Reload) {
        match what {
            Reload::Policy => {
                if let Err(e) = self.services.policy.refresh().await {
                    tracing::warn!(error = %e, "cannot load the policy another replica saved");
                }
            }
            Reload::Templates => drop(self.services.workspaces.reload_templates()),
            Reload::Plugins => self.services.plugins.request_sync(),
            // The catalog is read from the database on every use: nothing cached to drop.
            Reload::Catalog => {}
        }
    }

    /// Another replica numbered a durable event of `chat_id`: a run here that no longer owns
    /// the chat stops, subscribers here get what changed (read from the tables), and a
    /// follower learns whether the chat moved.
    async fn on_chat_event(&self, chat_id: &str, seq: i64, kind: &str) -> StoreResult<()> {
        let chats = &self.services.chats;
        let channel = chats.hub.existing_channel(chat_id);
        let runs_here = chats.runs.contains(chat_id);
        let subscribed = channel.as_ref().is_some_and(|c| c.subscribers() > 0);
        let status = kind == "status" || kind == "error";
        let chat = if status && (runs_here || subscribed || chats.hub.watched()) {
            self.store().chat(chat_id).await?
        } else {
            None
        };
        if runs_here && status {
            self.stop_run_taken_elsewhere(chat_id, chat.as_ref());
        }
        let relaying = self
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(chat_id)
            .is_some_and(|follower| follower.relaying());
        // A relayed chat's numbered events come, in order, through the relay: a notice that
        // overtook them must not number anything past parts still on their way, and its
        // messages need no read of the table (a catch-up still reads them).
        let brought_by_relay = relaying && kind == "message" && seq != CATCH_UP;
        if let Some(channel) = channel.as_ref().filter(|_| !brought_by_relay) {
            let seq = if relaying { CATCH_UP } else { seq };
            self.catch_up(channel, seq, kind, chat.as_ref()).await?;
        }
        if status
            && let Some(chat) = chat
            && chats.hub.watched()
        {
            chats.hub.notify_from_elsewhere(WatchEvent::StatusChange { chat });
        }
        if let Some(follower) = self.followers.lock().unwrap_or_else(|p| p.into_inner()).get(chat_id) {
            follower.poke();
        }
        Ok(())
    }

    /// A run here of a chat another replica interrupted, edited or gave to someone else.
    fn stop_run_taken_elsewhere(&self, chat_id: &str, chat: Option<&Chat>) {
        let mine = |chat: &Chat| chat.worker_id.as_deref() == Some(self.identity.replica_id.as_str());
        let reason = match chat {
            Some(chat) if chat.status == ChatStatus::Running && mine(chat) => return,
            // Interrupted: the run stores what it streamed, then runs the queue.
            Some(chat) if mine(chat) => StopReason::Interrupt,
            // Edited, or taken back: the run stores nothing more.
            _ => StopReason::Superseded,
        };
        tracing::info!(chat_id, ?reason, "another replica stopped this chat's turn");
        self.services.chats.runs.stop(chat_id, reason);
    }

    /// Publishes into this replica's channel what another replica's event changed, read from
    /// the tables, with the event's number (once: the channel skips what it has, or what came
    /// after it); after a catch-up, status and queue go out as state, moving no cursor.
    async fn catch_up(&self, channel: &ChatChannel, seq: i64, kind: &str, chat: Option<&Chat>) -> StoreResult<()> {
        let mut guard = channel.lock().await;
        if channel.subscribers() == 0 {
            // Nobody to tell; what matters is that this channel numbers past the event, and
            // that parts a stored message superseded are not kept.
            guard.forget_lease();
            if kind == "message" && !self.services.chats.runs.contains(channel.chat_id()) {
                guard.clear_in_flight();
            }
            return Ok(());
        }
        let chat_id = channel.chat_id();
        match kind {
            "message" if seq > guard.high_water() || seq == CATCH_UP => {
                for message in self.store().messages(chat_id, guard.high_water()).await? {
                    guard.publish_message_from_elsewhere(&message);
                }
            }
            "status" => {
                if let Some(chat) = chat {
                    let status = EventBody::Status { status: chat.status, last_error: chat.last_error.clone() };
                    publish(&mut guard, seq, status);
                }
            }
            "error" => {
                if let Some(message) = chat.and_then(|c| c.last_error.clone()) {
                    publish(&mut guard, seq, EventBody::Error { message });
                }
            }
            "queue_update" => {
                let queued_messages = self.store().queued_messages(chat_id).await?;
                publish(&mut guard, seq, EventBody::QueueUpdate { queued_messages });
            }
            // Which approvals the notice was about is not in it: the ones waiting, or the ones
            // answered just now (clients take each approval by its id, so a repeat is harmless).
            "approval_request" => {
                let approvals = self.store().approvals_of_chat(chat_id, None).await?;
                if !approvals.is_empty() {
                    publish(&mut guard, seq, EventBody::ApprovalRequest { approvals });
                }
            }
            "approval_answered" => {
                let since = now_ms() - RECENTLY_ANSWERED_MS;
                let approvals = self.store().approvals_of_chat(chat_id, Some(since)).await?;
                let approvals: Vec<_> = approvals.into_iter().filter(|a| a.answered_at.is_some()).collect();
                if !approvals.is_empty() {
                    publish(&mut guard, seq, EventBody::ApprovalAnswered { approvals });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After the LISTEN connection was lost: whatever was announced meanwhile is read from the
    /// tables, as if every chat with subscribers or a run here had changed.
    async fn catch_up_everything(&self) {
        let chats = &self.services.chats;
        let mut ids: Vec<String> = chats.runs.ids();
        ids.extend(self.followers.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned());
        ids.sort();
        ids.dedup();
        for chat_id in ids {
            for kind in ["message", "status", "queue_update", "approval_request"] {
                if let Err(e) = self.on_chat_event(&chat_id, CATCH_UP, kind).await {
                    tracing::warn!(chat_id, error = %e, "cannot catch up with a chat after losing the notice connection");
                }
            }
        }
        // A chat may have become pending meanwhile, and plugins may have come and gone.
        chats.wake.notify_one();
        self.services.plugins.request_sync();
    }
}

/// An event another replica numbered `seq`: numbered here too, unless it comes from a catch-up
/// (which knows no number: it goes out as state).
fn publish(guard: &mut crate::chat::events::ChannelGuard<'_>, seq: i64, body: EventBody) {
    if seq == CATCH_UP {
        guard.publish_state(body);
    } else {
        guard.publish_from_elsewhere(seq, body);
    }
}

/// How far back an `approval_answered` notice's approvals are looked for.
const RECENTLY_ANSWERED_MS: i64 = 10_000;

/// The number a catch-up passes for events it cannot know the number of.
const CATCH_UP: i64 = i64::MAX;

/// This build's version, as the registry records it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the others reach a replica listening on `listening`, unless configured: the listening
/// address itself when it names one host (not 0.0.0.0 or [::]).
pub fn default_address(listening: std::net::SocketAddr) -> Option<String> {
    (!listening.ip().is_unspecified()).then(|| format!("http://{listening}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_good_for_its_path_and_secret_within_the_window_only() {
        let signature = sign("secret", "/internal/v1/chats/c1/stream", 1_000_000);
        assert!(verify("secret", "/internal/v1/chats/c1/stream", &signature, 1_000_000 + 59_000));
        assert!(!verify("secret", "/internal/v1/chats/c2/stream", &signature, 1_000_000), "another path");
        assert!(!verify("other", "/internal/v1/chats/c1/stream", &signature, 1_000_000), "another deployment");
        assert!(!verify("secret", "/internal/v1/chats/c1/stream", &signature, 1_000_000 + 61_000), "too old");
        assert!(!verify("secret", "/internal/v1/chats/c1/stream", "garbage", 1_000_000));
        let (millis, _) = signature.split_once('.').unwrap();
        let forged = format!("{millis}.{}", "0".repeat(64));
        assert!(!verify("secret", "/internal/v1/chats/c1/stream", &forged, 1_000_000));
    }

    #[test]
    fn the_default_address_is_the_listening_one_unless_it_names_no_host() {
        assert_eq!(default_address("127.0.0.1:7420".parse().unwrap()).as_deref(), Some("http://127.0.0.1:7420"));
        assert_eq!(default_address("0.0.0.0:7420".parse().unwrap()), None);
    }
}
