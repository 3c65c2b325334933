//! Disk quotas the kernel enforces. On a server running as root, each workspace's files and
//! home live on a file system of their own: a sparse ext4 image (`<id>.img` beside the
//! workspace's folder) of `disk_mib` plus its metadata, with `files` inodes, loop-mounted
//! `nosuid,nodev` on the folder. A command that fills it gets "No space left on device" from
//! the kernel: it can use at most `disk_mib` (the journal and inode tables are on top), and
//! `fallocate` cannot run past it. Nothing is written to the image but what commands write,
//! so an idle workspace takes a few MiB of the host's disk.
//!
//! The mounts live in a mount namespace of the server's own, held by a keeper process (`cat`
//! on a pipe from the server). When the server ends, however it ends, the pipe closes, the
//! keeper exits, the kernel unmounts everything and the loop devices detach themselves: no
//! mount outlives the server, and nothing outside it sees them. The server reaches the files
//! through the keeper's root (`/proc/<keeper>/root`, held open as a descriptor, so that a
//! reused PID can never lead elsewhere) and starts commands inside that namespace.
//!
//! Where this cannot be had (a server that is not root, no loop devices, no `mkfs.ext4`, or a
//! workspace made before), the quota is measured instead (see `sandbox::over_quota`).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::confined::Owner;

/// The journal of each workspace's file system.
const JOURNAL_MIB: u64 = 4;
/// Bytes of inode table per file (`mkfs.ext4 -I`).
const INODE_BYTES: u64 = 256;

/// The private mount namespace and what is mounted in it.
pub struct Disks {
    tools: Tools,
    keeper: Mutex<Keeper>,
    /// Workspaces whose file system is mounted in the keeper's namespace.
    mounted: Mutex<HashSet<String>>,
}

/// Where the file system tools are (in `/usr/sbin`, which a server's `PATH` may lack).
struct Tools {
    mkfs: PathBuf,
    mount: PathBuf,
    umount: PathBuf,
}

struct Keeper {
    process: Child,
    /// Holding it keeps the keeper alive; the server's end closes with the server.
    _lifeline: ChildStdin,
    /// The keeper's root directory, through which the server reaches the mounts.
    root: OwnedFd,
    /// The keeper's mount namespace, which commands join.
    namespace: Arc<std::fs::File>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Keeper {
    fn start() -> io::Result<Keeper> {
        let mut command = Command::new("cat");
        command
            .env_clear()
            .env("PATH", super::sandbox::HELPER_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only unshare and mount between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Nothing mounted here reaches the host's namespace, and the other way round.
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut process = command.spawn()?;
        let lifeline = process.stdin.take().ok_or_else(|| io::Error::other("the keeper has no stdin"))?;
        let pid = process.id();
        use rustix::fs::{Mode, OFlags};
        let root = rustix::fs::open(
            format!("/proc/{pid}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let namespace = Arc::new(std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?);
        Ok(Keeper { process, _lifeline: lifeline, root, namespace })
    }

    fn alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

impl Disks {
    /// Kernel-enforced quotas, when this server may have them: root, loop devices, the tools.
    pub fn probe() -> Option<Disks> {
        if !rustix::process::geteuid().is_root() {
            tracing::warn!(
                "not running as root: workspace disk quotas are measured every second, not enforced by the kernel"
            );
            return None;
        }
        let which = super::sandbox::which;
        let (mkfs, mount, umount) = (which("mkfs.ext4"), which("mount"), which("umount"));
        let (Some(mkfs), Some(mount), Some(umount)) = (mkfs, mount, umount) else {
            tracing::warn!(
                "mkfs.ext4, mount or umount is missing: workspace disk quotas are measured every second, not enforced by the kernel (install e2fsprogs and mount)"
            );
            return None;
        };
        if !Path::new("/dev/loop-control").exists() {
            tracing::warn!(
                "no loop devices (/dev/loop-control): workspace disk quotas are measured every second, not enforced by the kernel"
            );
            return None;
        }
        match Keeper::start() {
            Ok(keeper) => Some(Disks {
                tools: Tools { mkfs, mount, umount },
                keeper: Mutex::new(keeper),
                mounted: Mutex::new(HashSet::new()),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no mount namespace for workspace file systems: disk quotas are measured every second, not enforced by the kernel");
                None
            }
        }
    }

    fn image(folder: &Path) -> PathBuf {
        folder.with_extension("img")
    }

    /// Whether the workspace at `folder` has a file system of its own.
    pub fn has_image(folder: &Path) -> bool {
        Disks::image(folder).is_file()
    }

    /// Makes the workspace's file system and mounts it on `folder`, which must exist.
    pub fn create(
        &self,
        id: &str,
        folder: &Path,
        disk_mib: u64,
        files: u64,
        owner: Option<Owner>,
    ) -> Result<(), String> {
        let image = Disks::image(folder);
        let bytes = (disk_mib + JOURNAL_MIB) * 1024 * 1024 + files * INODE_BYTES;
        use std::os::unix::fs::OpenOptionsExt;
        // Readable by root alone: the image holds the workspace's files, whoever owns them inside.
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&image)
            .and_then(|file| file.set_len(bytes));
        made.map_err(|e| format!("cannot make {}: {e}", image.display()))?;
        let owner = owner.map(|o| format!(",root_owner={}:{}", o.uid, o.gid)).unwrap_or_default();
        let mut mkfs = Command::new(&self.tools.mkfs);
        mkfs.args([
            "-q",
            "-F",
            "-m",
            "0",
            "-N",
            &files.to_string(),
            "-I",
            &INODE_BYTES.to_string(),
            "-J",
            &format!("size={JOURNAL_MIB}"),
        ])
        .arg("-E")
        .arg(format!("lazy_itable_init=1,nodiscard{owner}"))
        .arg(&image);
        let made = run(&mut mkfs).and_then(|()| self.mount(id, folder));
        if let Err(why) = &made {
            let _ = std::fs::remove_file(&image);
            return Err(why.clone());
        }
        Ok(())
    }

    /// Mounts the workspace's file system if it is not mounted yet (after a restart).
    pub fn ensure_mounted(&self, id: &str, folder: &Path) -> Result<(), String> {
        if self.mounted.lock().unwrap_or_else(|e| e.into_inner()).contains(id) && self.keeper_alive() {
            return Ok(());
        }
        self.mount(id, folder)
    }

    fn keeper_alive(&self) -> bool {
        self.keeper.lock().unwrap_or_else(|e| e.into_inner()).alive()
    }

    fn mount(&self, id: &str, folder: &Path) -> Result<(), String> {
        let mut keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        if !keeper.alive() {
            // Its mounts went with it: start again, and mount each workspace anew on use.
            tracing::warn!("the keeper of workspace file systems ended; starting another");
            *keeper =
                Keeper::start().map_err(|e| format!("no mount namespace for the workspace's file system: {e}"))?;
            self.mounted.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        if self.mounted.lock().unwrap_or_else(|e| e.into_inner()).contains(id) {
            // Mounted meanwhile by another caller, under the keeper's lock.
            return Ok(());
        }
        let mut mount = Command::new(&self.tools.mount);
        mount.args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"]).arg(Disks::image(folder)).arg(folder);
        in_namespace(&mut mount, keeper.namespace.clone());
        run(&mut mount)?;
        self.mounted.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string());
        Ok(())
    }

    /// Unmounts and removes the workspace's file system.
    pub fn destroy(&self, id: &str, folder: &Path) -> Result<(), String> {
        if self.mounted.lock().unwrap_or_else(|e| e.into_inner()).remove(id) {
            let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
            let mut umount = Command::new(&self.tools.umount);
            umount.arg("--lazy").arg(folder);
            in_namespace(&mut umount, keeper.namespace.clone());
            run(&mut umount)?;
        }
        match std::fs::remove_file(Disks::image(folder)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(format!("cannot remove the workspace's file system: {e}"))
            }
            _ => Ok(()),
        }
    }

    /// Where the server finds `path` as the keeper's namespace shows it (mounts included).
    pub fn view(&self, path: &Path) -> PathBuf {
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/self/fd/{}", keeper.root.as_raw_fd())).join(relative)
    }

    /// The namespace commands of image-backed workspaces run in.
    pub fn namespace(&self) -> Arc<std::fs::File> {
        self.keeper.lock().unwrap_or_else(|e| e.into_inner()).namespace.clone()
    }
}

/// Has `command` join `namespace` (a mount namespace) before it runs.
fn in_namespace(command: &mut Command, namespace: Arc<std::fs::File>) {
    let fd = namespace.as_raw_fd();
    // SAFETY: only setns between fork and exec; `namespace` outlives the spawn (the caller
    // holds it, and the closure keeps a reference).
    unsafe {
        command.pre_exec(move || {
            let _keep = &namespace;
            if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let done = command
        .env_clear()
        .env("PATH", super::sandbox::HELPER_PATH)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?} cannot run: {e}", command.get_program()))?;
    if done.status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed: {}", command.get_program(), String::from_utf8_lossy(&done.stderr).trim()))
    }
}
