//! What a command is and what it gives back, whichever backend runs it: the types the
//! workspace service, its capabilities and every backend share.

use serde::Serialize;

/// One command to run.
#[derive(Clone, Debug, Default)]
pub struct CommandSpec {
    /// Run by `bash -c`.
    pub command: String,
    /// Relative to the workspace root; empty for the root.
    pub workdir: String,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    /// Reach the network (the template and the policy allow it), through a namespace of its own.
    pub network: bool,
    /// Destinations off the public internet it may reach all the same (`10.1.2.3/32`).
    pub private_destinations: Vec<String>,
    /// Mount the workspace read-only (for the host's own inspections, like git watch).
    pub read_only: bool,
    /// Host folders the server shares with the command (the desktop's socket folders).
    pub binds: Vec<Bind>,
}

/// A host folder seen inside the sandbox at `inside`. The server opens it, so the command's
/// user needs no way to it through the data directory.
#[derive(Clone, Debug)]
pub struct Bind {
    pub host: std::path::PathBuf,
    pub inside: String,
    /// Whether the command may change what is in it. Sockets in a read-only folder can still
    /// be connected to: that is how commands reach the desktop's X server without being able
    /// to put something else in its place.
    pub writable: bool,
}

/// How a finished command ended.
#[derive(Clone, Debug, Serialize)]
pub struct Completed {
    pub exit_code: Option<i32>,
    pub output: Output,
    pub duration_ms: u64,
    pub timed_out: bool,
    /// Why the sandbox stopped the command, besides a timeout (the disk quota).
    pub stopped_because: Option<String>,
}

/// Output kept from a command: its beginning and its end when it was longer than the limit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Output {
    pub text: String,
    /// Bytes the command wrote in all.
    pub total_bytes: u64,
    /// Bytes left out of `text` (the middle).
    pub omitted_bytes: u64,
}

/// Collects output, keeping a head and a tail of bounded size however much arrives.
#[derive(Debug)]
pub struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    half: usize,
    total: u64,
}

impl Capture {
    pub fn new(limit_bytes: usize) -> Capture {
        let half = (limit_bytes / 2).max(1);
        Capture { head: Vec::new(), tail: std::collections::VecDeque::new(), half, total: 0 }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.half {
            let room = (self.half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
        }
        if bytes.len() >= self.half {
            self.tail.clear();
            bytes = &bytes[bytes.len() - self.half..];
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.half);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The output so far; `from` skips bytes already read (by a reader following along).
    pub fn output(&self) -> Output {
        let kept = self.head.len() as u64 + self.tail.len() as u64;
        let mut bytes = self.head.clone();
        let omitted = self.total - kept;
        if omitted > 0 {
            bytes.extend_from_slice(format!("\n[... {omitted} bytes of output left out ...]\n").as_bytes());
        }
        bytes.extend(self.tail.iter());
        Output { text: String::from_utf8_lossy(&bytes).into_owned(), total_bytes: self.total, omitted_bytes: omitted }
    }
}
