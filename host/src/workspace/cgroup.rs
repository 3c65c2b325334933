//! A control group per command: the kernel then bounds the number of processes and the memory
//! of everything the command starts, together. (An rlimit cannot do this: `RLIMIT_NPROC` counts
//! every process of the user the sandbox maps to, which for a server running as root is every
//! root process on the machine.)
//!
//! Works with cgroup v1 (the `pids` and `memory` hierarchies) and v2 (the unified hierarchy
//! with both controllers enabled). Groups live under `<hierarchy>/toolhost/<workspace>/`: the
//! workspace's group carries the limits for all its commands together (foreground and
//! background), and each command's group the same limits for itself.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "toolhost";

/// One hierarchy and the limit files written in each of its groups.
#[derive(Clone, Debug)]
struct Hierarchy {
    parent: PathBuf,
    /// (file, which limit): `pids.max` takes the process count, the others bytes.
    limits: Vec<(&'static str, Limit)>,
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    Processes,
    MemoryBytes,
}

/// The hierarchies this server can make groups in.
#[derive(Clone, Debug)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    /// cgroup v2: one hierarchy, controllers enabled per level.
    unified: bool,
}

/// How old an empty group must be to count as left behind.
const LEFTOVER_AGE: Duration = Duration::from_secs(120);

impl Cgroups {
    /// Finds writable hierarchies with the `pids` and `memory` controllers; the reason when this
    /// process cannot make groups (not root, no delegation, controllers missing).
    pub fn detect() -> Result<Cgroups, String> {
        let root = Path::new(ROOT);
        let unified = root.join("cgroup.controllers").exists();
        let hierarchies = if unified {
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
                .map_err(|e| format!("cannot read {ROOT}/cgroup.controllers: {e}"))?;
            if !(controllers.contains("pids") && controllers.contains("memory")) {
                return Err(format!(
                    "the pids and memory controllers are not both available (have: {})",
                    controllers.trim()
                ));
            }
            let parent = root.join(PARENT);
            create_folder(&parent)?;
            // Groups below ours need the controllers enabled at each level.
            for level in [root, parent.as_path()] {
                write_file(&level.join("cgroup.subtree_control"), "+pids +memory")?;
            }
            vec![Hierarchy { parent, limits: vec![("pids.max", Limit::Processes), ("memory.max", Limit::MemoryBytes)] }]
        } else {
            let pids = root.join("pids").join(PARENT);
            let memory = root.join("memory").join(PARENT);
            create_folder(&pids)?;
            create_folder(&memory)?;
            vec![
                Hierarchy { parent: pids, limits: vec![("pids.max", Limit::Processes)] },
                Hierarchy { parent: memory, limits: vec![("memory.limit_in_bytes", Limit::MemoryBytes)] },
            ]
        };
        let cgroups = Cgroups { hierarchies, unified };
        cgroups.remove_leftovers();
        // Prove it: make (and drop) a group. Its name is unique to this call: several sandboxes
        // probe at once in one process (each test server makes its own), and a shared name made
        // all but the first of them run without groups, so without a process limit.
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let name = format!("probe-{}-{}", std::process::id(), PROBES.fetch_add(1, Ordering::Relaxed));
        cgroups
            .create("probe", &name, 16, 64 * 1024 * 1024)
            .map_err(|e| format!("cannot make a group under {}: {e}", cgroups.hierarchies[0].parent.display()))?;
        Ok(cgroups)
    }

    /// Empty groups a previous run left behind (a crash, a kill -9). Only old ones: the
    /// hierarchy is shared by every server on the machine, and another server's group that was
    /// made a moment ago is empty until its command joins it.
    fn remove_leftovers(&self) {
        let old = |path: &Path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > LEFTOVER_AGE)
        };
        for hierarchy in &self.hierarchies {
            let Ok(workspaces) = std::fs::read_dir(&hierarchy.parent) else { continue };
            for workspace in workspaces.flatten().filter(|e| e.path().is_dir()) {
                if let Ok(commands) = std::fs::read_dir(workspace.path()) {
                    for command in commands.flatten().filter(|e| e.path().is_dir() && old(&e.path())) {
                        let _ = std::fs::remove_dir(command.path());
                    }
                }
                if old(&workspace.path()) {
                    let _ = std::fs::remove_dir(workspace.path());
                }
            }
        }
    }

    /// A new group for one command of `workspace`, both groups with these limits.
    pub fn create(
        &self,
        workspace: &str,
        name: &str,
        processes: u64,
        memory_bytes: u64,
    ) -> std::io::Result<CommandGroup> {
        let mut group = CommandGroup { folders: Vec::new(), procs: Vec::new() };
        for hierarchy in &self.hierarchies {
            let parent = hierarchy.parent.join(workspace);
            if !parent.is_dir() {
                std::fs::create_dir_all(&parent)?;
                write_limits(&parent, &hierarchy.limits, processes, memory_bytes)?;
                if self.unified {
                    // cgroup v2: the command groups below need the controllers enabled here.
                    std::fs::write(parent.join("cgroup.subtree_control"), "+pids +memory")?;
                }
            }
            let folder = parent.join(name);
            std::fs::create_dir(&folder)?;
            group.folders.push(folder.clone());
            write_limits(&folder, &hierarchy.limits, processes, memory_bytes)?;
            group.procs.push(std::fs::OpenOptions::new().write(true).open(folder.join("cgroup.procs"))?);
        }
        Ok(group)
    }

    /// Removes a workspace's group (it is being deleted; its commands are gone).
    pub fn remove_workspace(&self, workspace: &str) {
        for hierarchy in &self.hierarchies {
            let _ = std::fs::remove_dir(hierarchy.parent.join(workspace));
        }
    }
}

fn write_limits(
    folder: &Path,
    limits: &[(&'static str, Limit)],
    processes: u64,
    memory_bytes: u64,
) -> std::io::Result<()> {
    for (file, limit) in limits {
        let value = match limit {
            Limit::Processes => processes,
            Limit::MemoryBytes => memory_bytes,
        };
        std::fs::write(folder.join(file), value.to_string())?;
    }
    Ok(())
}

/// A command's group; removed when dropped (its processes are gone by then).
#[derive(Debug)]
pub struct CommandGroup {
    folders: Vec<PathBuf>,
    /// `cgroup.procs` of each folder, opened before the fork: the child only writes.
    procs: Vec<File>,
}

impl CommandGroup {
    /// The descriptors a child writes `0` to, to join the group itself.
    pub fn join_descriptors(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Kills every process left in the group, whatever namespace it is in or whoever its
    /// parent became: the sandbox's own death signal is not to be relied on (bubblewrap's
    /// init loses it when it moves into its nested user namespace).
    pub fn kill_all(&self) {
        for folder in &self.folders {
            // cgroup v2 since Linux 5.14: one write kills the whole group, forks included.
            if std::fs::write(folder.join("cgroup.kill"), "1").is_ok() {
                continue;
            }
            // Otherwise by PID, again until nothing is left (a process may fork meanwhile).
            for _ in 0..50 {
                let pids: Vec<i32> = std::fs::read_to_string(folder.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids.into_iter().filter_map(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl CommandGroup {
    /// Kills what is left of the command and waits, at most `timeout`, until the kernel has
    /// emptied the group. A command's processes are then gone when its run returns, and the next
    /// command does not meet their remains. A fork bomb's children that are still dying count
    /// against the sandbox user's process limit, and `execve` of the next command fails with
    /// EAGAIN.
    pub async fn empty(&self, timeout: Duration) {
        self.kill_all();
        let deadline = tokio::time::Instant::now() + timeout;
        for folder in &self.folders {
            while populated(folder) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Whether a group still has processes: `populated 1` in its `cgroup.events` (v2), a process
/// in its `cgroup.procs` (v1, which has no events file).
fn populated(folder: &Path) -> bool {
    match std::fs::read_to_string(folder.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l == "populated 1"),
        Err(_) => std::fs::read_to_string(folder.join("cgroup.procs")).is_ok_and(|procs| !procs.trim().is_empty()),
    }
}

fn create_folder(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Joins the groups; called in the child between fork and exec (only a `write` per group).
pub fn join(descriptors: &[RawFd]) -> std::io::Result<()> {
    for fd in descriptors {
        // SAFETY: the descriptors stay open in the parent until the child has exec'd.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        rustix::io::write(fd, b"0").map_err(std::io::Error::from)?;
    }
    Ok(())
}

impl Drop for CommandGroup {
    fn drop(&mut self) {
        // The command is over: nothing of it may outlive it.
        self.kill_all();
        let folders = std::mem::take(&mut self.folders);
        self.procs.clear();
        // The kernel empties a group a moment after its last process dies; retry briefly.
        let remove = move || {
            for folder in folders.iter().rev() {
                for _ in 0..40 {
                    match std::fs::remove_dir(folder) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        };
        let _ = std::thread::Builder::new().name("toolhost-cgroup".into()).spawn(remove);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (as CI runs): only root may make control groups here.
    #[test]
    fn sandboxes_probing_at_once_in_one_process_all_get_control_groups() {
        let probes: Vec<_> = (0..8).map(|_| std::thread::spawn(Cgroups::detect)).collect();
        for probe in probes {
            let detected = probe.join().expect("the probe thread ends");
            assert!(detected.is_ok(), "every sandbox gets its process limit: {:?}", detected.err());
        }
    }
}
