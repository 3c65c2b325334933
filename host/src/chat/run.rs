//! What one run of a chat's turn works with: the services the worker provides, the chat, and
//! its stop handle; how a turn ends when it does not simply finish; and storing its messages.
//!
//! The run's modules depend on this one and not on each other's callers: the worker starts
//! turns (`turn`), which compact (`compaction`) and call tools; none of them imports the worker.

use std::sync::Arc;

use super::runs::{RunHandle, StopReason};
use super::service::ChatService;
use crate::catalog::Catalog;
use crate::domain::{MessagePart, Role};
use crate::llm::retry::RetryPolicy;
use crate::plugins::PluginRuntime;
use crate::plugins::capabilities::agents::AgentBackend;
use crate::policy::PolicyEngine;
use crate::store::{Chat, Message, StoreError, TokenUsage};
use crate::workspace::WorkspaceService;

/// The services a chat's run uses. One set per server, shared by its worker's runs.
#[derive(Clone)]
pub struct RunServices {
    pub chats: Arc<ChatService>,
    pub runtime: Arc<PluginRuntime>,
    /// Which provider and model serve each chat.
    pub catalog: Arc<Catalog>,
    /// Which tools each chat sees and calls, and what they may use.
    pub policy: Arc<PolicyEngine>,
    /// Where chats' workspaces are made and their commands run.
    pub workspaces: Arc<WorkspaceService>,
    /// Child chats, for the `agents` capability.
    pub agents: Arc<dyn AgentBackend>,
    /// Secrets admins bound to plugins, for the `secrets` capability.
    pub secrets: Arc<dyn crate::plugins::capabilities::secrets::SecretSource>,
}

/// What the worker gives each run: its services, who is running it (the worker, whose
/// ownership of the chat every write checks) and the limits of a turn.
pub struct RunContext {
    pub services: RunServices,
    pub worker_id: String,
    /// How failed model calls are retried.
    pub retry: RetryPolicy,
    /// Model calls per turn at most.
    pub max_steps: usize,
    /// How long a tool call waits for a person's approval before it is denied.
    pub approval_timeout: std::time::Duration,
}

/// One run of one chat's turn.
pub struct Run<'a> {
    pub context: &'a RunContext,
    pub chat: &'a Chat,
    pub handle: &'a RunHandle,
}

/// How a turn ended, when it did not simply finish.
pub enum Stop {
    Interrupted,
    Shutdown,
    /// Another worker owns the chat now; this run must not touch it.
    LostOwnership,
    Failed(String),
    /// The provider refused the prompt as too long for the model: compacting may cure it.
    ContextTooLong(String),
    /// The database failed: the turn could not be stored or read.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

impl Run<'_> {
    pub fn services(&self) -> &RunServices {
        &self.context.services
    }

    /// How the turn ends now that its handle was stopped.
    pub fn stopped(&self) -> Stop {
        match self.handle.reason() {
            Some(StopReason::Shutdown) => Stop::Shutdown,
            Some(StopReason::Superseded) => Stop::LostOwnership,
            Some(StopReason::Interrupt) | None => Stop::Interrupted,
        }
    }

    /// Stores a message if this worker still owns the chat, and publishes it.
    pub async fn store_message(
        &self,
        role: Role,
        parts: &[MessagePart],
        model: Option<&str>,
        usage: Option<TokenUsage>,
    ) -> Result<Message, Stop> {
        let chats = &self.services().chats;
        let channel = chats.hub.channel(&self.chat.id);
        let mut guard = channel.lock().await;
        let worker = Some(self.context.worker_id.as_str());
        let Some(message) = chats.store.insert_message(&self.chat.id, worker, role, parts, model, usage).await? else {
            guard.clear_in_flight();
            return Err(Stop::LostOwnership);
        };
        guard.publish_message(&message);
        Ok(message)
    }
}
