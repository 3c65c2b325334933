//! One async lock per key (a chat tree, a workspace), for work that must not interleave for the
//! same key but may run in parallel for different ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Past this many keys, the locks nobody holds or waits for are dropped.
const PRUNE_ABOVE: usize = 1024;

#[derive(Default)]
pub struct KeyedLock {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLock {
    /// Waits for `key`'s lock; it is held until the guard drops.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > PRUNE_ABOVE {
                // Held or awaited locks have clones outside the map (in guards and waiters).
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Keys with a lock in the map.
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_key_waits_and_locks_nobody_uses_are_dropped() {
        let locks = Arc::new(KeyedLock::default());
        let held = locks.lock("busy").await;
        let wait_for_busy = || {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock("busy").await) })
        };
        let first = wait_for_busy();
        for n in 0..=PRUNE_ABOVE {
            drop(locks.lock(&format!("idle-{n}")).await);
        }
        assert!(locks.len() <= 3, "idle locks were dropped: {} left", locks.len());
        let second = wait_for_busy();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !first.is_finished() && !second.is_finished(),
            "a held lock survives pruning: the same key still waits"
        );
        drop(held);
        first.await.unwrap();
        second.await.unwrap();
    }
}
