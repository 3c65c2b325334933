//! Compiled components cached on disk, so a restart loads plugins without recompiling.
//!
//! The key is the component's SHA-256 and the engine's compatibility hash (Wasmtime version,
//! target, and every setting that changes generated code), so a cached file is only ever used
//! by an engine that can run it. Files are written to a temporary name and renamed, so a crash
//! mid-write never leaves a truncated artifact under a real key.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ComponentCache {
    /// A cache in `dir`, or none (always compile) when `dir` is `None`.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> ComponentCache {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache { dir, engine_key: format!("{:016x}", hasher.finish()) }
    }

    /// The compiled component, and whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, bool)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, false));
        };
        let path = dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        // Read into memory rather than map the file: a mapped file truncated by someone else
        // while the server runs would kill the process with SIGBUS.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the artifact was produced by `Component::serialize` of an engine with the
            // same compatibility hash, in a directory only Toolhost writes to; Wasmtime still
            // checks its header and refuses an artifact that does not fit this engine.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cached component; recompiling")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(&path, &component.serialize()?) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache a compiled component; the next start compiles it again");
        }
        Ok((component, false))
    }
}

fn store(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temp, artifact)?;
    std::fs::rename(&temp, path)
}
