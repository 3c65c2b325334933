//! The browser app: built from `web/` by the build script (TypeScript and Preact, bundled by
//! Vite), its files embedded in the binary, so that `toolhost serve` needs nothing beside it.
//!
//! Working on the app, `TOOLHOST_WEB_DEV_DIR` names a folder to serve it from instead (what
//! `npm run build -- --outDir DIR` writes), so a change to the app needs no rebuild of the
//! server.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

#[derive(rust_embed::Embed)]
#[folder = "$TOOLHOST_WEB_DIR"]
struct Built;

/// One of the app's files.
pub struct Asset {
    pub bytes: Cow<'static, [u8]>,
    pub content_type: String,
    /// Its name carries a hash of its content (`assets/…`): it never changes under that name.
    pub immutable: bool,
}

fn dev_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("TOOLHOST_WEB_DEV_DIR").filter(|d| !d.is_empty()).map(PathBuf::from)).as_deref()
}

/// A file of the folder `TOOLHOST_WEB_DEV_DIR` names; only plain names below it, never `..`.
fn from_disk(dir: &Path, path: &str) -> Option<Asset> {
    let relative = Path::new(path);
    if path.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let bytes = std::fs::read(dir.join(relative)).ok()?;
    Some(Asset {
        bytes: Cow::Owned(bytes),
        content_type: mime_guess::from_path(relative).first_or_octet_stream().to_string(),
        immutable: false,
    })
}

/// The app's file at `path` (no leading slash).
pub fn asset(path: &str) -> Option<Asset> {
    if let Some(dir) = dev_dir() {
        return from_disk(dir, path);
    }
    let file = Built::get(path)?;
    Some(Asset {
        bytes: file.data,
        content_type: file.metadata.mimetype().to_string(),
        immutable: path.starts_with("assets/"),
    })
}

/// The page every route of the app starts from.
pub fn index() -> Option<Asset> {
    asset("index.html")
}
