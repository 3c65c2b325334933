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
//! make them), memory falls back to an address-space rlimit and, for a server not running as
//! root, the process count to `RLIMIT_NPROC`; the start-up log says which applies.

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

/// Limits on every command; each process inside gets them, the disk quota applies to the whole
/// workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandLimits {
    /// CPU seconds per process.
    pub cpu_seconds: u64,
    /// Address space per process.
    pub memory_mib: u64,
    /// Processes (and threads) at once inside one sandbox.
    pub processes: u64,
    /// Largest file a command may write.
    pub file_size_mib: u64,
    /// Size of the private `/tmp`.
    pub tmp_mib: u64,
    /// Everything in the workspace (files and home); a command that grows it past this is
    /// stopped.
    pub disk_mib: u64,
    /// Files and folders in the workspace (empty files take no space, but inodes all the same).
    pub files: u64,
    /// Output kept per command (the first and last halves; the middle is counted, not kept).
    pub output_kib: u64,
}

impl Default for CommandLimits {
    fn default() -> CommandLimits {
        CommandLimits {
            cpu_seconds: 600,
            memory_mib: 4096,
            processes: 256,
            file_size_mib: 1024,
            tmp_mib: 512,
            disk_mib: 4096,
            files: 500_000,
            output_kib: 1024,
        }
    }
}

impl CommandLimits {
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("cpu_seconds", self.cpu_seconds),
            ("memory_mib", self.memory_mib),
            ("processes", self.processes),
            ("file_size_mib", self.file_size_mib),
            ("tmp_mib", self.tmp_mib),
            ("disk_mib", self.disk_mib),
            ("files", self.files),
            ("output_kib", self.output_kib),
        ] {
            if value == 0 {
                return Err(format!("[workspaces.limits] {name} must be at least 1"));
            }
        }
        if self.processes < 8 {
            return Err("[workspaces.limits] processes must be at least 8 (a shell and a pipe need a few)".into());
        }
        Ok(())
    }
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

/// One command to run.
#[derive(Clone, Debug, Default)]
pub struct CommandSpec {
    /// Run by `bash -c`.
    pub command: String,
    /// Relative to the workspace root; empty for the root.
    pub workdir: String,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Reach the network (the template and the policy allow it), through a namespace of its own.
    pub network: bool,
    /// Destinations off the public internet it may reach all the same (`10.1.2.3/32`).
    pub private_destinations: Vec<String>,
    /// Mount the workspace read-only (for the host's own inspections, like git watch).
    pub read_only: bool,
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

/// How a finished command ended.
#[derive(Clone, Debug, Serialize)]
pub struct Completed {
    pub exit_code: Option<i32>,
    pub output: Output,
    pub duration_ms: u64,
    pub timed_out: bool,
    /// Why the sandbox stopped the command, besides a timeout (the disk quota).
    pub stopped_because: Option<String>,
}

/// Output kept from a command: its beginning and its end when it was longer than the limit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Output {
    pub text: String,
    /// Bytes the command wrote in all.
    pub total_bytes: u64,
    /// Bytes left out of `text` (the middle).
    pub omitted_bytes: u64,
}

/// Collects output, keeping a head and a tail of bounded size however much arrives.
#[derive(Debug)]
pub struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    half: usize,
    total: u64,
}

impl Capture {
    pub fn new(limit_bytes: usize) -> Capture {
        let half = (limit_bytes / 2).max(1);
        Capture { head: Vec::new(), tail: std::collections::VecDeque::new(), half, total: 0 }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.half {
            let room = (self.half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
        }
        if bytes.len() >= self.half {
            self.tail.clear();
            bytes = &bytes[bytes.len() - self.half..];
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.half);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The output so far; `from` skips bytes already read (by a reader following along).
    pub fn output(&self) -> Output {
        let kept = self.head.len() as u64 + self.tail.len() as u64;
        let mut bytes = self.head.clone();
        let omitted = self.total - kept;
        if omitted > 0 {
            bytes.extend_from_slice(format!("\n[... {omitted} bytes of output left out ...]\n").as_bytes());
        }
        bytes.extend(self.tail.iter());
        Output { text: String::from_utf8_lossy(&bytes).into_owned(), total_bytes: self.total, omitted_bytes: omitted }
    }
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
        let cgroups = Cgroups::detect();
        match (&cgroups, rustix::process::geteuid().is_root()) {
            (Some(_), _) => tracing::info!("workspace commands get a control group each (process and memory limits)"),
            (None, false) => {
                tracing::warn!("no control groups: memory is limited per process, processes per user (RLIMIT_NPROC)")
            }
            (None, true) => tracing::warn!(
                "no control groups and running as root: the number of processes a workspace command starts is NOT limited; memory is limited per process"
            ),
        }
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

    /// The process for `spec`, not started. Its output (stdout and stderr together, in order)
    /// goes to the returned reader.
    fn command(&self, mounts: &Mounts, spec: &CommandSpec) -> Result<Prepared, SandboxError> {
        let workdir = confine_workdir(&spec.workdir)?;
        let root = super::confined::WorkspaceRoot { path: mounts.files.clone(), owner: self.identity };
        let workdir_is_folder = root
            .open()
            .and_then(|ws| ws.dir().metadata(if workdir.as_os_str().is_empty() { Path::new(".") } else { &workdir }))
            .is_ok_and(|m| m.is_dir());
        if !workdir_is_folder {
            return Err(SandboxError::Invalid(format!(
                "the working directory `{}` does not exist in the workspace",
                spec.workdir
            )));
        }
        for (name, _) in &spec.env {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(SandboxError::Invalid(format!(
                    "`{name}` is not a valid environment variable name (letters, digits and `_`, not starting with a digit)"
                )));
            }
        }
        let network = match (self.mode, spec.network) {
            (SandboxMode::Bubblewrap, true) => {
                Some(Handshake::new().map_err(|e| SandboxError::Spawn(format!("no pipes for its network: {e}")))?)
            }
            _ => None,
        };
        let mut passed = Vec::new();
        let mut command = match self.mode {
            SandboxMode::Bubblewrap => {
                self.adopt_workspace(mounts)?;
                let handed = self.handed_descriptors(mounts)?;
                let command = self.bubblewrap(&handed, spec, &workdir, network.as_ref());
                passed = handed.into_vec();
                command
            }
            SandboxMode::Unsandboxed => {
                tracing::warn!(command = %spec.command, "running a workspace command UNSANDBOXED");
                let mut command = tokio::process::Command::new("bash");
                command.env_clear().current_dir(mounts.files.join(&workdir));
                for (name, value) in base_environment(&mounts.home.to_string_lossy()) {
                    command.env(name, value);
                }
                command.envs(spec.env.iter().cloned()).arg("-c").arg(&spec.command);
                command
            }
        };
        let (reader, writer) =
            std::io::pipe().map_err(|e| SandboxError::Spawn(format!("no pipe for its output: {e}")))?;
        let writer_for_errors = writer.try_clone().map_err(|e| SandboxError::Spawn(e.to_string()))?;
        command
            .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_for_errors))
            .kill_on_drop(true)
            .process_group(0);
        let group = match &self.cgroups {
            Some(cgroups) => Some(
                cgroups
                    .create(
                        &mounts.id,
                        &format!("command-{}", crate::store::new_id()),
                        self.limits.processes,
                        self.limits.memory_mib * 1024 * 1024,
                    )
                    .map_err(|e| SandboxError::Spawn(format!("no control group for it: {e}")))?,
            ),
            None => None,
        };
        let joins = group.as_ref().map(CommandGroup::join_descriptors).unwrap_or_default();
        let rlimits = rlimits(&self.limits, group.is_some());
        let mut inherited: Vec<_> = network.as_ref().map(|h| h.inherited().to_vec()).unwrap_or_default();
        inherited.extend(passed.iter().map(|fd| fd.as_raw_fd()));
        let identity = self.identity;
        let namespace = mounts.namespace.clone();
        // SAFETY: only async-signal-safe system calls (write, setrlimit, fcntl, setns,
        // setgroups, setresgid, setresuid) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Where the workspace's own file system is mounted (it is nowhere else).
                if let Some(namespace) = &namespace
                    && libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNS) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Joined while still the server's user, which may move processes into groups.
                cgroup::join(&joins)?;
                netns::inherit(&inherited)?;
                apply_limits(&rlimits)?;
                match identity {
                    Some(identity) => become_user(identity),
                    None => Ok(()),
                }
            });
        }
        Ok(Prepared { command, output: reader, group, network, passed })
    }

    /// Gives the workspace's folders to the commands' host identity if something else owns them
    /// (workspaces made before commands ran as their own user).
    fn adopt_workspace(&self, mounts: &Mounts) -> Result<(), SandboxError> {
        let Some(identity) = self.identity else { return Ok(()) };
        for folder in [&mounts.files, &mounts.home] {
            let owned =
                std::fs::symlink_metadata(folder).is_ok_and(|m| m.uid() == identity.uid && m.gid() == identity.gid);
            if !owned {
                tracing::info!(workspace_id = %mounts.id, folder = %folder.display(), "giving a workspace's files to the sandbox's user");
                super::confined::chown_tree(folder, identity).map_err(|e| {
                    SandboxError::Spawn(format!("its files cannot be given to the sandbox's user: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// The descriptors bubblewrap gets: the workspace's folders (opened by the server, so that
    /// an unprivileged bubblewrap needs no way through the data directory) and the seccomp
    /// programs.
    fn handed_descriptors(&self, mounts: &Mounts) -> Result<Handed, SandboxError> {
        use rustix::fs::{Mode, OFlags};
        let open = |folder: &Path| {
            rustix::fs::open(
                folder,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SandboxError::Spawn(format!("cannot open {}: {e}", folder.display())))
        };
        let mut seccomp = Vec::new();
        for program in &self.seccomp {
            let (reader, mut writer) =
                std::io::pipe().map_err(|e| SandboxError::Spawn(format!("no pipe for its seccomp filter: {e}")))?;
            // A program is a few KiB, well within a pipe's buffer: written before bubblewrap
            // starts, read by it at once.
            std::io::Write::write_all(&mut writer, program)
                .map_err(|e| SandboxError::Spawn(format!("cannot pass its seccomp filter: {e}")))?;
            seccomp.push(std::os::fd::OwnedFd::from(reader));
        }
        Ok(Handed { files: open(&mounts.files)?, home: open(&mounts.home)?, seccomp })
    }

    fn bubblewrap(
        &self,
        handed: &Handed,
        spec: &CommandSpec,
        workdir: &Path,
        network: Option<&Handshake>,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bwrap);
        // Nothing of the server's environment (its keys, its database URL) may reach the
        // sandbox: bubblewrap's `--clearenv` clears the list but its init process, which the
        // command can read through /proc/1/environ, keeps the original strings.
        command.env_clear().env("PATH", HELPER_PATH);
        for (name, kind) in &self.system {
            let inside = format!("/{name}");
            match kind {
                SystemPath::Link(target) => command.args(["--symlink", target, &inside]),
                SystemPath::Folder => command.args(["--ro-bind", &inside, &inside]),
            };
        }
        // Under a host identity of their own, commands cannot read what others may not: the
        // kernel keeps them out by ownership, files made after the server started included.
        if self.identity.is_none() {
            for (path, is_dir) in &self.hidden {
                if *is_dir {
                    command.arg("--tmpfs").arg(path).arg("--remount-ro").arg(path);
                } else {
                    command.arg("--ro-bind").arg("/dev/null").arg(path);
                }
            }
        }
        let tmp_bytes = (self.limits.tmp_mib * 1024 * 1024).to_string();
        command.args(["--dev", "/dev", "--proc", "/proc"]);
        for name in &self.proc_read_only {
            let path = format!("/proc/{name}");
            command.args(["--ro-bind", &path, &path]);
        }
        command.args(["--size", &tmp_bytes, "--tmpfs", "/tmp"]);
        let bind = if spec.read_only { "--ro-bind-fd" } else { "--bind-fd" };
        command.args([bind, &handed.files.as_raw_fd().to_string(), WORKSPACE_MOUNT]);
        command.args([bind, &handed.home.as_raw_fd().to_string(), HOME_MOUNT]);
        command.args(["--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000", "--hostname", "workspace"]);
        if let Some(handshake) = network {
            command.args(handshake.bubblewrap_args());
            if let Some((file, place)) = &self.resolv_conf {
                command.arg("--ro-bind").arg(file).arg(place);
            }
        }
        for program in &handed.seccomp {
            command.args(["--add-seccomp-fd", &program.as_raw_fd().to_string()]);
        }
        command.args(["--die-with-parent", "--new-session", "--clearenv"]);
        for (name, value) in base_environment(HOME_MOUNT).into_iter().chain(spec.env.iter().cloned()) {
            command.arg("--setenv").arg(name).arg(value);
        }
        command.arg("--chdir").arg(Path::new(WORKSPACE_MOUNT).join(workdir));
        command.args(["--", "bash", "-c", &spec.command]);
        command
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

/// A command ready to start, and what must live until it has.
struct Prepared {
    command: tokio::process::Command,
    output: std::io::PipeReader,
    group: Option<CommandGroup>,
    network: Option<Handshake>,
    /// Descriptors bubblewrap inherits, closed once it has started.
    passed: Vec<std::os::fd::OwnedFd>,
}

/// What the server opens for bubblewrap.
struct Handed {
    files: std::os::fd::OwnedFd,
    home: std::os::fd::OwnedFd,
    seccomp: Vec<std::os::fd::OwnedFd>,
}

impl Handed {
    fn into_vec(self) -> Vec<std::os::fd::OwnedFd> {
        let mut all = vec![self.files, self.home];
        all.extend(self.seccomp);
        all
    }
}

/// Becomes `identity` for good (real, effective and saved ids; no supplementary groups).
pub(super) fn become_user(identity: Owner) -> std::io::Result<()> {
    // SAFETY: plain system calls on ids; called between fork and exec, where the child has
    // one thread.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(identity.gid, identity.gid, identity.gid) != 0
            || libc::setresuid(identity.uid, identity.uid, identity.uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A started command.
pub struct Running {
    pub child: tokio::process::Child,
    pub capture: Arc<Mutex<Capture>>,
    output_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Removed once the command (and so everything in the group) is gone.
    _group: Option<CommandGroup>,
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

/// The environment every command starts with: non-interactive, no pagers, no prompts.
fn base_environment(home: &str) -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("HOME", home),
        ("USER", "agent"),
        ("LANG", "C.UTF-8"),
        ("TERM", "dumb"),
        ("PAGER", "cat"),
        ("GIT_PAGER", "cat"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_EDITOR", "true"),
        ("EDITOR", "true"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("NO_COLOR", "1"),
        ("CI", "true"),
        ("TMPDIR", "/tmp"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A working directory relative to the workspace root; `/workspace/...` is accepted too.
pub fn confine_workdir(workdir: &str) -> Result<PathBuf, SandboxError> {
    let inside = workdir == WORKSPACE_MOUNT || workdir.starts_with(&format!("{WORKSPACE_MOUNT}/"));
    let trimmed = if inside { &workdir[WORKSPACE_MOUNT.len()..] } else { workdir }.trim_start_matches('/');
    if workdir.starts_with('/') && !inside {
        return Err(SandboxError::Invalid(format!(
            "the working directory `{workdir}` is outside the workspace; give a path relative to the workspace root (it is mounted at {WORKSPACE_MOUNT})"
        )));
    }
    let path = Path::new(trimmed);
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(SandboxError::Invalid(format!(
            "the working directory `{workdir}` must stay inside the workspace (no `..`)"
        )));
    }
    Ok(path.to_path_buf())
}

/// The rlimits for a command: CPU time, file size and no core dumps always; memory and
/// processes only when no control group bounds them (see the module's comment).
fn rlimits(limits: &CommandLimits, in_group: bool) -> Vec<(rustix::process::Resource, u64)> {
    use rustix::process::Resource;
    let mib = 1024 * 1024;
    let mut set =
        vec![(Resource::Cpu, limits.cpu_seconds), (Resource::Fsize, limits.file_size_mib * mib), (Resource::Core, 0)];
    if !in_group {
        set.push((Resource::As, limits.memory_mib * mib));
        if !rustix::process::geteuid().is_root() {
            set.push((Resource::Nproc, limits.processes));
        }
    }
    set
}

fn apply_limits(limits: &[(rustix::process::Resource, u64)]) -> std::io::Result<()> {
    use rustix::process::{Rlimit, setrlimit};
    for (resource, value) in limits {
        setrlimit(*resource, Rlimit { current: Some(*value), maximum: Some(*value) }).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Files and folders under `root` that others may not read (folders: not enter); a hidden
/// folder's contents are not listed. Symbolic links are not followed.
fn not_world_readable(root: &Path) -> Vec<(PathBuf, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut hidden = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    let mut budget = 100_000;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            budget -= 1;
            if budget == 0 {
                tracing::warn!(root = %root.display(), "too many files to check for secrets; the rest of this folder is shown as it is");
                return hidden;
            }
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                if mode & 0o005 != 0o005 {
                    hidden.push((entry.path(), true));
                } else {
                    pending.push(entry.path());
                }
            } else if meta.is_file() && mode & 0o004 == 0 {
                hidden.push((entry.path(), false));
            }
        }
    }
    hidden
}

/// Bytes on disk and entries under `folder` (walked through [`super::confined::walk_from`]:
/// symbolic links are never followed); stops counting past either limit.
fn disk_usage(folder: &Path, limit: u64, max_files: u64) -> (u64, u64) {
    let (mut used, mut files) = (0u64, 0u64);
    let walked = super::confined::walk_from(folder, |_, _, stat| {
        used += stat.st_blocks as u64 * 512;
        files += 1;
        Ok(used <= limit && files <= max_files)
    });
    match walked {
        Ok(()) => (used, files),
        Err(e) if folder.exists() => {
            // What cannot be measured (folders nested past the walk's depth) counts as over.
            tracing::warn!(folder = %folder.display(), error = %e, "a workspace cannot be measured; it is taken to be over its quota");
            (limit.saturating_add(1), files)
        }
        Err(_) => (used, files),
    }
}

/// Every process below `root`, found through each process's parent in /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // The parent is the second field after the command name, which is in parentheses
            // and may itself contain spaces.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, _) in parents.iter().filter(|(_, ppid)| *ppid == parent) {
            found.push(*pid);
            frontier.push(*pid);
        }
    }
    found
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

/// What commands with network see as `/etc/resolv.conf`: a file, and where to bind it (where
/// the host's `/etc/resolv.conf` leads). When the host's names a resolver on its loopback
/// (systemd-resolved's 127.0.0.53, say), out of their reach, a file naming slirp4netns's
/// forwarder instead (10.0.2.3, which asks the host's resolver). When it is a symbolic link
/// (into `/run`, which the sandbox does not have), its target, bound in place. `None` when the
/// host's file serves as it is.
fn resolver_for_network() -> Option<(PathBuf, PathBuf)> {
    let place = std::fs::canonicalize("/etc/resolv.conf").ok()?;
    let text = std::fs::read_to_string(&place).ok()?;
    let on_loopback = text.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).any(|a| {
        let address = a.trim();
        address.starts_with("127.") || address == "::1"
    });
    if !on_loopback {
        return (place != Path::new("/etc/resolv.conf")).then(|| (place.clone(), place));
    }
    // A new file of an unguessable name, never one planted in the shared temporary folder.
    let file = std::env::temp_dir().join(format!("toolhost-resolv-{}.conf", crate::store::new_id()));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&file).and_then(|mut f| {
        use std::io::Write;
        f.write_all(b"nameserver 10.0.2.3\n")
    });
    match written {
        Ok(()) => Some((file, place)),
        Err(e) => {
            tracing::warn!(error = %e, "commands with network will not resolve names: the host's resolver is on its loopback");
            None
        }
    }
}

fn tempfile_dir() -> Result<PathBuf, SandboxError> {
    let dir = std::env::temp_dir().join(format!("toolhost-probe-{}", crate::store::new_id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
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
