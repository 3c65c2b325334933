//! The `toolhost plugin` commands, run as a user runs them: the real binary, real plugins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn toolhost(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("TOOLHOST_PLUGINS_DIR")
        .env_remove("TOOLHOST_CONFIG")
        .output()
        .expect("toolhost runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("TOOLHOST_WASM_DIR")).join(format!("fixture_{}.wasm", name.replace('-', "_")))
}

#[test]
fn plugin_list_shows_bundled_plugins_and_explains_refused_ones() {
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("wrong-version"), plugins.path().join("old.wasm")).unwrap();
    let plugins_dir = plugins.path().to_str().unwrap();
    let out = toolhost(data.path(), &["--plugins-dir", plugins_dir, "plugin", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let files = &listing["plugins"][0];
    assert_eq!(files["name"], "files");
    assert_eq!(files["capabilities"], serde_json::json!(["workspace-fs"]));
    assert_eq!(files["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(files["tools"].as_array().unwrap().len(), 3);
    let refused = &listing["refused"][0];
    assert!(refused["source"].as_str().unwrap().ends_with("old.wasm"));
    assert!(refused["reason"].as_str().unwrap().contains("0.2.0"));

    let table = toolhost(data.path(), &["--plugins-dir", plugins_dir, "plugin", "list"]);
    let text = stdout(&table);
    assert!(text.contains("files") && text.contains("read_file, write_file, edit_files"), "{text}");
    assert!(text.contains("refused:") && text.contains("old.wasm"), "{text}");
}

#[test]
fn plugin_call_prints_the_result_as_json() {
    let data = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("hello.txt"), "hello\nworld\n").unwrap();
    let out = toolhost(
        data.path(),
        &[
            "plugin",
            "call",
            "read_file",
            "--args",
            r#"{"path": "hello.txt", "limit": 1}"#,
            "--workspace",
            ws.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["is_error"], false);
    assert_eq!(result["content"][0], serde_json::json!({"type": "text", "text": "hello\n"}));
    assert!(result["content"][1]["text"].as_str().unwrap().contains("offset=2"));
}

#[test]
fn plugin_call_with_a_bad_tool_or_bad_arguments_exits_non_zero_with_one_line() {
    let data = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (vec!["plugin", "call", "no_such_tool", "--args", "{}"], "no tool named `no_such_tool`"),
        (vec!["plugin", "call", "read_file", "--args", "{}"], "\"path\" is a required property"),
        (vec!["plugin", "call", "read_file", "--args", "{not json"], "--args is not valid JSON"),
        (vec!["plugin", "call", "read_file", "--args", "[1]"], "--args must be a JSON object"),
    ] {
        let out = toolhost(data.path(), &args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        let reason: Vec<&str> = err.lines().filter(|l| l.starts_with("toolhost:")).collect();
        assert_eq!(reason.len(), 1, "one line of reason for {args:?}: {err}");
        assert!(reason[0].contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn plugin_inspect_reports_facts_or_the_refusal() {
    let data = tempfile::tempdir().unwrap();
    let good = toolhost(data.path(), &["plugin", "inspect", fixture("hostile").to_str().unwrap(), "--json"]);
    assert!(good.status.success(), "{}", stderr(&good));
    let info: Value = serde_json::from_str(&stdout(&good)).unwrap();
    assert_eq!(info["name"], "hostile");
    assert_eq!(info["capabilities"], serde_json::json!(["log", "progress", "workspace-fs"]));

    let bad = toolhost(data.path(), &["plugin", "inspect", fixture("wrong-version").to_str().unwrap()]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(
        err.contains("wrong_version.wasm")
            && err.contains("toolhost:plugin@0.2.0")
            && err.contains("toolhost:plugin@0.1.0"),
        "{err}"
    );
}

#[test]
fn plugin_bench_ends_with_a_json_line_of_figures() {
    let data = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("a.txt"), "one\ntwo\n").unwrap();
    let out = toolhost(
        data.path(),
        &[
            "plugin",
            "bench",
            "read_file",
            "--args",
            r#"{"path": "a.txt"}"#,
            "--workspace",
            ws.path().to_str().unwrap(),
            "--calls",
            "20",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["calls"], 20);
    for key in ["p50_us", "p99_us", "calls_per_sec", "native_p50_us", "process_p50_us", "load_ms"] {
        assert!(last[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {last}");
    }
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_loads() {
    let data = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let out = toolhost(data.path(), &["plugin", "new", "word-tools", "--path", parent.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let crate_dir = parent.path().join("word-tools");

    // Share the workspace's wasm build folder so the SDK's dependencies are not rebuilt.
    let target_dir = Path::new(env!("TOOLHOST_WASM_DIR")).ancestors().nth(2).unwrap().join("scaffold-test");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "the scaffold builds with one command: {}", stderr(&build));

    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(target_dir.join("wasm32-wasip2/release/word_tools.wasm"), plugins.path().join("word_tools.wasm"))
        .unwrap();
    let call = toolhost(
        data.path(),
        &[
            "--plugins-dir",
            plugins.path().to_str().unwrap(),
            "plugin",
            "call",
            "word_tools_count_words",
            "--args",
            r#"{"text": "one two three"}"#,
        ],
    );
    assert!(call.status.success(), "{}", stderr(&call));
    let result: Value = serde_json::from_str(&stdout(&call)).unwrap();
    assert_eq!(result["content"][0]["text"], "3 words");

    let again = toolhost(data.path(), &["plugin", "new", "word-tools", "--path", parent.path().to_str().unwrap()]);
    assert!(!again.status.success() && stderr(&again).contains("already exists"));
    let bad = toolhost(data.path(), &["plugin", "new", "Bad_Name"]);
    assert!(!bad.status.success() && stderr(&bad).contains("not a valid plugin name"));
}
