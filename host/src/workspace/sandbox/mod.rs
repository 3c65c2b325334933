//! Runs workspace commands inside bubblewrap: the workspace's files read-write at
//! `/workspace`, a home folder at `/home/agent`, the system read-only, a private `/tmp`, a
//! new user (uid 1000, no capabilities), PID, IPC, UTS and network namespace (connected to the
//! outside only when allowed, see `netns`), resource limits (CPU time, address space, processes, file
//! size), a seccomp filter (see `seccomp`), `/proc/sys` read-only, and the whole process tree
//! killed with the sandbox: bubblewrap's init dies with it, and the kernel then kills everything
//! left in its PID namespace.
//!
//! Who a command is on the host matters as much as who it is inside: the kernel checks writes
//! to `/proc/sys`, signals and files against the host identity its user namespace maps to. A
//! server running as root therefore never starts bubblewrap as root: it drops to a dedicated,
//! unprivileged host uid and gid (`[workspaces] sandbox_uid`/`sandbox_gid`) that owns nothing
//! but the workspaces' files, so files the host keeps from others (0600 under `/etc`, made
//! before or after the server started) are out of reach by ownership. A server that is not
//! root runs commands as its own user, which should then be an account of its own.
//!
//! Process count and memory are bounded for the whole command by a control group of its own
//! (see `cgroup`); CPU time per process and file size are rlimits set before bubblewrap
//! starts, which every process inside inherits. Without control groups (a server that may not
//! make them), memory falls back to an address-space rlimit and the process count to
//! `RLIMIT_NPROC` of the user commands run as (for a root server, the sandbox's own user, so it
//! bounds all workspaces' commands together); the start-up log says which applies.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::cgroup::{self, Cgroups, CommandGroup};
use super::confined::Owner;
use super::netns::{self, Handshake};

mod bwrap;
mod limits;
mod output;
mod usage;

pub use super::command::{Capture, CommandSpec, Completed, Output};
pub(in crate::workspace) use bwrap::become_user;
pub use bwrap::confine_workdir;
use bwrap::*;
pub use limits::CommandLimits;
use limits::*;
pub use output::Running;
pub use usage::descends_from;
use usage::*;

/// The only environment the helpers the server starts (bubblewrap, slirp4netns, `ip`,
/// `mount`) get: none of the server's own.
pub(super) const HELPER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the workspace's files appear inside the sandbox.
pub const WORKSPACE_MOUNT: &str = "/workspace";
const HOME_MOUNT: &str = "/home/agent";
/// How often a running command's disk use is measured against the quota.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How commands are confined. `unsandboxed` exists for machines where bubblewrap cannot run
/// and the operator accepts the risk; it is logged loudly at start and on every command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    #[default]
    Bubblewrap,
    Unsandboxed,
}

/// One workspace on the host: its id (naming its control group) and its folders.
#[derive(Clone, Debug)]
pub struct Mounts {
    pub id: String,
    pub files: PathBuf,
    pub home: PathBuf,
    /// The mount namespace its file system is mounted in (see `disk`), which commands join.
    pub namespace: Option<Arc<std::fs::File>>,
    /// Whether it has a file system of its own, whose size the kernel enforces.
    pub own_disk: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    Invalid(String),
    #[error("the command could not be started: {0}")]
    Spawn(String),
    #[error("commands cannot run: {0}")]
    Unavailable(String),
}

/// Starts confined commands.
#[derive(Clone, Debug)]
pub struct Sandbox {
    mode: SandboxMode,
    limits: CommandLimits,
    bwrap: PathBuf,
    /// System folders that are symbolic links on the host (`/bin -> usr/bin` on merged-/usr
    /// systems), recreated as links inside.
    system: Vec<(String, SystemPath)>,
    /// Where per-command control groups are made, when this server may make them.
    cgroups: Option<Cgroups>,
    /// Entries of the bound system folders that are not readable by everyone (`/etc/shadow`,
    /// `/etc/ssl/private`, ...). The sandbox's user maps to the server's, so without this it
    /// could read what only the server's user may: each is covered by an empty stand-in.
    hidden: Vec<(PathBuf, bool)>,
    /// For commands with network, when the host's resolver is on its loopback (out of their
    /// reach): a resolv.conf naming slirp4netns's DNS forwarder instead.
    resolv_conf: Option<(PathBuf, PathBuf)>,
    /// The host identity commands run as, when it is not the server's own (a root server).
    identity: Option<Owner>,
    /// Who slirp4netns runs as: the commands' identity where it may open `/dev/net/tun`
    /// (mode 0666, as udev makes it), else the server's user.
    network_helper: Option<Owner>,
    /// The seccomp programs every command runs under.
    seccomp: Vec<Vec<u8>>,
    /// Kernel interfaces under `/proc` that are made read-only inside (those this kernel has).
    proc_read_only: Vec<&'static str>,
}

#[derive(Clone, Debug)]
enum SystemPath {
    Link(String),
    Folder,
}

impl Sandbox {
    /// Checks that commands can be confined here: bubblewrap is installed and can create its
    /// namespaces. In `unsandboxed` mode nothing is checked and a warning is logged.
    pub async fn probe(mode: SandboxMode, limits: CommandLimits, identity: Owner) -> Result<Sandbox, SandboxError> {
        let system = ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt"]
            .iter()
            .filter_map(|name| {
                let path = Path::new("/").join(name);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).ok()?;
                    Some((name.to_string(), SystemPath::Link(target.to_string_lossy().into_owned())))
                } else if meta.is_dir() {
                    Some((name.to_string(), SystemPath::Folder))
                } else {
                    None
                }
            })
            .collect();
        let bwrap = which("bwrap").unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"));
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => {
                tracing::info!("workspace commands get a control group each (process and memory limits)");
                Some(cgroups)
            }
            Err(why) if rustix::process::geteuid().is_root() => {
                tracing::warn!(
                    %why,
                    "no control groups and running as root: memory is limited per process, and processes per sandbox user (all workspaces' commands together, RLIMIT_NPROC)"
                );
                None
            }
            Err(why) => {
                tracing::warn!(%why, "no control groups: memory is limited per process, processes per user (RLIMIT_NPROC)");
                None
            }
        };
        let hidden = ["/etc", "/opt"].iter().flat_map(|root| not_world_readable(Path::new(root))).collect();
        let resolv_conf = resolver_for_network();
        let identity = (rustix::process::geteuid().is_root() && mode == SandboxMode::Bubblewrap).then_some(identity);
        if identity.is_some_and(|i| i.uid == 0 || i.gid == 0) {
            return Err(SandboxError::Unavailable(
                "[workspaces] sandbox_uid and sandbox_gid must not be 0: commands would be root on the host".into(),
            ));
        }
        let seccomp = super::seccomp::compiled().map_err(SandboxError::Unavailable)?;
        tracing::debug!(refused = %super::seccomp::refused_names().join(", "), "workspace commands' seccomp filter");
        let proc_read_only = ["sys", "sysrq-trigger", "irq", "bus", "fs"]
            .into_iter()
            .filter(|name| Path::new("/proc").join(name).exists())
            .collect();
        let tun_shared = std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.mode() & 0o006 == 0o006);
        let network_helper = identity.filter(|_| tun_shared);
        if identity.is_some() && !tun_shared {
            tracing::warn!(
                "/dev/net/tun is not usable by other users (mode 0666), so slirp4netns, the network stack of commands allowed the network, runs as root; `chmod 0666 /dev/net/tun` lets it run as the sandbox's user"
            );
        }
        let sandbox = Sandbox {
            mode,
            limits,
            bwrap,
            system,
            cgroups,
            hidden,
            resolv_conf,
            identity,
            network_helper,
            seccomp,
            proc_read_only,
        };
        if mode == SandboxMode::Unsandboxed {
            tracing::warn!(
                "WORKSPACE COMMANDS RUN UNSANDBOXED: they can read and change anything this server's user can; use only on a machine dedicated to it"
            );
            return Ok(sandbox);
        }
        let scratch = tempfile_dir()?;
        // A group of its own: other servers on the machine probe at the same time.
        let probe_id = format!("probe-{}", crate::store::new_id());
        let mounts = Mounts {
            id: probe_id.clone(),
            files: scratch.join("files"),
            home: scratch.join("home"),
            namespace: None,
            own_disk: false,
        };
        for folder in [&mounts.files, &mounts.home] {
            std::fs::create_dir_all(folder)
                .map_err(|e| SandboxError::Unavailable(format!("cannot create {}: {e}", folder.display())))?;
        }
        if let Some(identity) = identity {
            super::confined::chown_tree(&scratch, identity).map_err(|e| {
                SandboxError::Unavailable(format!("cannot give {} to the sandbox's user: {e}", scratch.display()))
            })?;
            tracing::info!(
                uid = identity.uid,
                gid = identity.gid,
                "workspace commands run as an unprivileged host user"
            );
        }
        let spec = CommandSpec { command: "true".into(), ..CommandSpec::default() };
        let outcome = sandbox.run(&mounts, &spec, Duration::from_secs(20), &CancellationToken::new()).await;
        if let Some(cgroups) = &sandbox.cgroups {
            cgroups.remove_workspace(&probe_id);
        }
        let _ = std::fs::remove_dir_all(&scratch);
        match outcome {
            Ok(done) if done.exit_code == Some(0) => Ok(sandbox),
            Ok(done) => Err(SandboxError::Unavailable(format!(
                "bubblewrap could not create a sandbox{} ({}). Install it (`apt-get install bubblewrap`), allow unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu also `kernel.apparmor_restrict_unprivileged_userns=0`), or set `sandbox = \"unsandboxed\"` under [workspaces] to run commands without one",
                identity.map(|i| format!(" as the unprivileged user {}:{}", i.uid, i.gid)).unwrap_or_default(),
                done.output.text.trim()
            ))),
            Err(SandboxError::Spawn(e)) => Err(SandboxError::Unavailable(format!(
                "bubblewrap is not installed or cannot run ({e}). Install it (`apt-get install bubblewrap`), or set `sandbox = \"unsandboxed\"` under [workspaces] to run commands without one"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Drops what the sandbox keeps for a workspace that is being deleted.
    pub fn forget_workspace(&self, id: &str) {
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove_workspace(id);
        }
    }

    pub fn mode(&self) -> SandboxMode {
        self.mode
    }

    pub fn limits(&self) -> &CommandLimits {
        &self.limits
    }

    /// Who owns the workspaces' files: the host identity commands run as (`None`: the server's
    /// own user).
    pub fn owner(&self) -> Option<Owner> {
        self.identity
    }

    /// Runs `spec` to its end, or until `timeout`, until the workspace outgrows its disk quota,
    /// or until `cancel` (the workspace stops); the process tree is killed in the last three.
    pub async fn run(
        &self,
        mounts: &Mounts,
        spec: &CommandSpec,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Completed, SandboxError> {
        let mut running = self.start(mounts, spec)?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        let mut stopped_because = None;
        let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
        disk_check.tick().await;
        let status = loop {
            tokio::select! {
                status = running.child.wait() => break status.ok(),
                _ = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    running.kill().await;
                    break None;
                }
                _ = cancel.cancelled() => {
                    stopped_because = Some("the workspace was stopped".to_string());
                    running.kill().await;
                    break None;
                }
                _ = disk_check.tick() => {
                    if let Some(over) = self.over_quota(mounts).await {
                        stopped_because = Some(over);
                        running.kill().await;
                        break None;
                    }
                }
            }
        };
        running.settle().await;
        let output = running.finish_output().await;
        if stopped_because.is_none() {
            stopped_because = self.over_quota(mounts).await;
        }
        Ok(Completed {
            exit_code: status.and_then(|s| s.code()),
            output,
            duration_ms: started.elapsed().as_millis() as u64,
            timed_out,
            stopped_because,
        })
    }

    /// Starts `spec` and returns at once; the output is collected in the background.
    pub fn start(&self, mounts: &Mounts, spec: &CommandSpec) -> Result<Running, SandboxError> {
        let Prepared { mut command, output: mut reader, group, network, passed } = self.command(mounts, spec)?;
        let mut child = command.spawn().map_err(|e| SandboxError::Spawn(e.to_string()))?;
        // The parent's copies of the pipe's write end went with `command`; dropping it now
        // lets the reader see the end of the output when the sandbox is gone.
        drop((command, passed));
        let capture = Arc::new(Mutex::new(Capture::new((self.limits.output_kib * 1024) as usize)));
        if let Some(handshake) = network {
            let sink = capture.clone();
            let setup =
                netns::NetworkSetup { identity: self.network_helper, allowed: spec.private_destinations.clone() };
            handshake.connect(setup, move |line| {
                if let Ok(mut capture) = sink.lock() {
                    capture.push(line.as_bytes());
                }
            });
        }
        if let (Some(data), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&data).await;
            });
        }
        let sink = capture.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("toolhost-output".into())
            .spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = reader.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut capture) = sink.lock() {
                        capture.push(&buffer[..n]);
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| SandboxError::Spawn(format!("no thread to read its output: {e}")))?;
        Ok(Running { child, capture, output_done: Some(done_rx), _group: group })
    }

    /// A message when the workspace uses more disk than its quota.
    pub async fn over_quota(&self, mounts: &Mounts) -> Option<String> {
        if mounts.own_disk {
            // Its file system is the quota: the kernel refuses what would pass it.
            return None;
        }
        let limit = self.limits.disk_mib * 1024 * 1024;
        let max_files = self.limits.files;
        let folders = [mounts.files.clone(), mounts.home.clone()];
        let (used, files) = tokio::task::spawn_blocking(move || {
            folders.iter().map(|f| disk_usage(f, limit, max_files)).fold((0, 0), |(b, n), (b2, n2)| (b + b2, n + n2))
        })
        .await
        .ok()?;
        if used > limit {
            return Some(format!(
                "the workspace uses more than its disk quota of {} MiB; delete files to make room",
                self.limits.disk_mib
            ));
        }
        (files > max_files).then(|| {
            format!(
                "the workspace holds more than its quota of {max_files} files and folders; delete some to make room"
            )
        })
    }
}

/// Where `program` is: on the server's `PATH`, else in the system folders (a server's `PATH`
/// may lack `/usr/sbin`, where `mkfs.ext4` and `mount` live).
pub(super) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(HELPER_PATH.split(':').map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_head_and_the_tail_of_long_output() {
        let mut capture = Capture::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qrstuvwxyz"] {
            capture.push(chunk);
        }
        let output = capture.output();
        assert_eq!(output.total_bytes, 26);
        assert_eq!(output.omitted_bytes, 18);
        assert!(output.text.starts_with("abcd") && output.text.ends_with("wxyz"), "{}", output.text);
        assert!(output.text.contains("18 bytes of output left out"));
    }

    #[test]
    fn a_working_directory_must_stay_in_the_workspace() {
        assert_eq!(confine_workdir("src/lib").unwrap(), PathBuf::from("src/lib"));
        assert_eq!(confine_workdir("/workspace/src").unwrap(), PathBuf::from("src"));
        assert_eq!(confine_workdir("").unwrap(), PathBuf::from(""));
        assert!(confine_workdir("../etc").is_err());
        assert!(confine_workdir("/etc").unwrap_err().to_string().contains("outside the workspace"));
        assert!(confine_workdir("/workspacefoo").is_err(), "only /workspace itself and what is below it");
        assert_eq!(confine_workdir("/workspace").unwrap(), PathBuf::from(""));
    }
}
