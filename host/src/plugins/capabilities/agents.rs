//! Capability `agents`: child chats of the calling chat. Every use is checked against the
//! policy; the agent service checks ancestry and the configured limits.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability, ChatServices};
use crate::domain::ChatKind;
use crate::plugins::bindings::toolhost::plugin::agents::{
    self as wit, AgentError, AgentKind, AgentReport, AgentStatus,
};
use crate::store::{ChatStatus, StoreError};

#[derive(Debug, thiserror::Error)]
/// Why the agent service refused or failed a use (the capability turns it into the WIT error).
pub enum ServiceError {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a child is, and what it left for its parent.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub chat_id: String,
    pub title: String,
    pub status: ChatStatus,
    /// Its last assistant text.
    pub report: Option<String>,
    /// Its `last_error`, when its turn failed.
    pub error: Option<String>,
}

impl Report {
    pub fn finished(&self) -> bool {
        matches!(self.status, ChatStatus::Waiting | ChatStatus::Error)
    }
}

/// What the `agents` capability asks of the server: child chats of the calling chat. The chat
/// service implements it (`crate::agents::AgentService`); the capability knows only this.
pub trait AgentBackend: Send + Sync {
    /// Starts a child of `parent_id`; returns its id at once (its turn is pending).
    fn spawn<'a>(
        &'a self,
        parent_id: &'a str,
        prompt: &'a str,
        title: Option<&'a str>,
        kind: ChatKind,
    ) -> BoxFuture<'a, Result<String, ServiceError>>;
    /// Waits until each child has finished its turn, or `timeout` passes; every child's report.
    fn wait<'a>(
        &'a self,
        parent_id: &'a str,
        child_ids: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Report>, ServiceError>>;
    /// Sends a message to a descendant: queued behind a running turn, or (`interrupt`) run next.
    fn send<'a>(
        &'a self,
        parent_id: &'a str,
        child_id: &'a str,
        message: &'a str,
        interrupt: bool,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Stops a descendant's turn and archives it; its last report.
    fn close<'a>(&'a self, parent_id: &'a str, child_id: &'a str) -> BoxFuture<'a, Result<Report, ServiceError>>;
}

pub struct Agents;

impl Capability for Agents {
    const NAME: &'static str = "agents";
    // Its state is the chat's services, shared by the capabilities that reach them.
    type State = ();

    fn new_state(_: &CallSetup) {}

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl CallState {
    /// The grant, then the chat's services (an owned copy: the call's state is not `Sync`, so
    /// no borrow of it may live across an await).
    fn agents_access(&self) -> Result<ChatServices, AgentError> {
        self.grants.require(Agents::NAME, &self.identity.plugin).map_err(AgentError::Denied)?;
        self.chat
            .clone()
            .ok_or_else(|| AgentError::Failed("agents are available only to tools called from a chat".into()))
    }
}

impl wit::Host for CallState {
    async fn spawn(&mut self, prompt: String, title: Option<String>, kind: AgentKind) -> Result<String, AgentError> {
        let access = self.agents_access()?;
        let kind = match kind {
            AgentKind::Subagent => ChatKind::Subagent,
            AgentKind::ComputerUse => ChatKind::ComputerUse,
        };
        access.agents.spawn(&access.scope.chat_id, &prompt, title.as_deref(), kind).await.map_err(to_wit)
    }

    async fn wait(&mut self, chat_ids: Vec<String>, timeout_ms: u64) -> Result<Vec<AgentReport>, AgentError> {
        let access = self.agents_access()?;
        let host_waits = self.host_waits.clone();
        let wait = access.agents.wait(&access.scope.chat_id, &chat_ids, Duration::from_millis(timeout_ms));
        // Taking a running slot back after the wait is host time too.
        let reports = host_waits.during(self.slot.clone().while_waiting(wait)).await;
        Ok(reports.map_err(to_wit)?.into_iter().map(report).collect())
    }

    async fn send(&mut self, chat_id: String, message: String, interrupt: bool) -> Result<(), AgentError> {
        let access = self.agents_access()?;
        access.agents.send(&access.scope.chat_id, &chat_id, &message, interrupt).await.map_err(to_wit)
    }

    async fn close(&mut self, chat_id: String) -> Result<AgentReport, AgentError> {
        let access = self.agents_access()?;
        access.agents.close(&access.scope.chat_id, &chat_id).await.map(report).map_err(to_wit)
    }
}

fn report(report: Report) -> AgentReport {
    AgentReport {
        chat_id: report.chat_id,
        title: report.title,
        status: match report.status {
            ChatStatus::Pending => AgentStatus::Pending,
            ChatStatus::Running => AgentStatus::Running,
            ChatStatus::Waiting => AgentStatus::Waiting,
            ChatStatus::Error => AgentStatus::Error,
        },
        report: report.report,
        error: report.error,
    }
}

fn to_wit(error: ServiceError) -> AgentError {
    match error {
        ServiceError::Denied(m) => AgentError::Denied(m),
        ServiceError::NotFound(m) => AgentError::NotFound(m),
        ServiceError::Invalid(m) => AgentError::Invalid(m),
        ServiceError::Limit(m) => AgentError::Limit(m),
        ServiceError::Failed(m) => AgentError::Failed(m),
        ServiceError::Store(e) => AgentError::Failed(super::database_failed(&e, "agents")),
    }
}
