//! Subagents: child chats a chat spawns, waits for, messages and closes. A child is a normal
//! chat (the same chat service as the API makes them with) with its parent and root set, the
//! parent's owner and model, and the tree's workspace; its prompt gets the subagent
//! instruction. A chat addresses only its own descendants, and configurable limits bound how
//! deep trees grow and how many children run at once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::catalog::Catalog;
use crate::chat::service::{BusyBehavior, ChatService, SendError};
use crate::domain::ChatKind;
use crate::domain::parts::MessagePart;
use crate::keyed_lock::KeyedLock;
use crate::store::{Chat, NewChat, Store};

/// Shortest and longest wait, whatever a tool asks.
pub const MIN_WAIT: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How often a waiter looks again when nothing woke it (another replica may run the child).
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Longest prompt or message sent to a child.
const MAX_PROMPT_BYTES: usize = 256 * 1024;

pub use crate::config::AgentsConfig;
pub use crate::plugins::capabilities::agents::{AgentBackend, Report as AgentReport, ServiceError as AgentError};

pub struct AgentService {
    store: Store,
    chats: Arc<ChatService>,
    config: AgentsConfig,
    /// One lock per chat tree: spawns of one tree (parallel tool calls, say) are counted
    /// against the limits one at a time.
    spawn_locks: KeyedLock,
    /// Where computer-use children find their model.
    catalog: Arc<Catalog>,
}

impl AgentService {
    pub fn new(
        store: Store,
        chats: Arc<ChatService>,
        config: AgentsConfig,
        catalog: Arc<Catalog>,
    ) -> Arc<AgentService> {
        Arc::new(AgentService { store, chats, config, spawn_locks: Default::default(), catalog })
    }

    async fn chat(&self, id: &str) -> Result<Chat, AgentError> {
        self.store.chat(id).await?.ok_or_else(|| AgentError::NotFound(format!("there is no chat `{id}`")))
    }

    /// `child_id`, when it is a descendant of `parent_id`.
    async fn descendant(&self, parent_id: &str, child_id: &str) -> Result<Chat, AgentError> {
        let child = self.store.chat(child_id).await?.ok_or_else(|| {
            AgentError::NotFound(format!("there is no chat `{child_id}`; use the ids spawn_agent returned"))
        })?;
        if !self.store.is_descendant(&child, parent_id).await? {
            return Err(AgentError::Denied(format!(
                "chat `{child_id}` is not one of this chat's subagents; a chat may address only the agents it (or its subagents) spawned"
            )));
        }
        Ok(child)
    }

    /// Starts a child of `parent_id` with `prompt`; returns it at once (pending).
    pub async fn spawn(
        &self,
        parent_id: &str,
        prompt: &str,
        title: Option<&str>,
        kind: ChatKind,
    ) -> Result<Chat, AgentError> {
        if kind == ChatKind::Root {
            return Err(AgentError::Invalid("a child chat is a subagent or a computer-use agent".into()));
        }
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err(AgentError::Invalid("the prompt is empty; say what the subagent should do".into()));
        }
        if prompt.len() > MAX_PROMPT_BYTES {
            return Err(AgentError::Invalid(format!("the prompt is longer than {} KiB", MAX_PROMPT_BYTES / 1024)));
        }
        let parent = self.chat(parent_id).await?;
        let _counted_alone = self.spawn_locks.lock(&parent.root_chat_id).await;
        let depth = self.store.chat_depth(&parent).await? + 1;
        if depth > self.config.max_depth {
            return Err(AgentError::Limit(format!(
                "a subagent here would be {depth} levels below its root chat, and the limit is {} ([agents] max_depth); do the work yourself",
                self.config.max_depth
            )));
        }
        let active = self.store.active_descendants_of_root(&parent.root_chat_id).await?;
        if active >= self.config.max_concurrent_per_root {
            return Err(AgentError::Limit(format!(
                "{active} subagents of this chat tree are already running, the most allowed at once ([agents] max_concurrent_per_root); wait for some with wait_agent first"
            )));
        }
        let turn_start = self.store.turn_started_at(&parent.id).await?;
        let this_turn = self.store.children_since(&parent.id, turn_start).await?;
        if this_turn >= self.config.max_spawns_per_turn {
            return Err(AgentError::Limit(format!(
                "this chat already spawned {this_turn} subagents in this turn, the most allowed ([agents] max_spawns_per_turn)"
            )));
        }
        let mut child = NewChat::child_of(&parent, kind, title, prompt);
        if kind == ChatKind::ComputerUse {
            child.model = Some(self.computer_use_model(&parent).await?);
        }
        let child = self.chats.create(child).await?;
        tracing::info!(chat_id = %parent.id, child = %child.id, "subagent spawned");
        Ok(child)
    }

    /// The model of a computer-use child of `parent`: the one the admin marked; and its tree
    /// must have a workspace, beside which the desktop runs.
    async fn computer_use_model(&self, parent: &Chat) -> Result<String, AgentError> {
        let model = self.catalog.computer_use_model().await.map_err(|e| AgentError::Invalid(e.to_string()))?;
        if self.store.chat_workspace(&parent.id).await?.is_none() {
            return Err(AgentError::Invalid(
                "a computer-use agent works on the desktop of this chat's workspace, and this chat has none; create a workspace first (create_workspace)".into(),
            ));
        }
        Ok(model.name)
    }

    async fn report(&self, chat: &Chat) -> Result<AgentReport, AgentError> {
        let chat = self.chat(&chat.id).await?;
        let report = self.store.last_assistant_text(&chat.id).await?;
        Ok(AgentReport { chat_id: chat.id, title: chat.title, status: chat.status, report, error: chat.last_error })
    }

    /// Waits until each child has finished its turn, or `timeout` (clamped to
    /// [`MIN_WAIT`]..[`MAX_WAIT`]) passes; returns every child's report, in the order given.
    pub async fn wait(
        &self,
        parent_id: &str,
        child_ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<AgentReport>, AgentError> {
        if child_ids.is_empty() {
            return Err(AgentError::Invalid("name at least one subagent to wait for".into()));
        }
        let mut children = Vec::new();
        for id in child_ids {
            children.push(self.descendant(parent_id, id).await?);
        }
        let deadline = tokio::time::Instant::now() + timeout.clamp(MIN_WAIT, MAX_WAIT);
        let mut changes = self.chats.hub.watch();
        // The waiting parent no longer counts against the worker's chats: pending children
        // may run now.
        self.chats.wake.notify_one();
        let mut reports = Vec::with_capacity(children.len());
        for child in &children {
            reports.push(self.report(child).await?);
        }
        loop {
            if reports.iter().all(AgentReport::finished) || tokio::time::Instant::now() >= deadline {
                return Ok(reports);
            }
            // Changes of other chats cost nothing: only a child's own change is looked up. The
            // poll is for children another replica runs, whose changes this process never sees.
            let wake = deadline.min(tokio::time::Instant::now() + WAIT_POLL);
            let changed = tokio::select! {
                received = changes.recv() => match received {
                    Ok(event) => Some(event.chat().id.clone()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(wake).await;
                        None
                    }
                },
                _ = tokio::time::sleep_until(wake) => None,
            };
            for (child, report) in children.iter().zip(reports.iter_mut()) {
                let concerned = changed.as_deref().is_none_or(|id| id == child.id);
                if concerned && !report.finished() {
                    *report = self.report(child).await?;
                }
            }
        }
    }

    /// Sends `message` to a descendant: queued behind a running turn, or run next.
    pub async fn send(
        &self,
        parent_id: &str,
        child_id: &str,
        message: &str,
        interrupt: bool,
    ) -> Result<(), AgentError> {
        if message.trim().is_empty() {
            return Err(AgentError::Invalid("the message is empty".into()));
        }
        if message.len() > MAX_PROMPT_BYTES {
            return Err(AgentError::Invalid(format!("the message is longer than {} KiB", MAX_PROMPT_BYTES / 1024)));
        }
        let child = self.descendant(parent_id, child_id).await?;
        let busy = if interrupt { BusyBehavior::Interrupt } else { BusyBehavior::Queue };
        match self.chats.send(&child, vec![MessagePart::text(message)], busy).await {
            Ok(_) => Ok(()),
            Err(SendError::QueueFull(n)) => {
                Err(AgentError::Limit(format!("the subagent already has {n} queued messages; wait for it first")))
            }
            Err(SendError::Store(e)) => Err(AgentError::Store(e)),
        }
    }

    /// Interrupts a descendant and everything below it, leaving them waiting.
    pub async fn close(&self, parent_id: &str, child_id: &str) -> Result<AgentReport, AgentError> {
        let child = self.descendant(parent_id, child_id).await?;
        self.chats.interrupt_tree(&child.id).await?;
        self.report(&child).await
    }
}

impl AgentBackend for AgentService {
    fn spawn<'a>(
        &'a self,
        parent_id: &'a str,
        prompt: &'a str,
        title: Option<&'a str>,
        kind: ChatKind,
    ) -> BoxFuture<'a, Result<String, AgentError>> {
        Box::pin(async move { Ok(AgentService::spawn(self, parent_id, prompt, title, kind).await?.id) })
    }

    fn wait<'a>(
        &'a self,
        parent_id: &'a str,
        child_ids: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<AgentReport>, AgentError>> {
        Box::pin(AgentService::wait(self, parent_id, child_ids, timeout))
    }

    fn send<'a>(
        &'a self,
        parent_id: &'a str,
        child_id: &'a str,
        message: &'a str,
        interrupt: bool,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(AgentService::send(self, parent_id, child_id, message, interrupt))
    }

    fn close<'a>(&'a self, parent_id: &'a str, child_id: &'a str) -> BoxFuture<'a, Result<AgentReport, AgentError>> {
        Box::pin(AgentService::close(self, parent_id, child_id))
    }
}
