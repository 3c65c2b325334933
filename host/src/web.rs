//! The browser app: built from `web/` by the build script (TypeScript and Preact, bundled by
//! Vite), its files embedded in the binary, so that `toolhost serve` needs nothing beside it.

use std::borrow::Cow;

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

/// The app's file at `path` (no leading slash).
pub fn asset(path: &str) -> Option<Asset> {
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
