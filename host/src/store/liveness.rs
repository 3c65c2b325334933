//! Proof that a worker is alive, for PostgreSQL replicas: each worker holds a session-level
//! advisory lock named after it on a connection of its own. When its process dies, for any
//! reason, PostgreSQL ends the session and frees the lock, so any replica (or the same server
//! started again) can take back the dead worker's chats at once instead of waiting for their
//! heartbeats to go stale. SQLite has one server, which takes back every running chat at start.

use std::time::Duration;

use sqlx::Row;

use super::{Backend, Store, StoreResult};

/// How often the lock's connection is checked, and how long to wait before taking it again
/// after it was lost (while the database restarts, other replicas may take this worker's chats;
/// its writes then find it no longer owns them, and it stops those runs).
const KEEPALIVE: Duration = Duration::from_secs(1);

/// The advisory lock key of a worker: PostgreSQL's own stable text hash.
const KEY: &str = "hashtextextended('toolhost-worker:' || $1, 0)";

/// Holds the worker's lock while it lives; dropping it frees the lock.
pub struct WorkerLock {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WorkerLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Takes the worker's lock (PostgreSQL; `None` for SQLite) and keeps it, taking it again
    /// whenever its connection is lost.
    pub async fn hold_worker_lock(&self, worker_id: &str) -> StoreResult<Option<WorkerLock>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut connection = self.lock_worker(worker_id).await?;
        let store = self.clone();
        let worker_id = worker_id.to_string();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                if sqlx::query("SELECT 1").execute(&mut connection).await.is_ok() {
                    continue;
                }
                tracing::warn!(worker_id, "lost the connection that proves this worker alive; taking its lock again");
                loop {
                    match store.lock_worker(&worker_id).await {
                        Ok(fresh) => {
                            connection = fresh;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(worker_id, error = %e, "cannot take the worker's lock yet");
                            tokio::time::sleep(KEEPALIVE).await;
                        }
                    }
                }
            }
        });
        Ok(Some(WorkerLock { task }))
    }

    /// A connection of its own (outside the pool) holding the worker's lock.
    async fn lock_worker(&self, worker_id: &str) -> StoreResult<sqlx::AnyConnection> {
        let mut connection = self.pool.acquire().await?.detach();
        sqlx::query(&format!("SELECT pg_advisory_lock({KEY})")).bind(worker_id).execute(&mut connection).await?;
        Ok(connection)
    }

    /// The workers holding running chats whose process is gone (PostgreSQL; none for SQLite),
    /// but never `me`: a worker that lost its lock's connection is alive, and takes it again.
    pub async fn dead_workers(&self, me: &str) -> StoreResult<Vec<String>> {
        if self.backend != Backend::Postgres {
            return Ok(Vec::new());
        }
        let mut dead = Vec::new();
        let mut connection = self.pool.acquire().await?;
        for worker_id in self.running_workers().await?.into_iter().filter(|w| w != me) {
            // Taken only if nobody holds it, and then let go at once, in one statement so
            // that it is never left held by a pooled session.
            let row = sqlx::query(&format!(
                "SELECT CASE WHEN pg_try_advisory_lock({KEY}) THEN pg_advisory_unlock({KEY}) ELSE false END AS dead"
            ))
            .bind(&worker_id)
            .fetch_one(&mut *connection)
            .await?;
            if row.try_get::<bool, _>("dead")? {
                dead.push(worker_id);
            }
        }
        Ok(dead)
    }
}
