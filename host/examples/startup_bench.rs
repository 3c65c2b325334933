//! Time from starting `toolhost serve` to listening, and to its plugins being in service, with a
//! Python and a JavaScript plugin in its plugins directory that were never compiled (a fresh
//! data directory each run: no compiled-component cache), then again with the cache warm.
//!
//! The components are the examples `tests/plugin_languages.rs` builds with componentize-py and
//! componentize-js (into the target folder's `tmp/`), so run that test once first:
//!
//! ```sh
//! cargo test-all --test plugin_languages && cargo build --release \
//!   && cargo run --release -p toolhost --example startup_bench -- [--runs 3]
//! ```
//! The last line is JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{arg, percentile};
use serde_json::json;

/// The `toolhost` binary beside this example's folder (`cargo build --release` makes it).
fn toolhost() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("toolhost");
    assert!(binary.is_file(), "build the server first: cargo build --release ({} is missing)", binary.display());
    binary
}

/// The built Python and JavaScript examples.
fn components() -> Vec<PathBuf> {
    let tmp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let built = [tmp.join("page_title_py.wasm"), tmp.join("page_title.wasm")];
    for component in &built {
        assert!(
            component.is_file(),
            "{} is missing: run `cargo test-all --test plugin_languages` first, which builds it",
            component.display()
        );
    }
    built.to_vec()
}

/// Milliseconds from spawning `serve` to its "listening" line and to its "plugins ready" line.
fn one_start(data_dir: &Path, plugins_dir: &Path) -> (f64, f64) {
    let started = Instant::now();
    let mut child = Command::new(toolhost())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .env_remove("DATABASE_URL")
        .env_remove("TOOLHOST_CONFIG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut listening = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        let at = started.elapsed().as_secs_f64() * 1e3;
        if line.starts_with("toolhost: listening on ") {
            listening = Some(at);
        }
        if line.starts_with("toolhost: plugins ready") {
            let _ = child.kill();
            let _ = child.wait();
            return (listening.expect("it listens before its plugins are ready"), at);
        }
    }
    let _ = child.wait();
    panic!("the server ended before its plugins were ready");
}

fn main() {
    let runs: usize = arg("--runs", "3").parse().expect("--runs is a number");
    let plugins = tempfile::tempdir().unwrap();
    let components = components();
    let mut total_kib = 0;
    for component in &components {
        total_kib += std::fs::metadata(component).unwrap().len() / 1024;
        std::fs::copy(component, plugins.path().join(component.file_name().unwrap())).unwrap();
    }
    let (mut cold_listen, mut cold_ready, mut warm_listen, mut warm_ready) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let data = tempfile::tempdir().unwrap();
        let (listen, ready) = one_start(data.path(), plugins.path());
        println!("run {run}: nothing compiled: listening after {listen:.0} ms, plugins in service after {ready:.0} ms");
        cold_listen.push(listen);
        cold_ready.push(ready);
        let (listen, ready) = one_start(data.path(), plugins.path());
        println!(
            "run {run}: compiled before:   listening after {listen:.0} ms, plugins in service after {ready:.0} ms"
        );
        warm_listen.push(listen);
        warm_ready.push(ready);
    }
    for list in [&mut cold_listen, &mut cold_ready, &mut warm_listen, &mut warm_ready] {
        list.sort_by(f64::total_cmp);
    }
    let figures = json!({
        "benchmark": "startup",
        "plugins": ["page-title-py (componentize-py)", "page-title (componentize-js)"],
        "plugin_kib": total_kib,
        "runs": runs,
        "uncompiled_listening_ms_p50": percentile(&cold_listen, 0.5),
        "uncompiled_listening_ms_max": cold_listen.last(),
        "uncompiled_plugins_ready_ms_p50": percentile(&cold_ready, 0.5),
        "cached_listening_ms_p50": percentile(&warm_listen, 0.5),
        "cached_plugins_ready_ms_p50": percentile(&warm_ready, 0.5),
        "target_listening_ms": 1000,
    });
    println!("{figures}");
}
