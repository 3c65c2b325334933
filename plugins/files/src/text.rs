//! The plugin's logic on bytes and strings, free of any WIT or I/O, so it can be tested and
//! benchmarked natively.

/// Lines shown by one `read_file` call when the model gives no `limit`.
pub const DEFAULT_LINE_LIMIT: usize = 2000;
/// Most bytes of file content one `read_file` call returns.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Size of one read through the capability.
pub const CHUNK_BYTES: u64 = 1024 * 1024;
/// Largest file `edit_files` will load.
pub const MAX_EDIT_BYTES: u64 = 16 * 1024 * 1024;

/// A window of whole lines cut from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineWindow {
    /// The lines, as in the file (lossy UTF-8).
    pub content: String,
    /// 1-based number of the first line shown.
    pub first_line: usize,
    /// How many lines are shown (a last line without a newline counts).
    pub lines: usize,
    /// Whether the window ends at the end of the file.
    pub reached_end: bool,
    /// The byte cap cut the window before `limit` lines.
    pub cut_by_bytes: bool,
    /// The file looks binary (a NUL byte near its start); `content` is empty.
    pub binary: bool,
}

/// Reads lines `offset..offset+limit` (1-based) through `read_at(byte_offset, max_bytes)`,
/// which returns fewer than `max_bytes` bytes only at the end of the file.
pub fn read_lines<E>(
    mut read_at: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
    offset: usize,
    limit: usize,
) -> Result<LineWindow, E> {
    let offset = offset.max(1);
    let mut out: Vec<u8> = Vec::new();
    let mut line_no = 1usize;
    let mut taken = 0usize;
    let mut pos = 0u64;
    let mut cut_by_bytes = false;
    let mut reached_end = false;
    'chunks: loop {
        let chunk = read_at(pos, CHUNK_BYTES)?;
        if pos == 0 && chunk[..chunk.len().min(8192)].contains(&0) {
            return Ok(LineWindow {
                content: String::new(),
                first_line: offset,
                lines: 0,
                reached_end: true,
                cut_by_bytes: false,
                binary: true,
            });
        }
        let at_eof = (chunk.len() as u64) < CHUNK_BYTES;
        pos += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            if taken == limit {
                // More bytes follow the window.
                break 'chunks;
            }
            let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..=end], true),
                None => (rest, false),
            };
            rest = &rest[line.len()..];
            if line_no >= offset {
                let room = MAX_OUTPUT_BYTES - out.len();
                if line.len() > room {
                    out.extend_from_slice(&line[..room]);
                    cut_by_bytes = true;
                    break 'chunks;
                }
                out.extend_from_slice(line);
                if complete {
                    taken += 1;
                }
            }
            if complete {
                line_no += 1;
            }
        }
        if at_eof {
            reached_end = true;
            break;
        }
    }
    if reached_end && taken < limit && out.last().is_some_and(|&b| b != b'\n') {
        taken += 1; // a last line without a newline
    }
    if cut_by_bytes {
        // Show whole lines only, unless one line alone is longer than the cap.
        if let Some(last_newline) = out.iter().rposition(|&b| b == b'\n') {
            out.truncate(last_newline + 1);
        } else {
            taken = 1;
        }
    }
    let content = String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok(LineWindow {
        content,
        first_line: offset,
        lines: taken,
        reached_end: reached_end && !cut_by_bytes,
        cut_by_bytes,
        binary: false,
    })
}

/// What the model should be told after the content, if anything.
pub fn continuation_note(path: &str, window: &LineWindow) -> Option<String> {
    if window.reached_end {
        if window.lines == 0 && window.first_line > 1 {
            return Some(format!(
                "[`{path}` has fewer than {} lines; nothing to show at offset={}]",
                window.first_line, window.first_line
            ));
        }
        return None;
    }
    let last = window.first_line + window.lines.saturating_sub(1);
    let next = last + 1;
    let why = if window.cut_by_bytes {
        format!("the output is capped at {} KiB", MAX_OUTPUT_BYTES / 1024)
    } else {
        "the line limit was reached".to_string()
    };
    Some(format!(
        "[truncated: showing lines {}-{last} of `{path}` because {why}; the file goes on. Read more with offset={next}]",
        window.first_line
    ))
}

/// One search-and-replace edit.
#[derive(Debug, Clone)]
pub struct Edit {
    pub search: String,
    pub replace: String,
    pub replace_all: bool,
}

/// Why an edit could not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditFailure {
    /// 1-based number of the edit within its file.
    pub edit: usize,
    pub reason: String,
}

/// Applies `edits` in order, each to the result of the ones before. Each search must match
/// exactly once unless `replace_all`; on the first failure nothing is returned.
pub fn apply_edits(content: &str, edits: &[Edit]) -> Result<String, EditFailure> {
    let mut text = content.to_string();
    for (i, edit) in edits.iter().enumerate() {
        let fail = |reason: String| EditFailure { edit: i + 1, reason };
        if edit.search.is_empty() {
            return Err(fail("`search` is empty; give the exact text to replace".into()));
        }
        let matches = text.matches(edit.search.as_str()).count();
        match matches {
            0 => return Err(fail(not_found_reason(&text, &edit.search))),
            1 => text = text.replacen(edit.search.as_str(), &edit.replace, 1),
            n if edit.replace_all => {
                let _ = n;
                text = text.replace(edit.search.as_str(), &edit.replace);
            }
            n => {
                let lines = match_lines(&text, &edit.search);
                return Err(fail(format!(
                    "`search` matches {n} times (at lines {lines}); add surrounding lines to make it unique, or set replace_all"
                )));
            }
        }
    }
    Ok(text)
}

fn not_found_reason(text: &str, search: &str) -> String {
    let preview: String = search.lines().next().unwrap_or("").chars().take(80).collect();
    let first = search.lines().map(str::trim).find(|l| !l.is_empty());
    if let Some(first) = first {
        let near: Vec<String> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == first)
            .map(|(n, _)| (n + 1).to_string())
            .take(5)
            .collect();
        if !near.is_empty() {
            return format!(
                "`search` (starting `{preview}`) was not found exactly; lines {} hold its first line with different whitespace or context. Read the file again and copy the text exactly",
                near.join(", ")
            );
        }
    }
    format!("`search` (starting `{preview}`) was not found; read the file again and copy the text exactly")
}

fn match_lines(text: &str, search: &str) -> String {
    text.match_indices(search)
        .take(5)
        .map(|(at, _)| (text[..at].matches('\n').count() + 1).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(data: &[u8]) -> impl FnMut(u64, u64) -> Result<Vec<u8>, ()> + '_ {
        move |at, max| {
            let start = (at as usize).min(data.len());
            let end = (start + max as usize).min(data.len());
            Ok(data[start..end].to_vec())
        }
    }

    #[test]
    fn a_window_of_lines_knows_whether_the_file_goes_on() {
        let w = read_lines(reader(b"a\nb\nc\nd"), 2, 2).unwrap();
        assert_eq!(w.content, "b\nc\n");
        assert_eq!((w.first_line, w.lines, w.reached_end), (2, 2, false));
        assert!(continuation_note("f", &w).unwrap().contains("offset=4"));
        let w = read_lines(reader(b"a\nb\nc\nd"), 3, 10).unwrap();
        assert_eq!(w.content, "c\nd");
        assert_eq!((w.lines, w.reached_end), (2, true));
        assert_eq!(continuation_note("f", &w), None);
    }

    #[test]
    fn binary_files_are_recognised() {
        assert!(read_lines(reader(b"\x7fELF\0\0"), 1, 10).unwrap().binary);
    }

    #[test]
    fn the_byte_cap_keeps_whole_lines() {
        let line = "x".repeat(1000) + "\n";
        let data = line.repeat(MAX_OUTPUT_BYTES / 1000 + 10);
        let w = read_lines(reader(data.as_bytes()), 1, 100_000).unwrap();
        assert!(w.cut_by_bytes && !w.reached_end);
        assert_eq!(w.content.len() % 1001, 0);
        assert!(continuation_note("f", &w).unwrap().contains("KiB"));
    }

    #[test]
    fn edits_must_match_exactly_once_unless_replace_all() {
        let e = |s: &str, r: &str, all| Edit { search: s.into(), replace: r.into(), replace_all: all };
        assert_eq!(apply_edits("a b a", &[e("b", "c", false)]).unwrap(), "a c a");
        let twice = apply_edits("a\nb\na", &[e("a", "z", false)]).unwrap_err();
        assert!(twice.reason.contains("matches 2 times") && twice.reason.contains("1, 3"));
        assert_eq!(apply_edits("a b a", &[e("a", "z", true)]).unwrap(), "z b z");
        let missing = apply_edits("fn x() {}\n", &[e("b", "c", false), e("q", "r", false)]).unwrap_err();
        assert_eq!(missing.edit, 1);
        let ws = apply_edits("    let x = 1;\n", &[e("let x = 1;\nfoo", "", false)]).unwrap_err();
        assert!(ws.reason.contains("lines 1"), "{}", ws.reason);
    }
}
