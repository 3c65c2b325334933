//! The runs of chats in this process, and the one handle by which each is told to stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why a run was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Interrupt,
    Shutdown,
    /// The chat was taken from the run (its history was edited): store nothing more.
    Superseded,
}

/// How a run learns that it is to stop, and why. Shared by the registry and the run.
#[derive(Debug, Default)]
pub struct RunHandle {
    stopped: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl RunHandle {
    /// Asks the run to stop. A later reason replaces an earlier one: a run interrupted and then
    /// superseded must store nothing more; one interrupted and then shut down is handed back.
    pub fn stop(&self, reason: StopReason) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.stopped.cancel();
    }

    /// Resolves once the run is asked to stop.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The runs in this process, by chat.
#[derive(Default)]
pub struct Runs {
    runs: Mutex<HashMap<String, Arc<RunHandle>>>,
}

impl Runs {
    pub(crate) fn register(&self, chat_id: &str) -> Arc<RunHandle> {
        let handle = Arc::new(RunHandle::default());
        self.lock().insert(chat_id.to_string(), handle.clone());
        handle
    }

    /// Forgets the run `register` returned `handle` for, and not a newer run of the same chat
    /// (which the worker may have started once this one settled the chat).
    pub(crate) fn finish(&self, chat_id: &str, handle: &Arc<RunHandle>) {
        let mut runs = self.lock();
        if runs.get(chat_id).is_some_and(|registered| Arc::ptr_eq(registered, handle)) {
            runs.remove(chat_id);
        }
    }

    pub(crate) fn stop(&self, chat_id: &str, reason: StopReason) {
        if let Some(handle) = self.lock().get(chat_id) {
            handle.stop(reason);
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        for handle in self.lock().values() {
            handle.stop(reason);
        }
    }

    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Whether this process runs the chat's turn (perhaps still winding it up).
    pub(crate) fn contains(&self, chat_id: &str) -> bool {
        self.lock().contains_key(chat_id)
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunHandle>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopped_run_keeps_the_latest_reason_and_a_finished_run_forgets_only_itself() {
        let runs = Runs::default();
        let first = runs.register("chat");
        runs.stop("chat", StopReason::Interrupt);
        runs.stop("chat", StopReason::Shutdown);
        first.stopped().await;
        assert_eq!(first.reason(), Some(StopReason::Shutdown));
        let second = runs.register("chat");
        runs.finish("chat", &first);
        assert!(runs.contains("chat"), "the newer run stays registered");
        assert_eq!(second.reason(), None);
        runs.finish("chat", &second);
        assert_eq!(runs.running(), 0);
    }
}
