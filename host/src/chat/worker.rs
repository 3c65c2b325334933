//! The worker: takes pending chats, runs their turns, heartbeats, recovers chats whose worker
//! died, and hands its chats back on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::service::{ChatService, StopReason};
use super::turn;
use crate::catalog::Catalog;
use crate::llm::retry::RetryPolicy;
use crate::plugins::PluginRuntime;
use crate::policy::PolicyEngine;
use crate::store::now_ms;
use crate::workspace::WorkspaceService;

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How failed model calls are retried.
    pub retry: RetryPolicy,
    pub max_steps: usize,
    pub max_concurrent_chats: usize,
    pub heartbeat: Duration,
    /// A running chat whose heartbeat is older than this is given back to pending (a replica
    /// that vanished without its database session ending, such as a partitioned machine).
    pub stale_after: Duration,
    /// How often to look for running chats whose worker's process is gone (PostgreSQL: its
    /// lock is free), which are taken back at once.
    pub liveness: Duration,
    /// How often to look for pending chats when nothing wakes the worker.
    pub poll: Duration,
    /// At start, take back every running chat at once. Right for SQLite, where this is the only
    /// server; with PostgreSQL other replicas may be running them, so staleness decides.
    pub recover_all_on_start: bool,
}

impl Default for WorkerSettings {
    fn default() -> WorkerSettings {
        WorkerSettings {
            retry: RetryPolicy::default(),
            max_steps: 100,
            max_concurrent_chats: 256,
            heartbeat: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            liveness: Duration::from_secs(5),
            poll: Duration::from_secs(2),
            recover_all_on_start: false,
        }
    }
}

pub struct Worker {
    pub id: String,
    pub service: Arc<ChatService>,
    pub runtime: Arc<PluginRuntime>,
    /// Which provider and model serve each chat.
    pub catalog: Arc<Catalog>,
    /// Which tools each chat sees and calls, and what they may use.
    pub policy: Arc<PolicyEngine>,
    /// Where chats' workspaces are made and their commands run.
    pub workspaces: Arc<WorkspaceService>,
    /// Child chats, for the `agents` capability.
    pub agents: Arc<crate::agents::AgentService>,
    pub settings: WorkerSettings,
}

impl Worker {
    /// Runs until `shutdown` is cancelled, then stops its runs and releases their chats.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let store = &self.service.store;
        if self.settings.recover_all_on_start {
            match store.recover_all_running().await {
                Ok(n) if n > 0 => {
                    tracing::warn!(chats = n, "resuming chats that were running when the server last stopped")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot resume chats that were running when the server last stopped")
                }
            }
        }
        // Proof of life for other replicas, held before any chat is taken.
        let Some(_alive) = self.hold_lock(&shutdown).await else { return };
        self.recover().await;
        let mut runs = JoinSet::new();
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat);
        let mut recovery = tokio::time::interval(self.settings.stale_after / 2);
        let mut liveness = tokio::time::interval(self.settings.liveness);
        loop {
            // Chats whose turn waits on their subagents do not count: the subagents need the room.
            while runs.len() < self.settings.max_concurrent_chats + self.runtime.waiting_calls() {
                match store.acquire_chat(&self.id).await {
                    Ok(Some(chat)) => {
                        let worker = self.clone();
                        runs.spawn(async move { turn::run_chat(&worker, chat).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot acquire pending chats");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.service.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
                _ = heartbeat.tick() => self.heartbeat_all().await,
                _ = recovery.tick() => self.recover().await,
                _ = liveness.tick() => self.recover_from_dead_workers().await,
            }
        }
        self.service.runs.stop_all(StopReason::Shutdown);
        while runs.join_next().await.is_some() {}
        match store.release_worker(&self.id).await {
            Ok(n) if n > 0 => tracing::info!(chats = n, "gave running chats back to pending for the next start"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not give running chats back on shutdown; they are recovered when their heartbeat goes stale")
            }
        }
    }

    /// The worker's liveness lock (`Some(None)` where the backend needs none), taken again
    /// and again until the database gives it; `None` when shut down first.
    async fn hold_lock(&self, shutdown: &CancellationToken) -> Option<Option<crate::store::WorkerLock>> {
        loop {
            match self.service.store.hold_worker_lock(&self.id).await {
                Ok(lock) => return Some(lock),
                Err(e) => {
                    tracing::error!(error = %e, "cannot take this worker's liveness lock; no chat is run until it is held")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Chats held by workers whose process is gone go back to pending at once.
    async fn recover_from_dead_workers(&self) {
        let store = &self.service.store;
        let dead = match store.dead_workers(&self.id).await {
            Ok(dead) => dead,
            Err(e) => return tracing::warn!(error = %e, "cannot check which workers are alive"),
        };
        for worker_id in dead {
            match store.release_worker(&worker_id).await {
                Ok(n) if n > 0 => {
                    tracing::warn!(worker_id, chats = n, "took back the chats of a worker whose process is gone");
                    self.service.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(worker_id, error = %e, "cannot take back the chats of a dead worker"),
            }
        }
    }

    async fn recover(&self) {
        self.recover_from_dead_workers().await;
        let stale_before = now_ms() - self.settings.stale_after.as_millis() as i64;
        match self.service.store.recover_stale(stale_before).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(chats = ?ids, "recovered chats whose worker stopped heartbeating");
                self.service.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "stale chat recovery failed"),
        }
    }

    async fn heartbeat_all(&self) {
        self.service.hub.sweep();
        for chat_id in self.service.runs.ids() {
            match self.service.store.heartbeat(&chat_id, &self.id).await {
                Ok(true) => {}
                // Someone else took the chat, or it stopped running: the run stops.
                Ok(false) => self.service.runs.stop(&chat_id, StopReason::Interrupt),
                Err(e) => tracing::warn!(chat_id, error = %e, "heartbeat failed"),
            }
        }
    }
}
