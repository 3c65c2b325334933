//! The WIT side: argument types, tool specs and handlers.

use schemars::JsonSchema;
use serde::Deserialize;
use toolhost_plugin::fs::{self, EntryKind, FsError};
use toolhost_plugin::{CallContext, Content, Image, Plugin, Tool, ToolError, ToolResult};

use crate::text::{self, CHUNK_BYTES, DEFAULT_LINE_LIMIT, Edit, MAX_EDIT_BYTES};

/// Largest image `read_file` returns to the model as an image.
const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;

struct Files;

impl Plugin for Files {
    const NAME: &'static str = "files";
    const SUMMARY: &'static str = "Read, write and edit files in the chat's workspace";

    fn tools() -> Vec<Tool> {
        vec![
            Tool::new(
                "read_file",
                "Read a text file from the workspace, or an image (PNG, JPEG, GIF, WebP). Text comes back exactly as stored, \
                 at most 2000 lines or 256 KiB per call; a note says how to read on when the file is longer.",
                read_file,
            )
            .read_only()
            .idempotent(),
            Tool::new(
                "write_file",
                "Create or replace a whole file in the workspace; missing parent folders are created.",
                write_file,
            )
            .destructive()
            .idempotent(),
            Tool::new(
                "edit_files",
                "Edit existing files by exact search and replace. Each search must match exactly once (unless replace_all). \
                 Edits of one file apply in order; if any edit of any file fails, no file is changed.",
                edit_files,
            )
            .destructive(),
        ]
    }
}

toolhost_plugin::export_plugin!(Files);

/// Arguments of `read_file`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadFileArgs {
    /// Path relative to the workspace root, e.g. `src/main.rs`.
    path: String,
    /// 1-based line to start at (default 1).
    #[schemars(range(min = 1))]
    offset: Option<u64>,
    /// Most lines to return (default 2000).
    #[schemars(range(min = 1))]
    limit: Option<u64>,
}

fn read_file(_ctx: &CallContext, args: ReadFileArgs) -> Result<ToolResult, ToolError> {
    if let Some(mime_type) = image_mime_type(&args.path) {
        return read_image(&args.path, mime_type);
    }
    let offset = args.offset.unwrap_or(1) as usize;
    let limit = args.limit.map_or(DEFAULT_LINE_LIMIT, |l| l as usize);
    // No `stat` first: one host call fewer on the hot path; a directory shows up as an error.
    let window = match text::read_lines(|at, max| fs::read(&args.path, at, max), offset, limit) {
        Ok(window) => window,
        Err(FsError::IsADirectory(_)) => {
            return Err(ToolError::InvalidArguments(format!("`{}` is a directory; read_file reads files", args.path)));
        }
        Err(e) => return Err(e.into()),
    };
    if window.binary {
        return Ok(ToolResult::error_text(format!(
            "`{}` is a binary file; read_file shows text files and images only",
            args.path
        )));
    }
    let note = text::continuation_note(&args.path, &window);
    let mut content = vec![Content::Text(window.content)];
    if let Some(note) = note {
        content.push(Content::Text(note));
    }
    Ok(ToolResult { content, is_error: false })
}

fn image_mime_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

fn read_image(path: &str, mime_type: &str) -> Result<ToolResult, ToolError> {
    let size = fs::stat(path)?.size;
    if size > MAX_IMAGE_BYTES {
        return Ok(ToolResult::error_text(format!(
            "`{path}` is an image of {size} bytes; read_file returns images up to {MAX_IMAGE_BYTES} bytes"
        )));
    }
    let data = fs::read(path, 0, size)?;
    Ok(ToolResult { content: vec![Content::Image(Image { mime_type: mime_type.to_string(), data })], is_error: false })
}

/// Arguments of `write_file`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteFileArgs {
    /// Path relative to the workspace root.
    path: String,
    /// The whole new content of the file.
    content: String,
}

fn write_file(_ctx: &CallContext, args: WriteFileArgs) -> Result<ToolResult, ToolError> {
    let existed = match fs::stat(&args.path) {
        Ok(meta) if meta.kind == EntryKind::Directory => {
            return Err(ToolError::InvalidArguments(format!("`{}` is a directory; give a file path", args.path)));
        }
        Ok(_) => true,
        Err(FsError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if let Some((parent, _)) = args.path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
        fs::mkdir(parent, true)?;
    }
    fs::write(&args.path, args.content.as_bytes())?;
    let verb = if existed { "Replaced" } else { "Created" };
    Ok(ToolResult::text(format!("{verb} `{}` ({} bytes).", args.path, args.content.len())))
}

/// Arguments of `edit_files`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EditFilesArgs {
    /// The files to edit and their edits.
    #[schemars(length(min = 1))]
    files: Vec<FileEdits>,
}

/// Edits of one file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FileEdits {
    /// Path relative to the workspace root; the file must exist.
    path: String,
    /// Applied in order, each to the result of the previous ones.
    #[schemars(length(min = 1))]
    edits: Vec<EditArgs>,
}

/// One search-and-replace.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    /// Exact text to find, including whitespace and indentation.
    search: String,
    /// Text to put in its place.
    replace: String,
    /// Replace every match instead of requiring exactly one (default false).
    #[serde(default)]
    replace_all: bool,
}

fn edit_files(_ctx: &CallContext, args: EditFilesArgs) -> Result<ToolResult, ToolError> {
    // Every file is edited in memory first, so a failing edit anywhere changes nothing.
    let mut edited = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let original = read_whole(&file.path)?;
        let edits: Vec<Edit> = file
            .edits
            .iter()
            .map(|e| Edit { search: e.search.clone(), replace: e.replace.clone(), replace_all: e.replace_all })
            .collect();
        let new = text::apply_edits(&original, &edits).map_err(|f| {
            ToolError::InvalidArguments(format!(
                "edit {} of `{}` failed: {}. No file was changed.",
                f.edit, file.path, f.reason
            ))
        })?;
        edited.push((file.path.as_str(), new, edits.len()));
    }
    let mut summary = Vec::with_capacity(edited.len());
    for (path, content, count) in &edited {
        fs::write(path, content.as_bytes())?;
        summary.push(format!("`{path}` ({count} edit{})", if *count == 1 { "" } else { "s" }));
    }
    Ok(ToolResult::text(format!("Edited {}.", summary.join(", "))))
}

fn read_whole(path: &str) -> Result<String, ToolError> {
    let meta = fs::stat(path)?;
    if meta.kind == EntryKind::Directory {
        return Err(ToolError::InvalidArguments(format!("`{path}` is a directory, not a file")));
    }
    if meta.size > MAX_EDIT_BYTES {
        return Err(ToolError::InvalidArguments(format!(
            "`{path}` is {} bytes; edit_files edits files up to {MAX_EDIT_BYTES} bytes",
            meta.size
        )));
    }
    let mut data = Vec::with_capacity(meta.size as usize);
    loop {
        let chunk = fs::read(path, data.len() as u64, CHUNK_BYTES)?;
        let done = (chunk.len() as u64) < CHUNK_BYTES;
        data.extend_from_slice(&chunk);
        if done {
            break;
        }
    }
    String::from_utf8(data)
        .map_err(|_| ToolError::InvalidArguments(format!("`{path}` is not UTF-8 text; edit_files edits text files")))
}
