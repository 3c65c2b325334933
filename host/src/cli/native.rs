//! `read_file` as a plain native function, with the same logic as the bundled plugin but no
//! sandbox: the baseline the benchmark compares against.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use std::process::ExitCode;

use toolhost_files::text;

/// Returns the text the plugin would return (content, then the continuation note if any).
pub(super) fn read_file(workspace: &Path, arguments: &serde_json::Value) -> Result<String, String> {
    let path = arguments.get("path").and_then(|p| p.as_str()).ok_or("`path` is required")?;
    let relative = Path::new(path);
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("`{path}` must stay inside the workspace"));
    }
    let offset = arguments.get("offset").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
    let limit = arguments.get("limit").and_then(|v| v.as_u64()).map_or(text::DEFAULT_LINE_LIMIT, |l| l as usize);
    let mut file = File::open(workspace.join(relative)).map_err(|e| format!("`{path}`: {e}"))?;
    let window = text::read_lines(
        |at, max| {
            let mut data = Vec::new();
            file.seek(SeekFrom::Start(at))?;
            (&mut file).take(max).read_to_end(&mut data)?;
            Ok::<_, std::io::Error>(data)
        },
        offset,
        limit,
    )
    .map_err(|e| format!("`{path}`: {e}"))?;
    let mut out = window.content.clone();
    if let Some(note) = text::continuation_note(path, &window) {
        out.push_str(&note);
    }
    Ok(out)
}

/// The hidden `__native-read-file` command: one native call in its own process.
pub(super) fn read_file_process(workspace: &Path, args: &str) -> anyhow::Result<ExitCode> {
    let arguments: serde_json::Value = serde_json::from_str(args)?;
    match read_file(workspace, &arguments) {
        Ok(text) => {
            println!("{}", serde_json::json!({ "content": [{ "type": "text", "text": text }], "is_error": false }));
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => anyhow::bail!(reason),
    }
}
