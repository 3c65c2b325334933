//! What the API and the worker both do to chats: send, queue, interrupt, and the registry of
//! runs in this process.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;

use super::events::{ChannelGuard, EventBody, EventHub, WatchEvent};
use super::runs::{Runs, StopReason};
use crate::domain::Role;
use crate::domain::parts::MessagePart;
use crate::store::{Chat, ChatStatus, Message, NewChat, QueuedMessage, Store, StoreError};

/// What to do with a message sent while the chat is busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusyBehavior {
    /// Run it after the current turn.
    #[default]
    Queue,
    /// Stop the current turn and run it next.
    Interrupt,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SendOutcome {
    pub queued: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_message: Option<QueuedMessage>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the chat's queue is full ({0} messages); wait for the turn to finish or delete a queued message")]
    QueueFull(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shared by the API and the worker.
pub struct ChatService {
    pub store: Store,
    pub hub: EventHub,
    pub runs: Runs,
    /// Wakes the worker when a chat becomes pending.
    pub wake: Notify,
    /// Wakes steps waiting for tool call approvals when one is answered (here, or on another
    /// replica: the relay passes its notice on).
    pub approval_answered: Notify,
    /// This process's worker id, once it shares the database with other replicas.
    pub replica_id: std::sync::OnceLock<String>,
    /// Turns and model calls, for `/metrics`.
    pub(crate) metrics: super::metrics::ChatMetrics,
}

impl ChatService {
    pub fn new(store: Store) -> Arc<ChatService> {
        Arc::new(ChatService {
            store,
            hub: EventHub::default(),
            runs: Runs::default(),
            wake: Notify::new(),
            approval_answered: Notify::new(),
            replica_id: std::sync::OnceLock::new(),
            metrics: super::metrics::ChatMetrics::new(),
        })
    }

    /// Adds the chat metrics (turns, model calls, tokens, cost, retries) to a server's registry.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        self.metrics.register(registry);
    }

    /// Wakes this process's worker, and the other replicas' (a chat became pending).
    pub fn wake_workers(&self) {
        self.wake.notify_one();
        self.hub.announce(super::notices::Notice::Pending);
    }

    /// Creates a chat with its first message, tells watchers and wakes the worker to run it.
    /// The one way a chat comes to be, whether a person or a parent chat starts it.
    pub async fn create(&self, new: NewChat) -> Result<Chat, StoreError> {
        let (chat, _first) = self.store.create_chat(new).await?;
        self.hub.notify(WatchEvent::Created { chat: chat.clone() });
        self.wake_workers();
        Ok(chat)
    }

    /// Sends a user message: it starts a turn when the chat is idle, or waits in the queue.
    pub async fn send(
        &self,
        chat: &Chat,
        content: Vec<MessagePart>,
        busy: BusyBehavior,
    ) -> Result<SendOutcome, SendError> {
        let channel = self.hub.channel(&chat.id);
        let mut guard = channel.lock().await;
        let (status, owner) = self.store.chat_state(&chat.id).await?.unwrap_or((chat.status, None));
        guard.set_runner_elsewhere(self.run_elsewhere(&chat.id, owner.as_deref()));
        let winding_up = self.winding_up(&chat.id, status, owner.as_deref()).await?;
        match status {
            ChatStatus::Waiting | ChatStatus::Error if !winding_up => {
                let message = self.start_turn_with(&mut guard, &chat.id, &content, None).await?;
                Ok(SendOutcome { queued: false, message, queued_message: None })
            }
            _ => {
                let queued = self
                    .store
                    .enqueue(&chat.id, &content)
                    .await?
                    .ok_or(SendError::QueueFull(crate::store::MAX_QUEUED))?;
                self.publish_queue(&mut guard, &chat.id).await?;
                if busy == BusyBehavior::Interrupt {
                    self.interrupt_locked(&mut guard, &chat.id, status).await?;
                }
                Ok(SendOutcome { queued: true, message: None, queued_message: Some(queued) })
            }
        }
    }

    /// Replaces a user message and runs the chat again from there: later messages and the
    /// queue are dropped, and a running turn is stopped without storing anything more.
    pub async fn edit(&self, chat_id: &str, message_id: i64, content: &[MessagePart]) -> Result<Message, StoreError> {
        let channel = self.hub.channel(chat_id);
        let mut guard = channel.lock().await;
        let message = self.store.edit_user_message(chat_id, message_id, content).await?;
        self.runs.stop(chat_id, StopReason::Superseded);
        guard.publish_message(&message);
        guard.emit(&self.store, EventBody::Status { status: ChatStatus::Pending, last_error: None }).await?;
        self.publish_queue(&mut guard, chat_id).await?;
        self.wake_workers();
        Ok(message)
    }

    /// Deletes a queued message; false when there is none with that id.
    pub async fn delete_queued(&self, chat_id: &str, queued_id: i64) -> Result<bool, StoreError> {
        let channel = self.hub.channel(chat_id);
        let mut guard = channel.lock().await;
        if !self.store.delete_queued(chat_id, queued_id).await? {
            return Ok(false);
        }
        if let Some((_, owner)) = self.store.chat_state(chat_id).await? {
            guard.set_runner_elsewhere(self.run_elsewhere(chat_id, owner.as_deref()));
        }
        self.publish_queue(&mut guard, chat_id).await?;
        Ok(true)
    }

    /// Runs a queued message next: it goes to the front of the queue, and a running turn is
    /// interrupted (keeping what was streamed) so that it runs now.
    pub async fn promote(&self, chat_id: &str, queued_id: i64) -> Result<bool, StoreError> {
        let channel = self.hub.channel(chat_id);
        let mut guard = channel.lock().await;
        if !self.store.promote_queued(chat_id, queued_id).await? {
            return Ok(false);
        }
        let Some((status, owner)) = self.store.chat_state(chat_id).await? else { return Ok(false) };
        guard.set_runner_elsewhere(self.run_elsewhere(chat_id, owner.as_deref()));
        let winding_up = self.winding_up(chat_id, status, owner.as_deref()).await?;
        match status {
            ChatStatus::Running => self.interrupt_locked(&mut guard, chat_id, status).await?,
            ChatStatus::Waiting | ChatStatus::Error if !winding_up => {
                if let Some(next) = self.store.pop_queued(chat_id).await? {
                    self.start_turn_with(&mut guard, chat_id, &next.content, None).await?;
                }
            }
            // Pending, or an interrupted turn winding up: the worker runs the queue's head next.
            _ => {}
        }
        self.publish_queue(&mut guard, chat_id).await?;
        Ok(true)
    }

    /// Archives (or unarchives) a chat and its descendants; archiving stops their turns.
    pub async fn set_archived(&self, chat_id: &str, archived: bool) -> Result<(), StoreError> {
        let ids = self.store.set_archived(chat_id, archived).await?;
        for id in ids {
            if archived {
                self.interrupt(&id).await?;
            }
            if let Some(chat) = self.store.chat(&id).await? {
                self.hub.notify(if archived { WatchEvent::Archived { chat } } else { WatchEvent::Unarchived { chat } });
            }
        }
        Ok(())
    }

    /// Stops the chat's turn; the worker keeps what was streamed and then runs the next queued
    /// message, if any.
    pub async fn interrupt(&self, chat_id: &str) -> Result<(), StoreError> {
        let channel = self.hub.channel(chat_id);
        let mut guard = channel.lock().await;
        let Some((status, owner)) = self.store.chat_state(chat_id).await? else { return Ok(()) };
        guard.set_runner_elsewhere(self.run_elsewhere(chat_id, owner.as_deref()));
        self.interrupt_locked(&mut guard, chat_id, status).await
    }

    /// Interrupts a chat and every chat below it (a root chat's interrupt reaches its
    /// subagents).
    pub async fn interrupt_tree(&self, chat_id: &str) -> Result<(), StoreError> {
        self.interrupt(chat_id).await?;
        for descendant in self.store.descendants(chat_id).await? {
            self.interrupt(&descendant).await?;
        }
        Ok(())
    }

    async fn interrupt_locked(
        &self,
        guard: &mut ChannelGuard<'_>,
        chat_id: &str,
        status: ChatStatus,
    ) -> Result<(), StoreError> {
        match status {
            ChatStatus::Running => {
                // The worker still owns the chat until it has stored the partial step.
                self.store.mark_interrupted(chat_id).await?;
                guard.emit(&self.store, EventBody::Status { status: ChatStatus::Waiting, last_error: None }).await?;
                self.runs.stop(chat_id, StopReason::Interrupt);
            }
            ChatStatus::Pending => {
                // Not started: the next queued message (if any) joins the turn about to run.
                if let Some(next) = self.store.pop_queued(chat_id).await? {
                    self.start_turn_with(guard, chat_id, &next.content, None).await?;
                    self.publish_queue(guard, chat_id).await?;
                }
            }
            ChatStatus::Waiting | ChatStatus::Error => {}
        }
        Ok(())
    }

    /// Whether another replica runs the chat (`owner` holds it, and it is not this process's
    /// worker): that replica then orders its events, and this one's go out as state.
    fn run_elsewhere(&self, chat_id: &str, owner: Option<&str>) -> bool {
        let Some(owner) = owner else { return false };
        match self.replica_id.get() {
            Some(me) => owner != me && !self.runs.contains(chat_id),
            None => false,
        }
    }

    /// An interrupted chat is `waiting` at once, but its worker still owns it until it has
    /// stored the cut-off step. A message sent meanwhile waits in the queue, which the worker
    /// runs next; starting a turn at once would take the chat from the worker, losing that
    /// step (tool calls without results) and running two turns at a time.
    /// With replicas, the worker may be another replica's, as long as that one is alive.
    async fn winding_up(&self, chat_id: &str, status: ChatStatus, owner: Option<&str>) -> Result<bool, StoreError> {
        let Some(owner) = owner.filter(|_| status == ChatStatus::Waiting) else { return Ok(false) };
        if self.runs.contains(chat_id) {
            return Ok(true);
        }
        Ok(self.run_elsewhere(chat_id, Some(owner)) && self.store.replica(owner).await?.is_some())
    }

    /// Stores a user message and makes the chat pending (under the channel lock).
    pub(crate) async fn start_turn_with(
        &self,
        guard: &mut ChannelGuard<'_>,
        chat_id: &str,
        content: &[MessagePart],
        owner: Option<&str>,
    ) -> Result<Option<Message>, StoreError> {
        // A turn starts: nobody else runs the chat, and its events are numbered here.
        guard.set_runner_elsewhere(false);
        let message = self.store.insert_message(chat_id, owner, Role::User, content, None, None).await?;
        if let Some(message) = &message {
            guard.publish_message(message);
        }
        self.store.set_status(chat_id, ChatStatus::Pending, None).await?;
        guard.emit(&self.store, EventBody::Status { status: ChatStatus::Pending, last_error: None }).await?;
        self.wake_workers();
        Ok(message)
    }

    pub(crate) async fn publish_queue(&self, guard: &mut ChannelGuard<'_>, chat_id: &str) -> Result<(), StoreError> {
        let queued_messages = self.store.queued_messages(chat_id).await?;
        guard.emit(&self.store, EventBody::QueueUpdate { queued_messages }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChatKind;
    use crate::store::NewChat;

    #[tokio::test]
    async fn a_message_sent_while_an_interrupted_turn_winds_up_waits_for_it_in_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        let new = NewChat {
            owner_id: alice.id,
            parent_chat_id: None,
            root_chat_id: None,
            kind: ChatKind::Root,
            workspace_id: None,
            title: "t".into(),
            model: None,
            content: vec![MessagePart::text("first")],
        };
        let (chat, _) = store.create_chat(new).await.unwrap();
        let service = ChatService::new(store.clone());
        assert!(store.acquire_chat("worker-1", "node-1").await.unwrap().is_some());
        let run = service.runs.register(&chat.id);

        service.interrupt(&chat.id).await.unwrap();
        let interrupted = store.chat(&chat.id).await.unwrap().unwrap();
        assert_eq!((interrupted.status, interrupted.worker_id.as_deref()), (ChatStatus::Waiting, Some("worker-1")));
        let sent = service.send(&interrupted, vec![MessagePart::text("second")], BusyBehavior::Queue).await.unwrap();
        assert!(sent.queued, "the worker has not stored its cut-off step yet: the message waits for it");
        let after = store.chat(&chat.id).await.unwrap().unwrap();
        assert_eq!(
            after.worker_id.as_deref(),
            Some("worker-1"),
            "the worker keeps the chat, so it can store its step and run the queue"
        );

        // Once the run is over (here: its worker died), a message starts a turn at once.
        service.runs.finish(&chat.id, &run);
        let sent = service.send(&after, vec![MessagePart::text("third")], BusyBehavior::Queue).await.unwrap();
        assert!(!sent.queued);
        assert_eq!(store.chat(&chat.id).await.unwrap().unwrap().status, ChatStatus::Pending);
        store.close().await;
    }
}
