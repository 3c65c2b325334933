//! The bubblewrap command line for a command: mounts, namespaces, the environment, the
//! descriptors handed in, and the host identity it starts as.

use super::*;

impl Sandbox {
    /// The process for `spec`, not started. Its output (stdout and stderr together, in order)
    /// goes to the returned reader.
    pub(super) fn command(&self, mounts: &Mounts, spec: &CommandSpec) -> Result<Prepared, SandboxError> {
        let workdir = confine_workdir(&spec.workdir)?;
        let root = crate::workspace::confined::WorkspaceRoot { path: mounts.files.clone(), owner: self.identity };
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
                let handed = self.handed_descriptors(mounts, spec)?;
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
        let runs_as_root = self.identity.is_none() && rustix::process::geteuid().is_root();
        let rlimits = rlimits(&self.limits, group.is_some(), runs_as_root);
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
    pub(super) fn adopt_workspace(&self, mounts: &Mounts) -> Result<(), SandboxError> {
        let Some(identity) = self.identity else { return Ok(()) };
        for folder in [&mounts.files, &mounts.home] {
            let owned =
                std::fs::symlink_metadata(folder).is_ok_and(|m| m.uid() == identity.uid && m.gid() == identity.gid);
            if !owned {
                tracing::info!(workspace_id = %mounts.id, folder = %folder.display(), "giving a workspace's files to the sandbox's user");
                crate::workspace::confined::chown_tree(folder, identity).map_err(|e| {
                    SandboxError::Spawn(format!("its files cannot be given to the sandbox's user: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// The descriptors bubblewrap gets: the workspace's folders (opened by the server, so that
    /// an unprivileged bubblewrap needs no way through the data directory) and the seccomp
    /// programs.
    pub(super) fn handed_descriptors(&self, mounts: &Mounts, spec: &CommandSpec) -> Result<Handed, SandboxError> {
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
        let binds = spec
            .binds
            .iter()
            .map(|bind| open(&bind.host).map(|fd| (fd, bind.inside.clone(), bind.writable)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Handed { files: open(&mounts.files)?, home: open(&mounts.home)?, seccomp, binds })
    }

    pub(super) fn bubblewrap(
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
        // After the private /tmp, so that folders bound below it stay visible.
        for (folder, inside, writable) in &handed.binds {
            let how = if *writable { "--bind-fd" } else { "--ro-bind-fd" };
            command.args([how, &folder.as_raw_fd().to_string(), inside]);
        }
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
}

/// A command ready to start, and what must live until it has.
pub(super) struct Prepared {
    pub(super) command: tokio::process::Command,
    pub(super) output: std::io::PipeReader,
    pub(super) group: Option<CommandGroup>,
    pub(super) network: Option<Handshake>,
    /// Descriptors bubblewrap inherits, closed once it has started.
    pub(super) passed: Vec<std::os::fd::OwnedFd>,
}

/// What the server opens for bubblewrap.
pub(super) struct Handed {
    pub(super) files: std::os::fd::OwnedFd,
    pub(super) home: std::os::fd::OwnedFd,
    pub(super) seccomp: Vec<std::os::fd::OwnedFd>,
    /// Host folders and where they appear inside.
    pub(super) binds: Vec<(std::os::fd::OwnedFd, String, bool)>,
}

impl Handed {
    pub(super) fn into_vec(self) -> Vec<std::os::fd::OwnedFd> {
        let mut all = vec![self.files, self.home];
        all.extend(self.seccomp);
        all.extend(self.binds.into_iter().map(|(fd, _, _)| fd));
        all
    }
}

/// Becomes `identity` for good (real, effective and saved ids; no supplementary groups).
pub(in crate::workspace) fn become_user(identity: Owner) -> std::io::Result<()> {
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

/// The environment every command starts with: non-interactive, no pagers, no prompts.
pub(super) fn base_environment(home: &str) -> Vec<(String, String)> {
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

/// Files and folders under `root` that others may not read (folders: not enter); a hidden
/// folder's contents are not listed. Symbolic links are not followed.
pub(super) fn not_world_readable(root: &Path) -> Vec<(PathBuf, bool)> {
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

/// What commands with network see as `/etc/resolv.conf`: a file, and where to bind it (where
/// the host's `/etc/resolv.conf` leads). When the host's names a resolver on its loopback
/// (systemd-resolved's 127.0.0.53, say), out of their reach, a file naming slirp4netns's
/// forwarder instead (10.0.2.3, which asks the host's resolver). When it is a symbolic link
/// (into `/run`, which the sandbox does not have), its target, bound in place. `None` when the
/// host's file serves as it is.
pub(super) fn resolver_for_network() -> Option<(PathBuf, PathBuf)> {
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

pub(super) fn tempfile_dir() -> Result<PathBuf, SandboxError> {
    let dir = std::env::temp_dir().join(format!("toolhost-probe-{}", crate::store::new_id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}
