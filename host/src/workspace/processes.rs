//! Background processes: started by a chat, read and signalled later by id. They live in this
//! server's memory and die with it (their sandboxes are tied to the server process).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use rustix::process::Signal;
use serde::Serialize;
use tokio::sync::mpsc;

use super::backend::RunningCommand;
use super::sandbox::Capture;
use crate::store::now_ms;

/// Finished processes kept per workspace, so their output can still be read.
const KEEP_FINISHED: usize = 32;

#[derive(Clone, Debug, Serialize)]
pub struct ProcessInfo {
    pub id: String,
    pub workspace_id: String,
    pub command: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub started_ms: i64,
    pub duration_ms: u64,
}

struct Entry {
    info: Mutex<ProcessInfo>,
    started: Instant,
    capture: Arc<Mutex<Capture>>,
    signals: mpsc::UnboundedSender<Signal>,
}

impl Entry {
    fn snapshot(&self) -> ProcessInfo {
        let mut info = self.info.lock().map(|i| i.clone()).unwrap_or_else(|e| e.into_inner().clone());
        if info.running {
            info.duration_ms = self.started.elapsed().as_millis() as u64;
        }
        info
    }
}

/// Every background process this server started, by id.
#[derive(Default)]
pub struct ProcessTable {
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
    next: std::sync::atomic::AtomicU64,
}

impl ProcessTable {
    /// Takes over a started command; a task waits for its end and delivers signals.
    pub fn adopt(&self, workspace_id: &str, command: &str, mut running: Box<dyn RunningCommand>) -> ProcessInfo {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = format!("proc-{number}");
        let info = ProcessInfo {
            id: id.clone(),
            workspace_id: workspace_id.to_string(),
            command: command.to_string(),
            running: true,
            exit_code: None,
            started_ms: now_ms(),
            duration_ms: 0,
        };
        let (signals, mut receive) = mpsc::unbounded_channel();
        let entry = Arc::new(Entry {
            info: Mutex::new(info.clone()),
            started: Instant::now(),
            capture: running.capture(),
            signals,
        });
        let watched = entry.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    code = running.wait() => break code,
                    Some(signal) = receive.recv() => running.signal(signal).await,
                }
            };
            running.finish_output().await;
            if let Ok(mut info) = watched.info.lock() {
                info.running = false;
                info.exit_code = status;
                info.duration_ms = watched.started.elapsed().as_millis() as u64;
            }
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(id, entry);
        prune(&mut entries, workspace_id);
        info
    }

    /// A process of `workspace_id` and its output so far.
    pub fn output(&self, workspace_id: &str, id: &str) -> Option<(ProcessInfo, String)> {
        let entry = self.find(workspace_id, id)?;
        let output = entry.capture.lock().map(|c| c.output().text).unwrap_or_default();
        Some((entry.snapshot(), output))
    }

    /// The processes of `workspace_id`, newest first.
    pub fn list(&self, workspace_id: &str) -> Vec<ProcessInfo> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<ProcessInfo> =
            entries.values().map(|e| e.snapshot()).filter(|i| i.workspace_id == workspace_id).collect();
        found.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        found
    }

    /// Signals a process; false when `workspace_id` has no such process.
    pub fn signal(&self, workspace_id: &str, id: &str, signal: Signal) -> bool {
        match self.find(workspace_id, id) {
            Some(entry) => {
                let _ = entry.signals.send(signal);
                true
            }
            None => false,
        }
    }

    /// Kills every running process of a workspace (it is stopping or being deleted).
    pub fn kill_all(&self, workspace_id: &str) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values().filter(|e| e.snapshot().workspace_id == workspace_id) {
            let _ = entry.signals.send(Signal::KILL);
        }
    }

    /// Kills every running process (the server is stopping).
    pub fn kill_everything(&self) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values() {
            let _ = entry.signals.send(Signal::KILL);
        }
    }

    /// Workspaces with a background process running.
    pub fn workspaces_with_running(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> =
            entries.values().map(|e| e.snapshot()).filter(|i| i.running).map(|i| i.workspace_id).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Whether any process is still running.
    pub fn any_running(&self) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.values().any(|e| e.snapshot().running)
    }

    fn find(&self, workspace_id: &str, id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(id).filter(|e| e.snapshot().workspace_id == workspace_id).cloned()
    }
}

/// Forgets the oldest finished processes of a workspace beyond [`KEEP_FINISHED`].
fn prune(entries: &mut BTreeMap<String, Arc<Entry>>, workspace_id: &str) {
    let mut finished: Vec<(i64, String)> = entries
        .iter()
        .map(|(id, e)| (id, e.snapshot()))
        .filter(|(_, info)| info.workspace_id == workspace_id && !info.running)
        .map(|(id, info)| (info.started_ms, id.clone()))
        .collect();
    if finished.len() > KEEP_FINISHED {
        finished.sort();
        for (_, id) in finished.iter().take(finished.len() - KEEP_FINISHED) {
            entries.remove(id);
        }
    }
}
