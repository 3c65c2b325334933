//! Connecting to a desktop's sockets without being led elsewhere.
//!
//! The X server makes its sockets in folders its sandbox can write, so a process in there could
//! put a symbolic link, or a socket of its own, where the server's was. Followed blindly, the
//! host would then carry a viewer's bytes (or its own X requests) to whatever the link names on
//! the host: a database's socket, a container engine's. So the host connects only to a socket
//! (never through a link), and keeps the connection only if the process listening on it runs
//! below the desktop's sandbox.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::workspace::sandbox::descends_from;

/// Connects to the socket at `path`, which the desktop whose sandbox's first process is
/// `sandbox_pid` listens on. The error says what was wrong, for the operator's log.
pub fn connect(path: &Path, sandbox_pid: u32) -> Result<UnixStream, String> {
    let kind = std::fs::symlink_metadata(path).map_err(|e| format!("no socket at {}: {e}", path.display()))?;
    if !kind.file_type().is_socket() {
        return Err(format!("{} is not a socket (something in the desktop's sandbox replaced it)", path.display()));
    }
    let stream = UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    // Between the look and the connection the entry may have changed: who listens decides.
    let listener = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| format!("cannot tell who listens on {}: {e}", path.display()))?;
    let listener_pid = listener.pid.as_raw_nonzero().get() as u32;
    if !descends_from(listener_pid, sandbox_pid) {
        return Err(format!(
            "{} is served by process {listener_pid}, which is not the desktop's; refusing it",
            path.display()
        ));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_or_a_socket_of_another_process_tree_is_refused() {
        let folder = tempfile::tempdir().unwrap();
        let ours = folder.path().join("ours");
        let _listener = std::os::unix::net::UnixListener::bind(&ours).unwrap();
        let me = std::process::id();
        assert!(connect(&ours, me).is_ok(), "a socket this process listens on, below itself");

        let link = folder.path().join("link");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        let refused = connect(&link, me).unwrap_err();
        assert!(refused.contains("not a socket"), "{refused}");

        // This process does not run below a child of its own: as if a desktop's socket led to
        // one of the host's.
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let refused = connect(&ours, other.id()).unwrap_err();
        let _ = other.kill();
        let _ = other.wait();
        assert!(refused.contains("not the desktop's"), "{refused}");
    }
}
