//! A command that runs in the background in the sandbox.

use super::*;

/// A started command.
pub struct Running {
    pub child: tokio::process::Child,
    pub capture: Arc<Mutex<Capture>>,
    pub(super) output_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Removed once the command (and so everything in the group) is gone.
    pub(super) _group: Option<CommandGroup>,
}

impl Running {
    /// Kills the sandbox, and with it every process inside: bubblewrap, what runs below it
    /// (found before it dies, so that none is left behind should the sandbox's init lose its
    /// death signal), and whatever is left in the command's control group.
    pub async fn kill(&mut self) {
        let inside = self.child.id().map(descendants).unwrap_or_default();
        let _ = self.child.start_kill();
        for pid in inside.into_iter().filter_map(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait().await;
        if let Some(group) = &self._group {
            group.kill_all();
        }
    }

    /// Once the command has ended: kills whatever it left in its control group and waits
    /// (briefly) until the group is empty.
    pub async fn settle(&mut self) {
        if let Some(group) = &self._group {
            group.empty(Duration::from_secs(3)).await;
        }
    }

    /// Waits (briefly) for the last of the output, and returns what was kept.
    pub async fn finish_output(&mut self) -> Output {
        if let Some(done) = self.output_done.take() {
            // A process that escaped into the background would hold the pipe open; with the
            // sandbox gone there is none, but never wait long on it.
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
        self.output()
    }

    pub fn output(&self) -> Output {
        self.capture.lock().map(|c| c.output()).unwrap_or_default()
    }

    /// Sends `signal` to every process of the command (the sandbox's own processes stay, so
    /// the command's exit is still seen). `SIGKILL` kills the sandbox itself.
    pub async fn signal(&mut self, signal: rustix::process::Signal) {
        if signal == rustix::process::Signal::KILL {
            return self.kill().await;
        }
        let Some(root) = self.child.id() else { return };
        for pid in descendants(root) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }
}
