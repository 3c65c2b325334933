//! The replicas sharing the database: who they are, where they are reached, and whether they
//! are alive (their heartbeat).

use sqlx::Row;

use super::{Store, StoreError, StoreResult, now_ms};

/// A server process registered in the database.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Replica {
    /// Its worker id: `chats.worker_id` of the chats it runs.
    pub id: String,
    /// The machine (data directory) it runs on; workspaces on that disk run only there.
    pub node_id: String,
    /// Where other replicas reach its relay endpoints (`http://host:port`).
    pub relay_address: Option<String>,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

fn replica_from(row: &sqlx::any::AnyRow) -> StoreResult<Replica> {
    Ok(Replica {
        id: row.try_get("id")?,
        node_id: row.try_get("node_id")?,
        relay_address: row.try_get("relay_address")?,
        version: row.try_get("version")?,
        started_at: row.try_get("started_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
    })
}

const REPLICA_COLUMNS: &str = "id, node_id, relay_address, version, started_at, heartbeat_at";

impl Store {
    /// Registers (or re-registers) a replica, alive now.
    pub async fn register_replica(
        &self,
        id: &str,
        node_id: &str,
        relay_address: Option<&str>,
        version: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO replicas (id, node_id, relay_address, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id) DO UPDATE SET relay_address = $3, heartbeat_at = $5",
        )
        .bind(id)
        .bind(node_id)
        .bind(relay_address)
        .bind(version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the replica is alive; false when its entry was removed (it expired).
    pub async fn heartbeat_replica(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE replicas SET heartbeat_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a replica's entry (at its shutdown).
    pub async fn remove_replica(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM replicas WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Removes the entries whose heartbeat is older than `stale_before`; returns their ids.
    pub async fn expire_replicas(&self, stale_before: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1 RETURNING id")
            .bind(stale_before)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get("id").map_err(StoreError::from)).collect()
    }

    /// A registered replica, if it is.
    pub async fn replica(&self, id: &str) -> StoreResult<Option<Replica>> {
        let row = sqlx::query(&format!("SELECT {REPLICA_COLUMNS} FROM replicas WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(replica_from).transpose()
    }

    /// Every registered replica, oldest first.
    pub async fn replicas(&self) -> StoreResult<Vec<Replica>> {
        let rows = sqlx::query(&format!("SELECT {REPLICA_COLUMNS} FROM replicas ORDER BY started_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(replica_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_registers_heartbeats_expires_and_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(dir.path())).await.unwrap();
        store.register_replica("worker-a", "node-1", Some("http://127.0.0.1:1"), "0.1.0").await.unwrap();
        store.register_replica("worker-b", "node-2", None, "0.1.0").await.unwrap();
        let a = store.replica("worker-a").await.unwrap().unwrap();
        assert_eq!((a.node_id.as_str(), a.relay_address.as_deref()), ("node-1", Some("http://127.0.0.1:1")));
        assert!(store.heartbeat_replica("worker-a").await.unwrap());
        assert_eq!(store.expire_replicas(a.heartbeat_at - 1).await.unwrap(), Vec::<String>::new());
        assert_eq!(store.expire_replicas(now_ms() + 1).await.unwrap().len(), 2, "both went stale");
        assert!(!store.heartbeat_replica("worker-a").await.unwrap(), "an expired replica learns it");
        store.register_replica("worker-a", "node-1", None, "0.1.0").await.unwrap();
        store.remove_replica("worker-a").await.unwrap();
        assert!(store.replicas().await.unwrap().is_empty());
    }
}
