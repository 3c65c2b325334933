//! The network of a command allowed to reach it (its template and the policy say so): a network
//! namespace of its own, connected to the outside by slirp4netns, a user-mode TCP/IP stack on
//! the host, with the host's loopback out of reach. Sharing the host's namespace instead would
//! hand the command every service listening on 127.0.0.1: this server's API, a database that
//! trusts local connections.
//!
//! bubblewrap makes the namespaces, writes its sandbox's PID to an info pipe and waits on a
//! block pipe; slirp4netns joins that PID's network namespace and brings up `tap0`; then the
//! block pipe releases the command. The sandbox holds the write end of slirp4netns's exit pipe,
//! so slirp4netns ends when the last process of the sandbox does. If slirp4netns cannot start,
//! the command runs with no network, and its output says why.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::{Command, Stdio};

use std::os::unix::process::CommandExt;

const SLIRP4NETNS: &str = "slirp4netns";

/// The pipes between the server, one bubblewrap process and its slirp4netns.
pub struct Handshake {
    /// bubblewrap writes its sandbox's PID here (`--info-fd`).
    info_for_sandbox: std::io::PipeWriter,
    info: std::io::PipeReader,
    /// bubblewrap waits until this is readable (`--block-fd`).
    block_for_sandbox: std::io::PipeReader,
    block: std::io::PipeWriter,
    /// slirp4netns ends when every copy of the write end, all in the sandbox, is closed.
    exit_for_sandbox: std::io::PipeWriter,
    exit: std::io::PipeReader,
}

impl Handshake {
    pub fn new() -> std::io::Result<Handshake> {
        let (info, info_for_sandbox) = std::io::pipe()?;
        let (block_for_sandbox, block) = std::io::pipe()?;
        let (exit, exit_for_sandbox) = std::io::pipe()?;
        Ok(Handshake { info_for_sandbox, info, block_for_sandbox, block, exit_for_sandbox, exit })
    }

    /// bubblewrap's options for the handshake.
    pub fn bubblewrap_args(&self) -> Vec<String> {
        vec![
            "--info-fd".into(),
            self.info_for_sandbox.as_raw_fd().to_string(),
            "--block-fd".into(),
            self.block_for_sandbox.as_raw_fd().to_string(),
        ]
    }

    /// The descriptors bubblewrap must inherit (their close-on-exec flag is cleared in the child).
    pub fn inherited(&self) -> [RawFd; 3] {
        [self.info_for_sandbox.as_raw_fd(), self.block_for_sandbox.as_raw_fd(), self.exit_for_sandbox.as_raw_fd()]
    }

    /// Once bubblewrap has started: connects its sandbox in the background and then releases
    /// the command. `tell` gets a line for the command's output when there is no network.
    pub fn connect(self, tell: impl FnOnce(String) + Send + 'static) {
        let Handshake { info_for_sandbox, mut info, block_for_sandbox, mut block, exit_for_sandbox, exit } = self;
        // Only the sandbox may hold these ends now: the server's copies would keep pipes open.
        drop((info_for_sandbox, block_for_sandbox, exit_for_sandbox));
        let spawned = std::thread::Builder::new().name("toolhost-netns".into()).spawn(move || {
            let slirp = sandbox_report(&mut info).and_then(|sandbox| attach(&sandbox, &exit));
            drop(exit);
            if let Err(why) = &slirp {
                // Told before the command runs, so that its output has it even if it ends at once.
                tracing::warn!(%why, "a workspace command runs without the network it was allowed");
                tell(format!("[toolhost: this command has no network: {why}]\n"));
            }
            // Released either way: without slirp4netns the command has only its own loopback.
            let _ = block.write_all(b"1");
            drop(block);
            // Reaped when the sandbox ends (and with it the exit pipe).
            if let Ok(mut slirp) = slirp {
                let _ = slirp.wait();
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread to connect a workspace command's network");
        }
    }
}

/// Clears the close-on-exec flag of `fds` (in a child between fork and exec).
pub fn inherit(fds: &[RawFd]) -> std::io::Result<()> {
    for fd in fds {
        // SAFETY: the descriptors belong to a `Handshake` that outlives the spawn.
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(*fd) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    Ok(())
}

/// The sandbox as bubblewrap reports it.
struct Sandbox {
    pid: u32,
    /// The inode of its network namespace.
    netns: u64,
}

/// What bubblewrap reports about its sandbox (`{"child-pid": N, "net-namespace": I, ...}`).
fn sandbox_report(info: &mut std::io::PipeReader) -> Result<Sandbox, String> {
    let mut text = Vec::new();
    let mut buffer = [0u8; 256];
    // Read up to the end of the object, not the end of the pipe: the sandbox keeps a copy.
    while !text.contains(&b'}') {
        match info.read(&mut buffer) {
            Ok(0) | Err(_) => return Err("bubblewrap did not report its sandbox".into()),
            Ok(n) => text.extend_from_slice(&buffer[..n]),
        }
        if text.len() > 4096 {
            return Err("bubblewrap's report is not what was expected".into());
        }
    }
    let end = text.iter().position(|b| *b == b'}').unwrap_or(text.len() - 1);
    let report: serde_json::Value = serde_json::from_slice(&text[..=end]).map_err(|e| format!("bubblewrap's report is not JSON: {e}"))?;
    match (report["child-pid"].as_u64(), report["net-namespace"].as_u64()) {
        (Some(pid), Some(netns)) => Ok(Sandbox { pid: pid as u32, netns }),
        _ => Err(format!("bubblewrap's report lacks child-pid or net-namespace: {report}")),
    }
}

/// The sandbox's network namespace, opened and checked against bubblewrap's report: should the
/// sandbox be killed meanwhile and its PID go to another process, that process's namespace
/// (perhaps the host's) must never be configured.
fn open_netns(sandbox: &Sandbox) -> Result<std::fs::File, String> {
    use std::os::unix::fs::MetadataExt;
    let gone = || "the sandbox ended before its network was up".to_string();
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", sandbox.pid)).map_err(|_| gone())?;
    let inode = netns.metadata().map_err(|e| e.to_string())?.ino();
    if inode != sandbox.netns {
        return Err(gone());
    }
    Ok(netns)
}

/// Starts slirp4netns on the sandbox's network namespace and waits until `tap0` is up.
fn attach(sandbox: &Sandbox, exit: &std::io::PipeReader) -> Result<std::process::Child, String> {
    let netns = open_netns(sandbox)?;
    let (mut ready, ready_for_slirp) = std::io::pipe().map_err(|e| e.to_string())?;
    let mut command = Command::new(SLIRP4NETNS);
    command
        .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg(format!("--ready-fd={}", ready_for_slirp.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit.as_raw_fd()));
    if !rustix::process::geteuid().is_root() {
        // Without privileges, slirp4netns gets its rights over the namespace by joining the
        // sandbox's user namespace, which this server's user owns.
        command.arg(format!("--userns-path=/proc/{}/ns/user", sandbox.pid));
    }
    // The namespace by a path, not by the PID: given a PID, slirp4netns also joins that
    // process's user namespace, and a bubblewrap started by root moves its sandbox into a new
    // one that has no rights over the network namespace (made before it, by root). The path is
    // the descriptor checked above, which slirp4netns inherits.
    command.arg("--netns-type=path").arg(format!("/proc/self/fd/{}", netns.as_raw_fd())).arg("tap0");
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let fds = [ready_for_slirp.as_fd().as_raw_fd(), exit.as_raw_fd(), netns.as_raw_fd()];
    // SAFETY: only fcntl between fork and exec.
    unsafe {
        command.pre_exec(move || inherit(&fds));
    }
    let mut child = command.spawn().map_err(|e| format!("slirp4netns cannot run ({e}); install it (`apt-get install slirp4netns`)"))?;
    drop((ready_for_slirp, netns));
    let mut signal = [0u8; 1];
    match ready.read(&mut signal) {
        Ok(1) => Ok(child),
        _ => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(format!("slirp4netns stopped before the network was up ({status})"))
        }
    }
}
