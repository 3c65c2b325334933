//! Capability `workspace-fs`: files in the workspace bound to the calling chat.
//!
//! Every access goes through [`crate::workspace::confined`], which resolves each path beneath
//! the workspace root with `openat`-style lookups (a `..` or a symbolic link that would leave
//! the root is refused by the kernel-facing layer, not by string checks that a race could
//! defeat), reads regular files only, and keeps what it makes owned by the workspace's host
//! identity. On top of that, absolute paths and any `..` component are refused up front with a
//! message the model can act on. The work itself runs on a blocking thread, never on the
//! async threads that serve every chat.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::FileType;
use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability};
use crate::plugins::bindings::toolhost::plugin::workspace_fs::{self as wit, DirEntry, EntryKind, FsError, Metadata};
use crate::workspace::confined::{Confined, ReadError, WorkspaceRoot};

/// Most bytes one `read` returns, whatever the plugin asks for.
const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

pub struct WorkspaceFs;

impl Capability for WorkspaceFs {
    const NAME: &'static str = "workspace-fs";
    type State = FsState;

    fn new_state(setup: &CallSetup) -> FsState {
        FsState { root: setup.workspace.clone(), opened: None }
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

/// The call's workspace root, opened on first use.
pub struct FsState {
    root: Option<WorkspaceRoot>,
    opened: Option<Arc<Confined>>,
}

impl CallState {
    /// Checks the grant and the path, and returns the workspace and the relative path.
    /// Policy sees the path as given and, when a symbolic link makes it resolve elsewhere in
    /// the workspace, as resolved: a link must not lead past a folder the policy keeps closed.
    fn workspace_path(&mut self, path: &str) -> Result<(Arc<Confined>, PathBuf), FsError> {
        let relative = confine(path)?;
        self.grants.require_scoped(WorkspaceFs::NAME, &self.identity.plugin, &scope_of(relative)).map_err(FsError::Denied)?;
        let state = self.state_of::<WorkspaceFs>();
        if state.opened.is_none() {
            let root = state.root.as_ref().ok_or(FsError::NoWorkspace)?;
            let opened = root.open().map_err(|e| FsError::Io(format!("the workspace root cannot be opened: {e}")))?;
            state.opened = Some(Arc::new(opened));
        }
        let workspace = state.opened.clone().ok_or(FsError::NoWorkspace)?;
        if let Some(resolved) = resolved_scope(workspace.dir(), relative).filter(|r| *r != scope_of(relative)) {
            self.grants.require_scoped(WorkspaceFs::NAME, &self.identity.plugin, &resolved).map_err(FsError::Denied)?;
        }
        Ok((workspace, relative.to_path_buf()))
    }
}

/// Reads up to this many bytes run on the calling thread, like the path checks before them: one
/// bounded system call, cheaper than the two thread hand-offs of a blocking thread (tens of
/// microseconds on a virtual machine, most of a small tool call's cost).
const INLINE_READ_BYTES: u64 = 256 * 1024;

/// Runs `work` on a blocking thread: file system calls can take long (a slow disk, a large
/// file), and the async threads serve every chat.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, FsError> + Send + 'static) -> Result<T, FsError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| FsError::Io(format!("the file operation failed: {e}")))?
}

/// Reads at most `max_bytes` of a workspace file from `offset`, through the confined primitive.
fn read_at(workspace: &Confined, relative: &Path, path: &str, offset: u64, max_bytes: u64) -> Result<Vec<u8>, FsError> {
    workspace.read(relative, offset, max_bytes).map_err(|e| match e {
        ReadError::Io(e) => fs_error(path, e),
        ReadError::IsADirectory => FsError::IsADirectory(format!("`{path}` is a directory")),
        ReadError::NotAFile => {
            FsError::Io(format!("`{path}` is not a regular file (a pipe, socket or device); only files can be read"))
        }
    })
}

/// Checks every entry beneath a folder about to be removed with everything in it.
fn check_tree(grants: &super::Grants, plugin: &str, dir: &cap_std::fs::Dir, relative: &Path) -> Result<(), FsError> {
    let mut pending = vec![relative.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = dir.read_dir(&folder).map_err(|e| fs_error(&folder.to_string_lossy(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| fs_error(&folder.to_string_lossy(), e))?;
            let child = folder.join(entry.file_name());
            grants.require_scoped(WorkspaceFs::NAME, plugin, &scope_of(&child)).map_err(FsError::Denied)?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(child);
            }
        }
    }
    Ok(())
}

/// A relative path as policy sees it: `/`-separated, `.` for the root.
fn scope_of(relative: &Path) -> String {
    let parts: Vec<_> = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    if parts.is_empty() { ".".to_string() } else { parts.join("/") }
}

/// Where a path leads inside the workspace with symbolic links followed (for a path that does
/// not exist yet, where its folder leads); `None` when it cannot be resolved.
fn resolved_scope(dir: &cap_std::fs::Dir, relative: &Path) -> Option<String> {
    if let Ok(resolved) = dir.canonicalize(relative) {
        return Some(scope_of(&resolved));
    }
    let name = relative.file_name()?;
    let parent = relative.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.canonicalize(parent).ok().map(|p| scope_of(&p.join(name)))
}

/// Refuses absolute paths and `..` before any lookup; an empty path or `.` is the root.
fn confine(path: &str) -> Result<&Path, FsError> {
    let p = Path::new(if path.is_empty() { "." } else { path });
    for component in p.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(FsError::Denied(format!(
                    "`{path}` is absolute; give a path relative to the workspace root, e.g. `src/main.rs`"
                )));
            }
            Component::ParentDir => {
                return Err(FsError::Denied(format!("`{path}` contains `..`; paths must stay inside the workspace")));
            }
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(p)
}

fn fs_error(path: &str, e: io::Error) -> FsError {
    match e.kind() {
        io::ErrorKind::NotFound => FsError::NotFound(format!("`{path}` does not exist")),
        io::ErrorKind::PermissionDenied => FsError::Denied(format!(
            "`{path}` leads outside the workspace (through a symbolic link) or is not accessible"
        )),
        io::ErrorKind::AlreadyExists => FsError::AlreadyExists(format!("`{path}` already exists")),
        io::ErrorKind::NotADirectory => FsError::NotADirectory(format!("a part of `{path}` is not a directory")),
        io::ErrorKind::IsADirectory => FsError::IsADirectory(format!("`{path}` is a directory")),
        io::ErrorKind::DirectoryNotEmpty => {
            FsError::Io(format!("`{path}` is a directory that is not empty; remove it with recursive set"))
        }
        _ => FsError::Io(format!("`{path}`: {e}")),
    }
}

fn entry_kind(file_type: FileType) -> EntryKind {
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

impl wit::Host for CallState {
    async fn read(&mut self, path: String, offset: u64, max_bytes: u64) -> Result<Vec<u8>, FsError> {
        let (workspace, relative) = self.workspace_path(&path)?;
        let max_bytes = max_bytes.min(MAX_READ_BYTES);
        // A small file is read here, a large one on a blocking thread. The read here is bounded
        // whatever the file became since its size was taken: one that grew past the bound is
        // read again, whole, on a blocking thread. (The read itself reports missing files.)
        let size = workspace.dir().metadata(&relative).map(|m| m.len());
        if size.is_ok_and(|size| size.saturating_sub(offset).min(max_bytes) <= INLINE_READ_BYTES) {
            let bytes = read_at(&workspace, &relative, &path, offset, max_bytes.min(INLINE_READ_BYTES))?;
            if max_bytes <= INLINE_READ_BYTES || (bytes.len() as u64) < INLINE_READ_BYTES {
                return Ok(bytes);
            }
        }
        blocking(move || read_at(&workspace, &relative, &path, offset, max_bytes)).await
    }

    async fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), FsError> {
        let (workspace, relative) = self.workspace_path(&path)?;
        if relative.file_name().is_none() {
            return Err(FsError::IsADirectory(format!("`{path}` names a directory, not a file")));
        }
        blocking(move || workspace.write(&relative, &data).map_err(|e| fs_error(&path, e))).await
    }

    async fn read_dir(&mut self, path: String) -> Result<Vec<DirEntry>, FsError> {
        let (workspace, relative) = self.workspace_path(&path)?;
        blocking(move || {
            let mut entries = Vec::new();
            for entry in workspace.dir().read_dir(&relative).map_err(|e| fs_error(&path, e))? {
                let entry = entry.map_err(|e| fs_error(&path, e))?;
                let file_type = entry.file_type().map_err(|e| fs_error(&path, e))?;
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                entries.push(DirEntry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    kind: entry_kind(file_type),
                    size,
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    async fn stat(&mut self, path: String) -> Result<Metadata, FsError> {
        let (workspace, relative) = self.workspace_path(&path)?;
        // One system call, as bounded as the path checks that already ran on this thread.
        let stat = move || {
            let meta = workspace.dir().symlink_metadata(&relative).map_err(|e| fs_error(&path, e))?;
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64);
            Ok(Metadata {
                kind: entry_kind(meta.file_type()),
                size: meta.len(),
                modified_ms,
                readonly: meta.permissions().readonly(),
            })
        };
        stat()
    }

    async fn remove(&mut self, path: String, recursive: bool) -> Result<(), FsError> {
        let (grants, plugin) = (self.grants.clone(), self.identity.plugin.clone());
        let (workspace, relative) = self.workspace_path(&path)?;
        if relative.components().all(|c| matches!(c, Component::CurDir)) {
            return Err(FsError::Denied("the workspace root itself cannot be removed".into()));
        }
        blocking(move || {
            let dir = workspace.dir();
            let meta = dir.symlink_metadata(&relative).map_err(|e| fs_error(&path, e))?;
            let result = if !meta.is_dir() {
                dir.remove_file(&relative)
            } else if recursive {
                check_tree(&grants, &plugin, dir, &relative)?;
                dir.remove_dir_all(&relative)
            } else {
                dir.remove_dir(&relative)
            };
            result.map_err(|e| fs_error(&path, e))
        })
        .await
    }

    async fn mkdir(&mut self, path: String, parents: bool) -> Result<(), FsError> {
        let (workspace, relative) = self.workspace_path(&path)?;
        blocking(move || workspace.create_dir(&relative, parents).map_err(|e| fs_error(&path, e))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_and_parent_components_are_denied_before_any_lookup() {
        assert!(matches!(confine("/etc/passwd"), Err(FsError::Denied(m)) if m.contains("absolute")));
        assert!(matches!(confine("a/../../b"), Err(FsError::Denied(m)) if m.contains("..")));
        assert_eq!(confine("").unwrap(), Path::new("."));
        assert_eq!(confine("src/./main.rs").unwrap(), Path::new("src/./main.rs"));
    }
}
