//! Files in the calling chat's workspace (capability `workspace-fs`).
//!
//! Paths are relative to the workspace root. Absolute paths, `..`, and symbolic links that
//! lead outside the workspace are refused with [`FsError::Denied`].

use crate::ToolError;
use crate::bindings::toolhost::plugin::workspace_fs as wit;
pub use crate::bindings::toolhost::plugin::workspace_fs::{DirEntry, EntryKind, FsError, Metadata};

/// Reads at most `max_bytes` bytes of a file from byte `offset`.
pub fn read(path: &str, offset: u64, max_bytes: u64) -> Result<Vec<u8>, FsError> {
    wit::read(path, offset, max_bytes)
}

/// Replaces a file's contents atomically. The parent directory must exist.
pub fn write(path: &str, data: &[u8]) -> Result<(), FsError> {
    wit::write(path, data)
}

/// Lists a directory, sorted by name.
pub fn list(path: &str) -> Result<Vec<DirEntry>, FsError> {
    wit::read_dir(path)
}

/// Describes a path without following a final symbolic link.
pub fn stat(path: &str) -> Result<Metadata, FsError> {
    wit::stat(path)
}

/// Removes a file, or a directory (recursively when asked).
pub fn remove(path: &str, recursive: bool) -> Result<(), FsError> {
    wit::remove(path, recursive)
}

/// Creates a directory, and its missing parents when `parents`.
pub fn mkdir(path: &str, parents: bool) -> Result<(), FsError> {
    wit::mkdir(path, parents)
}

impl FsError {
    /// The host's explanation, written for the model.
    pub fn message(&self) -> String {
        match self {
            FsError::Denied(m)
            | FsError::NotFound(m)
            | FsError::AlreadyExists(m)
            | FsError::NotADirectory(m)
            | FsError::IsADirectory(m)
            | FsError::Io(m) => m.clone(),
            FsError::NoWorkspace => "this chat has no workspace; create or start one first".to_string(),
        }
    }
}

impl From<FsError> for ToolError {
    fn from(e: FsError) -> ToolError {
        let message = e.message();
        match e {
            FsError::Denied(_) => ToolError::Denied(message),
            FsError::NotFound(_) => ToolError::NotFound(message),
            _ => ToolError::Failed(message),
        }
    }
}
