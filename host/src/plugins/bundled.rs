//! The plugins built from `plugins/` and shipped inside the binary (see `host/build.rs`).

/// `(file name, component bytes)` of every bundled plugin.
pub const BUNDLED: &[(&str, &[u8])] = &[
    ("files.wasm", include_bytes!(concat!(env!("TOOLHOST_WASM_DIR"), "/toolhost_files.wasm"))),
    ("workspaces.wasm", include_bytes!(concat!(env!("TOOLHOST_WASM_DIR"), "/toolhost_workspaces.wasm"))),
    ("shell.wasm", include_bytes!(concat!(env!("TOOLHOST_WASM_DIR"), "/toolhost_shell.wasm"))),
    ("subagents.wasm", include_bytes!(concat!(env!("TOOLHOST_WASM_DIR"), "/toolhost_subagents.wasm"))),
    ("computer.wasm", include_bytes!(concat!(env!("TOOLHOST_WASM_DIR"), "/toolhost_computer.wasm"))),
];
