//! Git snapshots for git watch: branch, remote, changed files and the unified diff of each
//! repository a chat's tools touched.
//!
//! git runs inside the workspace's sandbox, read-only and offline: a repository is the
//! agent's, and its configuration (hooks, fsmonitor, diff drivers) must never run on the host.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::confined::WorkspaceRoot;
use super::{WorkspaceError, WorkspaceService};
use crate::store::Workspace;

/// Longest one snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(20);
/// Repositories watched per chat.
const MAX_REPOSITORIES: usize = 16;
/// Diff text kept per repository.
const MAX_DIFF_BYTES: usize = 256 * 1024;
/// Marks the sections of the script's output; a byte no diff line starts with.
const SECTION: char = '\u{1e}';

/// The script that prints one repository's state; `$1` is never used, paths come as cwd.
const SNAPSHOT_SCRIPT: &str = r#"
g() { git --no-optional-locks -c core.fsmonitor=false -c core.hooksPath=/dev/null -c diff.external= -c safe.directory='*' "$@"; }
printf '\036branch\n'; g symbolic-ref --short -q HEAD || g rev-parse --short HEAD 2>/dev/null
printf '\036remote\n'; g remote get-url origin 2>/dev/null
printf '\036status\n'; g status --porcelain=v1 -uall 2>/dev/null
printf '\036diff\n'
if g rev-parse -q --verify HEAD >/dev/null; then g diff --no-ext-diff --no-textconv HEAD; else g diff --no-ext-diff --no-textconv --cached; fi
g ls-files --others --exclude-standard -z | while IFS= read -r -d '' f; do g diff --no-ext-diff --no-textconv --no-index -- /dev/null "$f"; done
printf '\036end\n'
"#;

/// One file git reports as changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangedFile {
    pub path: String,
    /// git's two-letter porcelain status, e.g. ` M`, `??`, `A `.
    pub status: String,
}

/// One repository's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepositorySnapshot {
    /// Relative to the workspace root (`.` for the root).
    pub path: String,
    pub branch: Option<String>,
    pub remote: Option<String>,
    pub changed_files: Vec<ChangedFile>,
    pub diff: String,
    pub diff_truncated: bool,
}

/// Every watched repository of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GitSnapshot {
    pub workspace_id: Option<String>,
    pub repositories: Vec<RepositorySnapshot>,
}

/// Folders (relative to the workspace root) that tool calls named: `path`, `workdir` and
/// `files[].path` arguments. A call with none of them works at the root.
pub fn touched_paths<'a>(calls: impl Iterator<Item = &'a Value>) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for arguments in calls {
        let mut named = Vec::new();
        for key in ["path", "workdir"] {
            if let Some(path) = arguments.get(key).and_then(Value::as_str) {
                named.push(path.to_string());
            }
        }
        if let Some(files) = arguments.get("files").and_then(Value::as_array) {
            named.extend(files.iter().filter_map(|f| f.get("path").and_then(Value::as_str)).map(str::to_string));
        }
        if named.is_empty() {
            named.push(String::new());
        }
        for path in named {
            let trimmed =
                path.strip_prefix(super::sandbox::WORKSPACE_MOUNT).unwrap_or(&path).trim_matches('/').to_string();
            if super::sandbox::confine_workdir(&trimmed).is_ok() {
                paths.insert(trimmed);
            }
        }
    }
    paths
}

/// The repositories holding `paths` (the nearest folder with `.git` at or above each), and
/// those directly inside a touched folder that is not itself in a repository (a clone). Looked
/// up through [`super::confined`], never following a symbolic link (which a command can plant).
pub fn repositories(files_root: &WorkspaceRoot, paths: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(workspace) = files_root.open() else { return found };
    let dir = workspace.dir();
    let is_git = |folder: &Path| dir.symlink_metadata(folder.join(".git")).is_ok_and(|m| !m.file_type().is_symlink());
    for path in paths {
        let mut current = Path::new(path).to_path_buf();
        while !current.as_os_str().is_empty() && !real_dir(dir, &current) {
            current.pop();
        }
        let start = current.clone();
        let mut in_repository = false;
        loop {
            if real_dir(dir, &current) && is_git(&current) {
                found.insert(relative_name(&current));
                in_repository = true;
                break;
            }
            if !current.pop() {
                break;
            }
        }
        if !in_repository
            && let Ok(entries) = dir.read_dir(if start.as_os_str().is_empty() { Path::new(".") } else { &start })
        {
            for entry in entries.flatten() {
                let child = start.join(entry.file_name());
                if entry.file_type().is_ok_and(|t| t.is_dir()) && is_git(&child) {
                    found.insert(relative_name(&child));
                }
            }
        }
    }
    found
}

/// Whether `relative` is a folder of the workspace reached without any symbolic link.
fn real_dir(dir: &cap_std::fs::Dir, relative: &Path) -> bool {
    let mut at = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => at.push(name),
            Component::CurDir => continue,
            _ => return false,
        }
        match dir.symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn relative_name(path: &Path) -> String {
    let text = path.to_string_lossy().to_string();
    if text.is_empty() { ".".into() } else { text }
}

impl WorkspaceService {
    /// A snapshot of the repositories at `repositories` in `workspace`.
    pub async fn git_snapshot(
        &self,
        workspace: &Workspace,
        repositories: &BTreeSet<String>,
    ) -> Result<GitSnapshot, WorkspaceError> {
        let mut snapshots = Vec::new();
        if workspace.status != crate::store::WorkspaceStatus::Ready {
            // Nothing runs in a stopped or starting workspace, git included.
            return Ok(GitSnapshot { workspace_id: Some(workspace.id.clone()), repositories: snapshots });
        }
        for repository in repositories.iter().take(MAX_REPOSITORIES) {
            let workdir = if repository == "." { String::new() } else { repository.clone() };
            let spec = super::sandbox::CommandSpec {
                command: SNAPSHOT_SCRIPT.into(),
                workdir,
                read_only: true,
                ..Default::default()
            };
            let done = self.backend.run(workspace, &spec, SNAPSHOT_TIMEOUT, &self.stop_token(&workspace.id)).await?;
            snapshots.push(parse(repository, &done.output.text));
        }
        Ok(GitSnapshot { workspace_id: Some(workspace.id.clone()), repositories: snapshots })
    }
}

fn parse(path: &str, output: &str) -> RepositorySnapshot {
    let mut section = "";
    let (mut branch, mut remote, mut status, mut diff) = (String::new(), String::new(), String::new(), String::new());
    for line in output.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix(SECTION) {
            section = match name.trim() {
                "branch" => "branch",
                "remote" => "remote",
                "status" => "status",
                "diff" => "diff",
                _ => "",
            };
            continue;
        }
        match section {
            "branch" => branch.push_str(line),
            "remote" => remote.push_str(line),
            "status" => status.push_str(line),
            "diff" => diff.push_str(line),
            _ => {}
        }
    }
    let changed_files = status
        .lines()
        .filter_map(|l| Some(ChangedFile { status: l.get(..2)?.to_string(), path: l.get(3..)?.to_string() }))
        .filter(|f| !f.path.is_empty())
        .collect();
    let diff_truncated = diff.len() > MAX_DIFF_BYTES;
    if diff_truncated {
        let mut end = MAX_DIFF_BYTES;
        while !diff.is_char_boundary(end) {
            end -= 1;
        }
        diff.truncate(end);
    }
    let non_empty = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    RepositorySnapshot {
        path: path.to_string(),
        branch: non_empty(branch),
        remote: non_empty(remote),
        changed_files,
        diff,
        diff_truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn touched_paths_come_from_path_workdir_and_files_arguments() {
        let calls = [
            json!({"path": "app/src/main.rs"}),
            json!({"command": "ls", "workdir": "/workspace/lib"}),
            json!({"files": [{"path": "b.txt"}]}),
            json!({"command": "make"}),
            json!({"path": "../etc/passwd"}),
        ];
        let paths = touched_paths(calls.iter());
        assert_eq!(paths, ["", "app/src/main.rs", "b.txt", "lib"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn a_snapshot_is_read_from_the_script_sections() {
        let output = "\u{1e}branch\nmain\n\u{1e}remote\n\u{1e}status\n M README.md\n?? notes.txt\n\u{1e}diff\ndiff --git a/README.md b/README.md\n@@ -1 +1 @@\n-a\n+b\n\u{1e}end\n";
        let snapshot = parse(".", output);
        assert_eq!(snapshot.branch.as_deref(), Some("main"));
        assert_eq!(snapshot.remote, None);
        assert_eq!(
            snapshot.changed_files,
            vec![
                ChangedFile { path: "README.md".into(), status: " M".into() },
                ChangedFile { path: "notes.txt".into(), status: "??".into() }
            ]
        );
        assert!(snapshot.diff.contains("@@ -1 +1 @@\n-a\n+b"));
    }
}
