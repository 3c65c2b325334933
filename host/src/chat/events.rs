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
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::{Mutex as AsyncMutex, MutexGuard, broadcast};

use super::notices::{Announcer, Notice, WatchChange};
use crate::store::{Chat, ChatStatus, Message, QueuedMessage, Store, StoreError, StoreResult, ToolApproval};

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
    /// What a running tool call is doing (its plugin's `progress` reports): sent live only,
    /// never stored or replayed, and it moves no cursor. The call's result supersedes it.
    ToolProgress {
        tool_call_id: String,
        tool: String,
        message: String,
        /// Between 0 and 1 when the plugin knows.
        fraction: Option<f32>,
    },
    /// Tool calls waiting for the chat owner's approval (the policy's `require_approval`): the
    /// calls of one step, asked together; on a reconnect, every call still waiting. The step
    /// goes on once each is answered (`POST /api/v1/chats/{id}/approvals/{approval}`) or its
    /// deadline passes (a denial).
    ApprovalRequest {
        approvals: Vec<ToolApproval>,
    },
    /// Approvals answered: approved, denied (with the person's reason), expired or cancelled.
    ApprovalAnswered {
        approvals: Vec<ToolApproval>,
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
    /// Whether it moves a client's cursor (it is sent with its `seq` as the SSE id). A state
    /// event (the status or queue as another replica left them) does not: like the snapshot's,
    /// it describes state, and its number may lie behind what the client has seen.
    pub advances: bool,
}

impl Published {
    pub fn new(event: &ChatEvent) -> Arc<Published> {
        Published::serialized(event, true)
    }

    /// An event that describes state and does not move the cursor: it goes out without a
    /// `seq` (and without an SSE id), so that no client takes it for a numbered event.
    pub fn state(event: &ChatEvent) -> Arc<Published> {
        Published::serialized(event, false)
    }

    fn serialized(event: &ChatEvent, advances: bool) -> Arc<Published> {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if !advances && let Some(object) = value.as_object_mut() {
            object.remove("seq");
        }
        let kind = value["type"].as_str().unwrap_or_default().to_string();
        Arc::new(Published { seq: event.seq, kind, json: value.to_string(), advances })
    }

    /// Whether a client that reconnects must be sent it again while its step is not stored: the
    /// step's parts, and what says to drop them (a retry, a discard) or that a summary is coming.
    fn in_flight(&self) -> bool {
        matches!(self.kind.as_str(), "message_part" | "retry" | "compacting" | "discard")
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
    Created {
        chat: Chat,
    },
    StatusChange {
        chat: Chat,
    },
    TitleChange {
        chat: Chat,
    },
    Archived {
        chat: Chat,
    },
    Unarchived {
        chat: Chat,
    },
    /// Calls of the chat (a root chat, or a subagent of one of the person's chats) wait for the
    /// person's approval: every call of the chat still waiting.
    ApprovalRequest {
        chat: Chat,
        approvals: Vec<ToolApproval>,
    },
}

impl WatchEvent {
    /// The event of `change` to `chat`.
    pub fn of(change: WatchChange, chat: Chat) -> WatchEvent {
        match change {
            WatchChange::Created => WatchEvent::Created { chat },
            WatchChange::StatusChange => WatchEvent::StatusChange { chat },
            WatchChange::TitleChange => WatchEvent::TitleChange { chat },
            WatchChange::Archived => WatchEvent::Archived { chat },
            WatchChange::Unarchived => WatchEvent::Unarchived { chat },
            WatchChange::ApprovalRequest => WatchEvent::ApprovalRequest { chat, approvals: Vec::new() },
        }
    }

    pub fn change(&self) -> WatchChange {
        match self {
            WatchEvent::Created { .. } => WatchChange::Created,
            WatchEvent::StatusChange { .. } => WatchChange::StatusChange,
            WatchEvent::TitleChange { .. } => WatchChange::TitleChange,
            WatchEvent::Archived { .. } => WatchChange::Archived,
            WatchEvent::Unarchived { .. } => WatchChange::Unarchived,
            WatchEvent::ApprovalRequest { .. } => WatchChange::ApprovalRequest,
        }
    }

    pub fn chat(&self) -> &Chat {
        match self {
            WatchEvent::Created { chat }
            | WatchEvent::StatusChange { chat }
            | WatchEvent::TitleChange { chat }
            | WatchEvent::Archived { chat }
            | WatchEvent::Unarchived { chat }
            | WatchEvent::ApprovalRequest { chat, .. } => chat,
        }
    }
}

/// Who is told about this process's durable events besides its own subscribers: other
/// replicas, once the relay is set up (never, with SQLite).
type SharedAnnouncer = Arc<OnceLock<Arc<dyn Announcer>>>;

/// Channels of all chats with activity in this process, and the watch feed of chat changes.
pub struct EventHub {
    channels: Mutex<HashMap<String, Arc<ChatChannel>>>,
    watch: broadcast::Sender<WatchEvent>,
    announcer: SharedAnnouncer,
}

impl Default for EventHub {
    fn default() -> EventHub {
        let (watch, _) = broadcast::channel(WATCH_BUFFER);
        EventHub { channels: Mutex::new(HashMap::new()), watch, announcer: Arc::default() }
    }
}

impl EventHub {
    /// Tells watchers about a change to a chat, here and on the other replicas.
    pub fn notify(&self, event: WatchEvent) {
        announce(&self.announcer, Notice::Watch { chat: event.chat().id.clone(), change: event.change() });
        let _ = self.watch.send(event);
    }

    /// Tells this process's watchers about a change another replica made (and announced).
    pub fn notify_from_elsewhere(&self, event: WatchEvent) {
        let _ = self.watch.send(event);
    }

    /// Whether anyone here watches chat changes.
    pub fn watched(&self) -> bool {
        self.watch.receiver_count() > 0
    }

    /// From now on, durable events and chat changes are also announced to `announcer`. Set
    /// once (a second call is ignored).
    pub fn set_announcer(&self, announcer: Arc<dyn Announcer>) {
        let _ = self.announcer.set(announcer);
    }

    /// Announces a notice to the other replicas, if there are any to tell.
    pub fn announce(&self, notice: Notice) {
        announce(&self.announcer, notice);
    }

    /// The chat's channel if this process has one (nothing is created).
    pub fn existing_channel(&self, chat_id: &str) -> Option<Arc<ChatChannel>> {
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(chat_id).cloned()
    }

    /// Receives every chat change from now on (filter by owner).
    pub fn watch(&self) -> broadcast::Receiver<WatchEvent> {
        self.watch.subscribe()
    }

    /// Live subscribers in this process: of chats' streams and of the watch stream.
    pub fn subscriber_count(&self) -> usize {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.values().map(|c| c.subscribers()).sum::<usize>() + self.watch.receiver_count()
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
                    announcer: self.announcer.clone(),
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

fn announce(announcer: &SharedAnnouncer, notice: Notice) {
    if let Some(announcer) = announcer.get() {
        announcer.announce(notice);
    }
}

pub struct ChatChannel {
    chat_id: String,
    state: AsyncMutex<ChannelState>,
    live: broadcast::Sender<Arc<Published>>,
    watch: broadcast::Sender<WatchEvent>,
    announcer: SharedAnnouncer,
}

#[derive(Default)]
struct ChannelState {
    /// The reserved numbers not handed out yet.
    lease: Option<std::ops::RangeInclusive<i64>>,
    in_flight: Vec<Arc<Published>>,
    /// The highest number published here: events relayed or read from elsewhere at or below it
    /// were published already.
    high_water: i64,
}

impl ChatChannel {
    pub async fn lock(&self) -> ChannelGuard<'_> {
        ChannelGuard { channel: self, state: self.state.lock().await, runner_elsewhere: false }
    }

    pub fn chat_id(&self) -> &str {
        &self.chat_id
    }

    /// Subscribers of this chat in this process.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

/// Exclusive use of a chat's numbering and publishing.
pub struct ChannelGuard<'a> {
    channel: &'a ChatChannel,
    state: MutexGuard<'a, ChannelState>,
    /// Another replica runs the chat, and its channel orders the chat's events: what this
    /// guard publishes goes out here as state, and numbered there (from the notice).
    runner_elsewhere: bool,
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
        self.publish_message_from_elsewhere(message);
        self.announce(message.seq, "message");
    }

    /// Publishes a message another replica stored (and announced), unless it was already.
    pub fn publish_message_from_elsewhere(&mut self, message: &Message) {
        if message.seq <= self.state.high_water {
            return;
        }
        self.state.lease = None;
        self.state.in_flight.clear();
        self.publish(ChatEvent { seq: message.seq, body: EventBody::Message { message: message.public() } });
    }

    /// Publishes an event relayed from the replica that runs the chat, unless it was already
    /// published. Numbers from elsewhere end this channel's lease: what it publishes next is
    /// numbered past them.
    pub fn publish_relayed(&mut self, event: Arc<Published>) {
        if !event.advances {
            let _ = self.channel.live.send(event);
            return;
        }
        if event.seq <= self.state.high_water {
            return;
        }
        self.state.lease = None;
        if event.kind == "message" {
            self.state.in_flight.clear();
        }
        self.send(event);
    }

    /// Publishes an event another replica numbered `seq` (and announced), with the state read
    /// here: numbered, when nothing later was published here; otherwise it is superseded.
    pub fn publish_from_elsewhere(&mut self, seq: i64, body: EventBody) {
        if seq <= self.state.high_water {
            return;
        }
        self.state.lease = None;
        self.send(Published::new(&ChatEvent { seq, body }));
    }

    /// Sends live subscribers the state another replica left (a status, the queue): it does
    /// not move their cursors.
    pub fn publish_state(&mut self, body: EventBody) {
        // Whatever another replica numbered, this channel's lease may lie behind it.
        self.state.lease = None;
        let event = Published::state(&ChatEvent { seq: self.state.high_water, body });
        let _ = self.channel.live.send(event);
    }

    /// Sends live subscribers an event that is never stored nor replayed (a tool's progress):
    /// it uses no number and moves no cursor.
    pub fn publish_transient(&mut self, body: EventBody) {
        let event = Published::state(&ChatEvent { seq: self.state.high_water, body });
        let _ = self.channel.live.send(event);
    }

    /// Another replica numbered an event of this chat: numbers reserved before it are not
    /// used, so that what this channel publishes next is numbered past it.
    pub fn forget_lease(&mut self) {
        self.state.lease = None;
    }

    /// Numbers up to `seq` were published before this channel (stored messages a new
    /// follower of the chat does not republish).
    pub fn raise_high_water(&mut self, seq: i64) {
        self.state.high_water = self.state.high_water.max(seq);
    }

    /// The highest number published here.
    pub fn high_water(&self) -> i64 {
        self.state.high_water
    }

    fn announce(&self, seq: i64, kind: &str) {
        let notice = Notice::Event { chat: self.channel.chat_id.clone(), seq, kind: kind.to_string() };
        announce(&self.channel.announcer, notice);
    }

    /// Tells clients to drop the parts streamed since the last message.
    pub async fn discard(&mut self, store: &Store, reason: DiscardReason, message: String) -> StoreResult<()> {
        self.state.in_flight.clear();
        self.emit(store, EventBody::Discard { reason, message }).await.map(drop)
    }

    /// Sends an event to live subscribers; a part is also kept for reconnecting clients.
    pub fn publish(&mut self, event: ChatEvent) {
        if self.runner_elsewhere {
            let _ = self.channel.live.send(Published::state(&event));
            return;
        }
        self.send(Published::new(&event));
    }

    /// Says that another replica runs the chat (see `runner_elsewhere`).
    pub fn set_runner_elsewhere(&mut self, elsewhere: bool) {
        self.runner_elsewhere = elsewhere;
    }

    fn send(&mut self, published: Arc<Published>) {
        // A retry goes with the in-flight parts: a client resuming after it must learn that
        // the parts it has of this step were dropped. So does a compaction under way.
        if published.in_flight() {
            self.state.in_flight.push(published.clone());
        }
        self.state.high_water = self.state.high_water.max(published.seq);
        let _ = self.channel.live.send(published);
    }

    /// Numbers and publishes an event in one go; a status change also reaches the owner's
    /// watch stream. Durable events (status, queue, error) are announced to other replicas,
    /// which read them from the tables.
    pub async fn emit(&mut self, store: &Store, body: EventBody) -> StoreResult<i64> {
        let seq = self.next_seq(store).await?;
        let durable = match &body {
            EventBody::Status { .. } => Some("status"),
            EventBody::QueueUpdate { .. } => Some("queue_update"),
            EventBody::Error { .. } => Some("error"),
            EventBody::ApprovalRequest { .. } => Some("approval_request"),
            EventBody::ApprovalAnswered { .. } => Some("approval_answered"),
            _ => None,
        };
        self.publish(ChatEvent { seq, body });
        if let Some(kind) = durable {
            self.announce(seq, kind);
        }
        if durable == Some("status") {
            // Other replicas' watchers learn of it from the announced event.
            if self.channel.watch.receiver_count() > 0
                && let Some(chat) = store.chat(&self.channel.chat_id).await?
            {
                let _ = self.channel.watch.send(WatchEvent::StatusChange { chat });
            }
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
    async fn relayed_events_are_published_once_in_order_and_state_moves_no_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let chat = new_chat(&store, &alice.id).await;
        // The numbers another replica reserved, and relays events under.
        store.reserve_seqs(&chat.id, 20).await.unwrap().unwrap();
        let hub = EventHub::default();
        let channel = hub.channel(&chat.id);
        let mut guard = channel.lock().await;
        let mut live = guard.subscribe();
        let part = |seq: i64| {
            let body = EventBody::MessagePart { part: PartDelta::Text { index: 0, text: format!("p{seq}") } };
            Published::new(&ChatEvent { seq, body })
        };
        guard.publish_relayed(part(10));
        guard.publish_relayed(part(11));
        guard.publish_relayed(part(11));
        guard.publish_relayed(part(9));
        guard.publish_state(EventBody::Status { status: ChatStatus::Running, last_error: None });
        guard.publish_from_elsewhere(11, EventBody::QueueUpdate { queued_messages: vec![] });
        guard.publish_from_elsewhere(12, EventBody::QueueUpdate { queued_messages: vec![] });
        let mut received = Vec::new();
        while let Ok(event) = live.try_recv() {
            received.push((event.seq, event.kind.clone(), event.advances, event.json.contains("\"seq\"")));
        }
        assert_eq!(
            received,
            [
                (10, "message_part".into(), true, true),
                (11, "message_part".into(), true, true),
                (11, "status".into(), false, false),
                (12, "queue_update".into(), true, true),
            ],
            "duplicates and numbers already passed are dropped; state carries no seq"
        );
        assert_eq!(guard.in_flight_after(0).len(), 2, "relayed parts are replayed to reconnecting clients");
        assert_eq!(guard.high_water(), 12);
        let next = guard.next_seq(&store).await.unwrap();
        assert!(next > 12, "numbers from elsewhere end the lease: {next}");
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
