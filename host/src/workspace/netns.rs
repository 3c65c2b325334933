//! The network of a command allowed to reach it (its template and the policy say so): a network
//! namespace of its own, connected to the outside by slirp4netns, a user-mode TCP/IP stack on
//! the host, with the host's loopback out of reach. Sharing the host's namespace instead would
//! hand the command every service listening on 127.0.0.1: this server's API, a database that
//! trusts local connections.
//!
//! bubblewrap makes the namespaces, writes its sandbox's PID to an info pipe and waits on a
//! block pipe; slirp4netns joins that PID's network namespace and brings up `tap0`; then the
//! block pipe releases the command. bubblewrap reports the PID before it sets up the sandbox's
//! loopback, and sets it up while the block pipe holds the command; so slirp4netns is not asked
//! to configure the namespace (`--configure` brings `lo` up too, and when it wins that race the
//! kernel gives `lo` its address first and bubblewrap's own setup fails, killing the command).
//! Toolhost configures `tap0` itself and never touches `lo`. The sandbox holds the write end of
//! slirp4netns's exit pipe,
//! so slirp4netns ends when the last process of the sandbox does. If slirp4netns cannot start,
//! the command runs with no network, and its output says why.
//!
//! Before the command is released, the namespace's routing table gets a `prohibit` route for
//! every range that is not the public internet (loopback, RFC 1918, link-local with the cloud
//! metadata address, CGNAT, documentation and benchmark ranges, multicast, and the IPv6
//! counterparts: ULA, link-local, NAT64, mapped forms), so connecting there fails at once with
//! "permission denied"; a destination the template names and the policy grants gets a route
//! of its own, which is more specific. The command has no capabilities in the namespace, so it
//! cannot change the routes. If they cannot be set, the command gets no network at all.
//! slirp4netns itself runs as the command's host identity, not as root.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::{Command, Stdio};

use std::os::unix::process::CommandExt;

use crate::net::NOT_PUBLIC;

const SLIRP4NETNS: &str = "slirp4netns";
/// slirp4netns's gateway, through which every route leaves.
const GATEWAY: &str = "10.0.2.2";
/// The command's address on slirp4netns's network (10.0.2.0/24, the gateway and DNS forwarder
/// at .2 and .3), the one slirp4netns itself would give.
const ADDRESS: &str = "10.0.2.100/24";
/// Large frames through the user-mode stack: fewer, cheaper trips for bulk transfers.
const MTU: &str = "65520";

/// How a command's network is set up: who slirp4netns runs as, and the private destinations
/// it may reach all the same.
#[derive(Clone, Debug, Default)]
pub struct NetworkSetup {
    pub identity: Option<super::confined::Owner>,
    pub allowed: Vec<String>,
}

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
    pub fn connect(self, setup: NetworkSetup, tell: impl FnOnce(String) + Send + 'static) {
        let Handshake { info_for_sandbox, mut info, block_for_sandbox, mut block, exit_for_sandbox, exit } = self;
        // Only the sandbox may hold these ends now: the server's copies would keep pipes open.
        drop((info_for_sandbox, block_for_sandbox, exit_for_sandbox));
        let spawned = std::thread::Builder::new().name("toolhost-netns".into()).spawn(move || {
            let slirp = sandbox_report(&mut info).and_then(|sandbox| {
                let netns = open_netns(&sandbox)?;
                let mut slirp = attach(&netns, &exit, &setup)?;
                // Fail closed: without the routes that keep it off private networks, no network.
                configure(&netns, &setup).inspect_err(|_| {
                    let _ = slirp.kill();
                    let _ = slirp.wait();
                })?;
                Ok(slirp)
            });
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
    let report: serde_json::Value =
        serde_json::from_slice(&text[..=end]).map_err(|e| format!("bubblewrap's report is not JSON: {e}"))?;
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

/// Starts slirp4netns on the sandbox's network namespace and waits until it has made `tap0`.
fn attach(
    netns: &std::fs::File,
    exit: &std::io::PipeReader,
    setup: &NetworkSetup,
) -> Result<std::process::Child, String> {
    let (mut ready, ready_for_slirp) = std::io::pipe().map_err(|e| e.to_string())?;
    let mut command = Command::new(SLIRP4NETNS);
    command.env_clear().env("PATH", super::sandbox::HELPER_PATH);
    command
        .arg(format!("--mtu={MTU}"))
        .arg("--disable-host-loopback")
        .arg(format!("--ready-fd={}", ready_for_slirp.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit.as_raw_fd()));
    // Without privileges, slirp4netns gets its rights over the namespace by joining the user
    // namespace that owns it, which its user (this server's, or the commands' host identity)
    // owns. Not the sandbox's own: bubblewrap runs the command in a second user namespace
    // nested in that one, with no rights over the network.
    let userns = match !rustix::process::geteuid().is_root() || setup.identity.is_some() {
        true => {
            let userns = owning_userns(netns)?;
            command.arg(format!("--userns-path=/proc/self/fd/{}", userns.as_raw_fd()));
            Some(userns)
        }
        false => None,
    };
    // The namespace by a path, not by the PID: given a PID, slirp4netns also joins that
    // process's user namespace, and a bubblewrap started by root moves its sandbox into a new
    // one that has no rights over the network namespace (made before it, by root). The path is
    // the descriptor checked above, which slirp4netns inherits.
    if rustix::process::geteuid().is_root() && setup.identity.is_none() {
        // Run as root (see `Sandbox::network_helper`): its own confinement then, a mount
        // namespace without the host's files, its capabilities dropped, a seccomp filter.
        // (Unprivileged, it cannot make them, and has nothing to drop.)
        command.args(["--enable-sandbox", "--enable-seccomp"]);
    }
    command.arg("--netns-type=path").arg(format!("/proc/self/fd/{}", netns.as_raw_fd())).arg("tap0");
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut fds = vec![ready_for_slirp.as_fd().as_raw_fd(), exit.as_raw_fd(), netns.as_raw_fd()];
    fds.extend(userns.as_ref().map(|f| f.as_raw_fd()));
    let identity = setup.identity;
    // SAFETY: only fcntl and the id system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            inherit(&fds)?;
            // A user-mode network stack parses what the command sends: never as root.
            match identity {
                Some(identity) => super::sandbox::become_user(identity),
                None => Ok(()),
            }
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("slirp4netns cannot run ({e}); install it (`apt-get install slirp4netns`)"))?;
    drop((ready_for_slirp, userns));
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

/// Brings `tap0` up with its address and default route, and sets the routes that keep the
/// command off everything but the public internet and the destinations it is allowed (see the
/// module's comment), from inside its namespace.
fn configure(netns: &std::fs::File, setup: &NetworkSetup) -> Result<(), String> {
    // IPv4 first, and all of it or no network: slirp4netns gives the command IPv4 only.
    let mut ipv4 = format!(
        "link set dev tap0 mtu {MTU} up\naddr add {ADDRESS} dev tap0\nroute add default via {GATEWAY} dev tap0\n"
    );
    for range in NOT_PUBLIC.iter().filter(|r| !r.contains(':')) {
        ipv4.push_str(&format!("route add prohibit {range}\n"));
    }
    for destination in &setup.allowed {
        ipv4.push_str(&format!("route replace {destination} via {GATEWAY} dev tap0\n"));
    }
    run_ip(netns, &ipv4, false)?;
    // IPv6 has no route out of the namespace; its prohibit routes guard the day it does, and
    // fail harmlessly where the kernel has IPv6 switched off.
    let ipv6: String =
        NOT_PUBLIC.iter().filter(|r| r.contains(':')).map(|range| format!("route add prohibit {range}\n")).collect();
    let _ = run_ip(netns, &ipv6, true);
    Ok(())
}

/// Runs `ip -batch` inside the namespace with `script`; with `force`, past failing lines.
fn run_ip(netns: &std::fs::File, script: &str, force: bool) -> Result<(), String> {
    // A server that is not root has rights over the namespace only inside the sandbox's user
    // namespace (its own); root has them anywhere.
    let userns = match rustix::process::geteuid().is_root() {
        true => None,
        false => Some(owning_userns(netns)?),
    };
    let mut command = Command::new("ip");
    command.env_clear().env("PATH", super::sandbox::HELPER_PATH);
    if force {
        command.arg("-force");
    }
    command.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let (net_fd, user_fd) = (netns.as_raw_fd(), userns.as_ref().map(|f| f.as_raw_fd()));
    // SAFETY: only setns between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some(user_fd) = user_fd
                && libc::setns(user_fd, libc::CLONE_NEWUSER) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child =
        command.spawn().map_err(|e| format!("`ip` cannot run ({e}); install it (`apt-get install iproute2`)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("cannot set its routes: {e}"))?;
    }
    let done = child.wait_with_output().map_err(|e| format!("cannot set its routes: {e}"))?;
    if !done.status.success() {
        return Err(format!("its routes could not be set: {}", String::from_utf8_lossy(&done.stderr).trim()));
    }
    Ok(())
}

/// The user namespace that owns a network namespace (`NS_GET_USERNS`).
fn owning_userns(netns: &std::fs::File) -> Result<std::fs::File, String> {
    use std::os::fd::FromRawFd;
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: the ioctl takes no argument and returns a new descriptor, owned from here on.
    let fd = unsafe { libc::ioctl(netns.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(format!("the sandbox's user namespace cannot be found: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}
