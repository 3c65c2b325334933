//! Chat events and their per-chat channels.
//!
//! Every event a client can see carries a per-chat sequence number. A channel hands out the
//! numbers, publishes live events to subscribers, and keeps the in-flight step's parts (which are
//! not in the database yet) so that a client reconnecting with `after=SEQ` is sent exactly the
//! events it has not seen.
//!
//! Numbers are never handed out twice, whatever dies when: a channel takes them from a lease
//! reserved in the database before any is used (`chats.last_seq`), and a stored message is
//! numbered by the database past every lease so far, which ends the channel's lease. Whoever
//! writes a durable event does so while holding the channel's lock, so numbers are handed out,
//! stored and published in one order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard, broadcast};

use crate::store::{Chat, ChatStatus, Message, QueuedMessage, Store, StoreError, StoreResult};

/// Numbers a channel reserves at a time: one database write per this many live events.
const LEASE: i64 = 256;
/// Live events buffered per chat; a subscriber further behind is told to reconnect (and then
/// resumes exactly where it was, from the store and the in-flight buffer).
const LIVE_BUFFER: usize = 1024;
/// Chat changes buffered for watch streams.
const WATCH_BUFFER: usize = 4096;

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ChatEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Status {
        status: ChatStatus,
        last_error: Option<String>,
    },
    Message {
        message: Message,
    },
    MessagePart {
        part: PartDelta,
    },
    QueueUpdate {
        queued_messages: Vec<QueuedMessage>,
    },
    Error {
        message: String,
    },
    /// A model call failed and is tried again after `delay_ms`. When `discarded_output` is
    /// true, the parts streamed since the last message are dropped: the retry streams anew.
    Retry {
        attempt: u32,
        delay_ms: u64,
        error: String,
        error_kind: crate::llm::ErrorKind,
        retrying_at: i64,
        discarded_output: bool,
    },
    /// The model is summarizing the older history; a `compaction` message follows when done.
    Compacting {
        trigger: crate::domain::parts::CompactionTrigger,
    },
    /// The parts streamed since the last message will not be stored: drop them. What replaces
    /// them (a run of the step again, or an error) follows.
    Discard {
        reason: DiscardReason,
        message: String,
    },
}

/// Why streamed parts are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscardReason {
    /// The server that streamed them stopped (crashed or shut down) before storing them; the
    /// step runs again.
    CutOff,
    /// The database could not store them.
    NotStored,
}

/// An event as it goes out: serialized once, shared by every subscriber.
#[derive(Debug)]
pub struct Published {
    pub seq: i64,
    /// The event's `type`.
    pub kind: String,
    pub json: String,
}

impl Published {
    pub fn new(event: &ChatEvent) -> Arc<Published> {
        let value = serde_json::to_value(event).unwrap_or_default();
        let kind = value["type"].as_str().unwrap_or_default().to_string();
        Arc::new(Published { seq: event.seq, kind, json: value.to_string() })
    }
}

/// A piece of the assistant message being streamed. `index` is the part's position in that
/// message; pieces with the same index append to the same part.
#[derive(Clone, Debug, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartDelta {
    Text { index: usize, text: String },
    Reasoning { index: usize, text: String },
    ToolCall { index: usize, tool_call_id: Option<String>, tool_name: Option<String>, args_delta: String },
}

/// What a user's watch stream says about their chats.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    Created { chat: Chat },
    StatusChange { chat: Chat },
    TitleChange { chat: Chat },
    Archived { chat: Chat },
    Unarchived { chat: Chat },
}

impl WatchEvent {
    pub fn chat(&self) -> &Chat {
        match self {
            WatchEvent::Created { chat }
            | WatchEvent::StatusChange { chat }
            | WatchEvent::TitleChange { chat }
            | WatchEvent::Archived { chat }
            | WatchEvent::Unarchived { chat } => chat,
        }
    }
}

/// Channels of all chats with activity in this process, and the watch feed of chat changes.
pub struct EventHub {
    channels: Mutex<HashMap<String, Arc<ChatChannel>>>,
    watch: broadcast::Sender<WatchEvent>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        let (watch, _) = broadcast::channel(WATCH_BUFFER);
        EventHub { channels: Mutex::new(HashMap::new()), watch }
    }
}

impl EventHub {
    /// Tells watchers about a change to a chat.
    pub fn notify(&self, event: WatchEvent) {
        let _ = self.watch.send(event);
    }

    /// Receives every chat change from now on (filter by owner).
    pub fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.watch.subscribe()
    }

    pub fn channel(&self, chat_id: &str) -> Arc<ChatChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .entry(chat_id.to_string())
            .or_insert_with(|| {
                let (live, _) = broadcast::channel(LIVE_BUFFER);
                let state = ChannelState::default();
                Arc::new(ChatChannel {
                    chat_id: chat_id.to_string(),
                    state: AsyncMutex::new(state),
                    live,
                    watch: self.watch.clone(),
                })
            })
            .clone()
    }

    /// Drops the channels nobody uses (no task holds them, no subscriber, nothing in flight),
    /// so memory follows active chats, not every chat ever touched. Returns how many went.
    pub fn sweep(&self) -> usize {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = channels.len();
        channels.retain(|_, channel| {
            // Holding the map lock, a count of one means no task can be using the channel:
            // getting it needs this lock.
            if Arc::strong_count(channel) > 1 || channel.live.receiver_count() > 0 {
                return true;
            }
            let Ok(state) = channel.state.try_lock() else { return true };
            // A swept channel's unused lease is never used: numbers may skip, never repeat.
            !state.in_flight.is_empty()
        });
        before - channels.len()
    }

    /// Channels currently held (for tests and metrics).
    pub fn open_channels(&self) -> usize {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub struct ChatChannel {
    chat_id: String,
    state: AsyncMutex<ChannelState>,
    live: broadcast::Sender<Arc<Published>>,
    watch: broadcast::Sender<WatchEvent>,
}

#[derive(Default)]
struct ChannelState {
    /// The reserved numbers not handed out yet.
    lease: Option<std::ops::RangeInclusive<i64>>,
    in_flight: Vec<Arc<Published>>,
}

impl ChatChannel {
    pub async fn lock(&self) -> ChannelGuard<'_> {
        ChannelGuard { channel: self, state: self.state.lock().await }
    }
}

/// Exclusive use of a chat's numbering and publishing.
pub struct ChannelGuard<'a> {
    channel: &'a ChatChannel,
    state: MutexGuard<'a, ChannelState>,
}

impl ChannelGuard<'_> {
    /// The next sequence number, from the channel's lease (reserved anew when used up).
    pub async fn next_seq(&mut self, store: &Store) -> StoreResult<i64> {
        if let Some(seq) = self.state.lease.as_mut().and_then(Iterator::next) {
            return Ok(seq);
        }
        let chat_id = &self.channel.chat_id;
        let mut lease = store
            .reserve_seqs(chat_id, LEASE)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("no chat `{chat_id}`")))?;
        let seq = lease.next().unwrap_or_default();
        self.state.lease = Some(lease);
        Ok(seq)
    }

    /// Publishes a stored message. Its number is past the channel's lease, whose rest is
    /// dropped so that later events are numbered after it; the parts it supersedes are no
    /// longer replayed.
    pub fn publish_message(&mut self, message: &Message) {
        self.state.lease = None;
        self.state.in_flight.clear();
        self.publish(ChatEvent { seq: message.seq, body: EventBody::Message { message: message.public() } });
    }

    /// Tells clients to drop the parts streamed since the last message.
    pub async fn discard(&mut self, store: &Store, reason: DiscardReason, message: String) -> StoreResult<()> {
        self.state.in_flight.clear();
        self.emit(store, EventBody::Discard { reason, message }).await.map(drop)
    }

    /// Sends an event to live subscribers; a part is also kept for reconnecting clients.
    pub fn publish(&mut self, event: ChatEvent) {
        let published = Published::new(&event);
        // A retry goes with the in-flight parts: a client resuming after it must learn that
        // the parts it has of this step were dropped. So does a compaction under way.
        if matches!(
            event.body,
            EventBody::MessagePart { .. }
                | EventBody::Retry { .. }
                | EventBody::Compacting { .. }
                | EventBody::Discard { .. }
        ) {
            self.state.in_flight.push(published.clone());
        }
        let _ = self.channel.live.send(published);
    }

    /// Numbers and publishes an event in one go; a status change also reaches the owner's
    /// watch stream.
    pub async fn emit(&mut self, store: &Store, body: EventBody) -> StoreResult<i64> {
        let seq = self.next_seq(store).await?;
        let status_change = matches!(body, EventBody::Status { .. });
        self.publish(ChatEvent { seq, body });
        if status_change
            && self.channel.watch.receiver_count() > 0
            && let Some(chat) = store.chat(&self.channel.chat_id).await?
        {
            let _ = self.channel.watch.send(WatchEvent::StatusChange { chat });
        }
        Ok(seq)
    }

    /// The in-flight step was stored (or abandoned): its parts are no longer replayed.
    pub fn clear_in_flight(&mut self) {
        self.state.in_flight.clear();
    }

    /// Whether clients hold parts of a step that is not stored yet.
    pub fn has_parts_in_flight(&self) -> bool {
        self.state.in_flight.iter().any(|e| e.kind == "message_part")
    }

    /// In-flight parts numbered after `after`.
    pub fn in_flight_after(&self, after: i64) -> Vec<Arc<Published>> {
        self.state.in_flight.iter().filter(|e| e.seq > after).cloned().collect()
    }

    /// A receiver of live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.channel.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new root chat of `owner_id`.
    async fn new_chat(store: &Store, owner_id: &str) -> Chat {
        let new = crate::store::NewChat {
            owner_id: owner_id.to_string(),
            parent_chat_id: None,
            root_chat_id: None,
            kind: crate::domain::ChatKind::Root,
            workspace_id: None,
            title: "t".into(),
            model: None,
            content: vec![crate::domain::MessagePart::text("hi")],
        };
        store.create_chat(new).await.unwrap().0
    }

    #[tokio::test]
    async fn idle_channels_are_swept_and_numbering_goes_on_past_every_reserved_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let c1 = new_chat(&store, &alice.id).await;
        let c2 = new_chat(&store, &alice.id).await;
        let hub = EventHub::default();
        let channel = hub.channel(&c1.id);
        let first = channel.lock().await.next_seq(&store).await.unwrap();
        assert_eq!(hub.sweep(), 0, "a channel a task holds stays");
        drop(channel);
        let subscriber = hub.channel(&c2.id).lock().await.subscribe();
        assert_eq!(hub.sweep(), 1, "the idle channel goes; the subscribed one stays");
        assert_eq!(hub.open_channels(), 1);
        drop(subscriber);
        let again = hub.channel(&c1.id).lock().await.next_seq(&store).await.unwrap();
        assert!(again > first + LEASE - 1, "a new channel reserves past the old one's lease: {first} then {again}");
        // A process that died with a lease leaves its numbers reserved: a fresh hub (the next
        // process) never hands them out.
        let next_process = EventHub::default().channel(&c1.id).lock().await.next_seq(&store).await.unwrap();
        assert!(next_process > again + LEASE - 1, "{again} then {next_process}");
    }

    #[tokio::test]
    async fn a_stored_message_is_numbered_past_the_lease_and_later_events_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let chat = new_chat(&store, &alice.id).await;
        let hub = EventHub::default();
        let channel = hub.channel(&chat.id);
        let mut guard = channel.lock().await;
        let part = guard.next_seq(&store).await.unwrap();
        let message = store
            .insert_message(&chat.id, None, crate::domain::Role::Assistant, &[], None, None)
            .await
            .unwrap()
            .unwrap();
        guard.publish_message(&message);
        let after = guard.next_seq(&store).await.unwrap();
        assert!(part < message.seq && message.seq < after, "{part} < {} < {after}", message.seq);
    }
}
