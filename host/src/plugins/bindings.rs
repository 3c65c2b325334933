//! Host-side bindings generated from `wit/`, one version of the package per folder. Only
//! `0.1.0` exists. When `0.2.0` comes, it is generated here too (its own `bindgen!` in a module
//! of its own, `v0_2_0`), the runtime and capabilities move to the newest, and a plugin built
//! against `0.1.0` is linked through an adapter that converts its types to the newest: what
//! `docs/plugins.md` promises authors.

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "tool",
    exports: { default: async },
    // Waiting for a command or a workspace suspends the call's fiber instead of a thread.
    imports: {
        "toolhost:plugin/workspaces": async,
        "toolhost:plugin/workspace-exec": async,
        // File work runs on a blocking thread (see `capabilities::workspace_fs`).
        "toolhost:plugin/workspace-fs": async,
        "toolhost:plugin/agents": async,
        // Screenshots and input run on a blocking thread; waits suspend the call.
        "toolhost:plugin/desktop": async,
        // Looking a secret up reads the database.
        "toolhost:plugin/secrets": async,
    },
});
