//! The one way the host itself touches files inside a workspace: the `workspace-fs` capability,
//! the prompt's `AGENTS.md`, git watch's look for repositories, the disk quota's count, and
//! whatever comes next. Commands can plant anything there (symbolic links to the sealing key or
//! to `/proc/self/environ`, FIFOs, links to `/dev/zero`, huge sparse files), and the server reads
//! with more rights than they have, so every access here:
//!
//! - resolves beneath the workspace root, never out of it (cap-std: `openat2` with
//!   `RESOLVE_BENEATH` where the kernel has it, a checked walk elsewhere; a link that leads out,
//!   absolute or by `..`, is refused);
//! - reads regular files only, opened non-blocking (a FIFO or device can neither hang the open
//!   nor be read);
//! - is bounded before reading (at most the bytes asked for, whatever the file's size);
//! - leaves what it makes owned by the workspace's host identity, so commands can change it;
//! - runs off the async threads when called from async code ([`read_text`]).

use std::ffi::{CStr, CString};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

/// The host identity commands run as, which owns a workspace's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A workspace's folder on this machine and who its files belong to (`None`: the server's own
/// user, when commands run as that user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceRoot {
    pub path: PathBuf,
    pub owner: Option<Owner>,
}

impl WorkspaceRoot {
    pub fn open(&self) -> io::Result<Confined> {
        Ok(Confined { dir: Dir::open_ambient_dir(&self.path, ambient_authority())?, owner: self.owner })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("it is a directory")]
    IsADirectory,
    #[error("it is not a regular file (a pipe, socket or device); only files can be read")]
    NotAFile,
}

/// An opened workspace root; every path given to it is relative to the root.
pub struct Confined {
    dir: Dir,
    owner: Option<Owner>,
}

impl Confined {
    /// The root, for lookups that change nothing (listing, `lstat`, resolving, removing).
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Up to `max_bytes` of the regular file at `relative`, from `offset`.
    pub fn read(&self, relative: &Path, offset: u64, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
        let mut options = OpenOptions::new();
        options.read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
        let mut file = self.dir.open_with(relative, &options)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(ReadError::IsADirectory);
        }
        if !meta.is_file() {
            return Err(ReadError::NotAFile);
        }
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        // Sized from the file's length, so a small file is read in one go; never past the bound.
        let expected = meta.len().saturating_sub(offset).min(max_bytes);
        let mut data = Vec::with_capacity(expected as usize + 1);
        file.take(max_bytes).read_to_end(&mut data)?;
        Ok(data)
    }

    /// Writes `data` to `relative` beside it first and renames it over: readers never see half
    /// a file, and a link planted at `relative` is replaced, not followed.
    pub fn write(&self, relative: &Path, data: &[u8]) -> io::Result<()> {
        let temp = temporary_name(relative);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let written = self.dir.open_with(&temp, &options).and_then(|mut file| {
            self.adopt(&file)?;
            file.write_all(data)
        });
        written.and_then(|()| self.dir.rename(&temp, &self.dir, relative)).inspect_err(|_| {
            let _ = self.dir.remove_file(&temp);
        })
    }

    /// Makes the folder `relative` (and, with `parents`, the folders above it that are missing).
    pub fn create_dir(&self, relative: &Path, parents: bool) -> io::Result<()> {
        if !parents {
            self.dir.create_dir(relative)?;
            return self.adopt_path(relative);
        }
        let mut at = PathBuf::new();
        for component in relative.components() {
            if let Component::Normal(name) = component {
                at.push(name);
                match self.dir.create_dir(&at) {
                    Ok(()) => self.adopt_path(&at)?,
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && self.dir.metadata(&at).is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn adopt(&self, file: &impl AsFd) -> io::Result<()> {
        match self.owner {
            // By the descriptor itself (an empty path), which works for `O_PATH` ones too.
            Some(owner) => {
                Ok(rustix::fs::chownat(file, "", Some(uid(owner)), Some(gid(owner)), rustix::fs::AtFlags::EMPTY_PATH)?)
            }
            None => Ok(()),
        }
    }

    fn adopt_path(&self, relative: &Path) -> io::Result<()> {
        match self.owner {
            // Opened through the confined root: a folder swapped for a link meanwhile is never left.
            Some(_) => self.adopt(&self.dir.open_dir(relative)?),
            None => Ok(()),
        }
    }
}

/// A text file beneath `root`, read on a blocking thread: at most `max_bytes` (lossily decoded)
/// and whether the file went on past them. `None` when there is no such regular file.
pub async fn read_text(root: &WorkspaceRoot, relative: &str, max_bytes: u64) -> Option<(String, bool)> {
    let (root, relative) = (root.clone(), PathBuf::from(relative));
    let bytes =
        tokio::task::spawn_blocking(move || root.open().ok()?.read(&relative, 0, max_bytes + 1).ok()).await.ok()??;
    let longer = bytes.len() as u64 > max_bytes;
    let kept = &bytes[..bytes.len().min(max_bytes as usize)];
    let mut text = String::from_utf8_lossy(kept).into_owned();
    if longer && text.ends_with('\u{FFFD}') {
        // The cut fell inside a character.
        text.pop();
    }
    Some((text, longer))
}

/// Gives everything beneath `root` (the folder included) to `owner`, never following a
/// symbolic link.
pub fn chown_tree(root: &Path, owner: Owner) -> io::Result<()> {
    use rustix::fs::AtFlags;
    let top = open_folder(rustix::fs::CWD, root)?;
    rustix::fs::fchown(&top, Some(uid(owner)), Some(gid(owner)))?;
    walk(top, |folder, name, _| {
        rustix::fs::chownat(folder, name, Some(uid(owner)), Some(gid(owner)), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(true)
    })
}

/// Visits every entry beneath `root` with its `lstat`, never following a symbolic link: each
/// folder is opened relative to its parent's descriptor, without following links, so a link
/// planted (or swapped in) meanwhile cannot lead the walk out. `visit` returns `false` to stop.
pub fn walk_from(
    root: &Path,
    visit: impl FnMut(&OwnedFd, &CStr, &rustix::fs::Stat) -> io::Result<bool>,
) -> io::Result<()> {
    walk(open_folder(rustix::fs::CWD, root)?, visit)
}

/// Deepest folder a walk goes into: the descriptors it holds are one per level.
const MAX_DEPTH: usize = 256;

fn walk(top: OwnedFd, mut visit: impl FnMut(&OwnedFd, &CStr, &rustix::fs::Stat) -> io::Result<bool>) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType};
    // Depth first, so that it holds one open folder per level (a folder of many folders
    // must not take a descriptor for each), and no deeper than MAX_DEPTH.
    let names = names_in(&top)?;
    let mut stack: Vec<(OwnedFd, std::vec::IntoIter<CString>)> = vec![(top, names.into_iter())];
    while let Some((folder, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let Ok(stat) = rustix::fs::statat(&*folder, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
        if !visit(folder, name.as_c_str(), &stat)? {
            return Ok(());
        }
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            continue;
        }
        match open_folder(&*folder, name.as_c_str()) {
            Ok(child) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(io::Error::other(format!("folders are nested more than {MAX_DEPTH} deep")));
                }
                let names = names_in(&child)?;
                stack.push((child, names.into_iter()));
            }
            // Swapped for a link, or removed, since it was looked at: nothing to walk into.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR | libc::ENOENT)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn names_in(folder: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(folder)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Gives the owner back every right on the folders beneath `root` (the folder included),
/// never following a link, so that a tree a command locked (`chmod 0 dir`) can be removed.
pub fn open_up_tree(root: &Path) -> io::Result<()> {
    let owner_only = rustix::fs::Mode::from_raw_mode(0o700);
    let top = open_folder(rustix::fs::CWD, root)?;
    rustix::fs::fchmod(&top, owner_only)?;
    walk(top, |folder, name, stat| {
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory
            && let Ok(child) = open_folder(folder, name)
        {
            rustix::fs::fchmod(&child, owner_only)?;
        }
        Ok(true)
    })
}

fn open_folder(at: impl AsFd, path: impl rustix::path::Arg) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn uid(owner: Owner) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(owner.uid)
}

fn gid(owner: Owner) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(owner.gid)
}

/// A name for the temporary file a write goes through, unique within this process.
fn temporary_name(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = format!(".{name}.toolhost-{}-{n}.tmp", std::process::id());
    match target.parent() {
        Some(parent) => parent.join(temp),
        None => PathBuf::from(temp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Confined) {
        let dir = tempfile::tempdir().unwrap();
        let root = WorkspaceRoot { path: dir.path().join("ws"), owner: None };
        std::fs::create_dir(&root.path).unwrap();
        let confined = root.open().unwrap();
        (dir, confined)
    }

    #[test]
    fn links_out_of_the_root_are_refused_whether_absolute_or_relative() {
        let (dir, ws) = workspace();
        std::fs::write(dir.path().join("secret.key"), "key").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.key"), dir.path().join("ws/absolute")).unwrap();
        std::os::unix::fs::symlink("../secret.key", dir.path().join("ws/relative")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("ws/environ")).unwrap();
        for name in ["absolute", "relative", "environ"] {
            assert!(ws.read(Path::new(name), 0, 100).is_err(), "{name} was read");
        }
        std::fs::write(dir.path().join("ws/inside"), "fine").unwrap();
        std::os::unix::fs::symlink("inside", dir.path().join("ws/link")).unwrap();
        assert_eq!(ws.read(Path::new("link"), 0, 100).unwrap(), b"fine", "a link within the root is followed");
    }

    #[test]
    fn fifos_and_devices_are_not_read_and_do_not_block() {
        let (dir, ws) = workspace();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("ws/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(ws.read(Path::new("fifo"), 0, 100), Err(ReadError::NotAFile)));
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("ws/zero")).unwrap();
        assert!(ws.read(Path::new("zero"), 0, 100).is_err());
    }

    #[test]
    fn reads_are_bounded_whatever_the_size_of_the_file() {
        let (dir, ws) = workspace();
        let file = std::fs::File::create(dir.path().join("ws/sparse")).unwrap();
        file.set_len(1 << 40).unwrap();
        assert_eq!(ws.read(Path::new("sparse"), 0, 4096).unwrap().len(), 4096);
    }

    #[test]
    fn a_write_replaces_a_planted_link_instead_of_following_it() {
        let (dir, ws) = workspace();
        std::fs::write(dir.path().join("outside"), "untouched").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("ws/target")).unwrap();
        ws.write(Path::new("target"), b"new").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("outside")).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(dir.path().join("ws/target")).unwrap(), "new");
        ws.create_dir(Path::new("a/b/c"), true).unwrap();
        assert!(dir.path().join("ws/a/b/c").is_dir());
    }
}
