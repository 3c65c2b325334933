//! One async lock per key (a chat tree, say), for work that must not interleave for the same
//! key but may run in parallel for different ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct KeyedLock {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLock {
    /// Waits for `key`'s lock; it is held until the guard drops.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone();
        lock.lock_owned().await
    }
}
