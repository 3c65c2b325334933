//! The worker: takes pending chats, runs their turns, heartbeats, recovers chats whose worker
//! died, and hands its chats back on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::run::{RunContext, RunServices};
use super::runs::StopReason;
use super::service::ChatService;
use super::turn;
use crate::llm::retry::RetryPolicy;
use crate::store::now_ms;

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// How failed model calls are retried.
    pub retry: RetryPolicy,
    pub max_steps: usize,
    /// How long a tool call waits for a person's approval before it is denied.
    pub approval_timeout: Duration,
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
            approval_timeout: Duration::from_secs(crate::config::DEFAULT_APPROVAL_TIMEOUT_SECS),
            max_concurrent_chats: 256,
            heartbeat: Duration::from_secs(10),
            stale_after: Duration::from_secs(30),
            liveness: Duration::from_secs(5),
            poll: Duration::from_secs(2),
            recover_all_on_start: false,
        }
    }
}

/// Runs the chats of this process: what it gives each run is its [`RunContext`].
pub struct Worker {
    context: Arc<RunContext>,
    pub settings: WorkerSettings,
}

impl Worker {
    /// A worker with a new identity: another replica's, or a restarted server's, is different.
    pub fn new(services: RunServices, settings: WorkerSettings) -> Arc<Worker> {
        let context = RunContext {
            services,
            worker_id: format!("worker-{}", crate::store::new_id()),
            retry: settings.retry,
            max_steps: settings.max_steps,
            approval_timeout: settings.approval_timeout,
        };
        Arc::new(Worker { context: Arc::new(context), settings })
    }

    /// Who this worker is to the database (the owner of the chats it runs).
    pub fn id(&self) -> &str {
        &self.context.worker_id
    }

    pub fn services(&self) -> &RunServices {
        &self.context.services
    }

    fn chats(&self) -> &ChatService {
        &self.context.services.chats
    }

    /// Runs until `shutdown` is cancelled, then stops its runs and releases their chats.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let store = &self.chats().store;
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
            while runs.len() < self.settings.max_concurrent_chats + self.services().runtime.waiting_calls() {
                match store.acquire_chat(self.id(), self.services().workspaces.node_id()).await {
                    Ok(Some(chat)) => {
                        let context = self.context.clone();
                        runs.spawn(async move { turn::run_chat(&context, chat).await });
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
                _ = self.chats().wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll) => {}
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
                _ = heartbeat.tick() => self.heartbeat_all().await,
                _ = recovery.tick() => self.recover().await,
                _ = liveness.tick() => self.recover_from_dead_workers().await,
            }
        }
        self.chats().runs.stop_all(StopReason::Shutdown);
        while runs.join_next().await.is_some() {}
        match store.release_worker(self.id()).await {
            Ok(n) if n > 0 => {
                tracing::info!(chats = n, "gave running chats back to pending, for another replica or the next start");
                self.chats().wake_workers();
            }
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
            match self.chats().store.hold_worker_lock(self.id()).await {
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
        let store = &self.chats().store;
        let dead = match store.dead_workers(self.id()).await {
            Ok(dead) => dead,
            Err(e) => return tracing::warn!(error = %e, "cannot check which workers are alive"),
        };
        for worker_id in dead {
            match store.release_worker(&worker_id).await {
                Ok(n) if n > 0 => {
                    tracing::warn!(worker_id, chats = n, "took back the chats of a worker whose process is gone");
                    self.chats().wake_workers();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(worker_id, error = %e, "cannot take back the chats of a dead worker"),
            }
        }
    }

    async fn recover(&self) {
        self.recover_from_dead_workers().await;
        let stale_before = now_ms() - self.settings.stale_after.as_millis() as i64;
        match self.chats().store.recover_stale(stale_before).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(chats = ?ids, "recovered chats whose worker stopped heartbeating");
                self.chats().wake_workers();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "stale chat recovery failed"),
        }
    }

    async fn heartbeat_all(&self) {
        self.chats().hub.sweep();
        for chat_id in self.chats().runs.ids() {
            match self.chats().store.heartbeat(&chat_id, self.id()).await {
                Ok(true) => {}
                // Someone else took the chat, or it stopped running: the run stops.
                Ok(false) => self.chats().runs.stop(&chat_id, StopReason::Interrupt),
                Err(e) => tracing::warn!(chat_id, error = %e, "heartbeat failed"),
            }
        }
    }
}
