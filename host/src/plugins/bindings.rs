//! Host-side bindings generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool",
    exports: { default: async },
    // Waiting for a command or a workspace suspends the call's fiber instead of a thread.
    imports: {
        "toolhost:plugin/workspaces": async,
        "toolhost:plugin/workspace-exec": async,
        // File work runs on a blocking thread (see `capabilities::workspace_fs`).
        "toolhost:plugin/workspace-fs": async,
        "toolhost:plugin/agents": async,
    },
});
