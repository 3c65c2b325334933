//! Builds the bundled plugins (plugins/) and the test fixtures (tests/fixtures/) for
//! wasm32-wasip2, in the same workspace, so that `cargo build` and `cargo test` build host and
//! plugins in one step. The bundled plugins are embedded in the binary; the fixtures are only
//! used by tests (their folder is exported as `TOOLHOST_WASM_DIR`).
//!
//! Then the browser app (web/): its npm packages installed from the lock file when they are
//! missing or older than it, type-checked and bundled by Vite into `OUT_DIR/web`, which the
//! binary embeds (`TOOLHOST_WEB_DIR`).

// A build script reports failure by panicking, with the message cargo shows.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
/// A cargo profile of the workspace, tuned for small plugins.
const PROFILE: &str = "plugin";
const PACKAGES: &[&str] = &[
    "toolhost-files",
    "toolhost-workspaces",
    "toolhost-shell",
    "toolhost-subagents",
    "toolhost-computer",
    "fixture-hostile",
    "fixture-bad-schema",
    "fixture-wrong-version",
    "fixture-fetcher",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("host/ sits in the workspace").to_path_buf();
    for watched in ["wit", "plugins", "tests/fixtures", "migrations", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    let target_root =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    let target_dir = target_root.join("wasm-plugins");
    ensure_wasm_target();
    build_plugins(&workspace, &target_dir);
    let out = target_dir.join(WASM_TARGET).join(PROFILE);
    println!("cargo:rustc-env=TOOLHOST_WASM_DIR={}", out.display());
    let web_out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("web");
    build_web_app(&workspace.join("web"), &web_out);
    println!("cargo:rustc-env=TOOLHOST_WEB_DIR={}", web_out.display());
}

/// The files of web/ whose change rebuilds the app.
const WEB_SOURCES: &[&str] =
    &["src", "public", "index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"];

fn build_web_app(web: &Path, out: &Path) {
    for source in WEB_SOURCES {
        println!("cargo:rerun-if-changed={}", web.join(source).display());
    }
    let installed = web.join("node_modules/.package-lock.json");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified(&installed) < modified(&web.join("package-lock.json")) {
        npm(web, &["ci".as_ref(), "--no-audit".as_ref(), "--no-fund".as_ref()]);
    }
    npm(
        web,
        &[
            "run".as_ref(),
            "build".as_ref(),
            "--".as_ref(),
            "--outDir".as_ref(),
            out.as_os_str(),
            "--emptyOutDir".as_ref(),
        ],
    );
}

/// Runs npm in `web` with `args`.
fn npm(web: &Path, args: &[&std::ffi::OsStr]) {
    let status = Command::new("npm").current_dir(web).args(args).status().unwrap_or_else(|e| {
        panic!("the web app is built with Node.js and npm, which cannot be run ({e}); run `bash .ci/system-deps`, which installs them")
    });
    if !status.success() {
        panic!(
            "`npm {}` in {} failed (see the errors above)",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            web.display()
        );
    }
}

/// Installs the wasm32-wasip2 standard library with rustup when it is missing.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("rustc runs");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).exists() {
        return;
    }
    let installed = Command::new("rustup").args(["target", "add", WASM_TARGET]).status();
    if !matches!(installed, Ok(status) if status.success()) {
        panic!(
            "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed; install it and build again"
        );
    }
}

fn build_plugins(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", PROFILE, "--target", WASM_TARGET, "--target-dir"])
        .arg(target_dir);
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    if std::env::var_os("CARGO_NET_OFFLINE").is_some() {
        command.arg("--offline");
    }
    // Flags meant for the host build must not leak into the wasm build.
    for variable in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_BUILD_RUSTFLAGS"]
    {
        command.env_remove(variable);
    }
    let status = command.status().expect("cargo runs");
    if !status.success() {
        panic!("building the plugins for {WASM_TARGET} failed (see the errors above)");
    }
}
