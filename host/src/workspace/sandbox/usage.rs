//! What a workspace uses: its bytes and files on disk, and its processes.

use super::*;

/// Bytes on disk and entries under `folder` (walked through [`crate::workspace::confined::walk_from`]:
/// symbolic links are never followed); stops counting past either limit.
pub(super) fn disk_usage(folder: &Path, limit: u64, max_files: u64) -> (u64, u64) {
    let (mut used, mut files) = (0u64, 0u64);
    let walked = crate::workspace::confined::walk_from(folder, |_, _, stat| {
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
pub(super) fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = parent_of(pid) {
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

/// The parent of process `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The parent is the second field after the command name, which is in parentheses and may
    // itself contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` is `root` or runs below it.
pub fn descends_from(pid: u32, root: u32) -> bool {
    let mut current = pid;
    // A chain of parents is short; the bound only guards against a /proc read racing exits.
    for _ in 0..256 {
        if current == root {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent > 0 && parent != current => current = parent,
            _ => return false,
        }
    }
    false
}
