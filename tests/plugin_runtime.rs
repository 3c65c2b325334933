//! The plugin runtime, specified through its behaviour with the real bundled plugins and the
//! hostile fixtures (all built from this workspace by host/build.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tempfile::TempDir;
use toolhost::domain::ChatKind;
use toolhost::plugins::capabilities::Grants;
use toolhost::plugins::capabilities::progress::ProgressUpdate;
use toolhost::plugins::{
    CallContext, CallError, CallRequest, ContentPart, LimitsConfig, PluginLimits, PluginRuntime, RuntimeOptions,
    ToolOutput,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("TOOLHOST_WASM_DIR")).join(format!("fixture_{}.wasm", name.replace('-', "_")))
}

/// A plugins directory holding copies of the named fixtures (as `NAME.wasm`).
fn plugins_dir(fixtures: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in fixtures {
        std::fs::copy(fixture(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

fn options(plugins: Option<&Path>, defaults: PluginLimits) -> RuntimeOptions {
    RuntimeOptions {
        plugins_dir: plugins.map(Path::to_path_buf),
        limits: LimitsConfig { defaults, ..LimitsConfig::default() },
        ..RuntimeOptions::default()
    }
}

async fn runtime_with(fixtures: &[&str], limits: PluginLimits) -> (PluginRuntime, TempDir) {
    let dir = plugins_dir(fixtures);
    let runtime = PluginRuntime::load(options(Some(dir.path()), limits)).await.unwrap();
    (runtime, dir)
}

fn request(tool: &str, arguments: Value, workspace: Option<&Path>) -> CallRequest {
    CallRequest {
        tool: tool.into(),
        arguments,
        context: CallContext {
            chat_id: "chat-1".into(),
            root_chat_id: "chat-1".into(),
            parent_chat_id: None,
            kind: ChatKind::Root,
            user_id: "user-1".into(),
            call_id: "call-1".into(),
        },
        workspace: workspace
            .map(|path| toolhost::workspace::confined::WorkspaceRoot { path: path.to_path_buf(), owner: None }),
        chat: None,
        grants: None,
        progress: None,
    }
}

fn text(output: &ToolOutput) -> String {
    output
        .content
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => text.clone(),
            other => panic!("expected text, got {other:?}"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn workspace_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    dir
}

async fn assert_still_serves(runtime: &PluginRuntime) {
    let output = runtime.call(request("echo", json!({"path": "still here"}), None)).await.unwrap();
    assert_eq!(text(&output), "still here");
}

#[tokio::test]
async fn the_bundled_files_plugin_loads_with_the_capabilities_it_imports() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let files = runtime.loaded().plugin("files").cloned().expect("files is bundled");
    assert_eq!(files.capabilities, vec!["workspace-fs"]);
    assert_eq!(files.wit_version, "0.1.0");
    let tools: Vec<&str> = files.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tools, ["read_file", "write_file", "edit_files"]);
    let read_file = runtime.loaded().tool("read_file").cloned().unwrap();
    assert!(read_file.annotations.read_only && !read_file.annotations.destructive);
    assert_eq!(read_file.input_schema["properties"]["path"]["type"], "string");
    assert!(runtime.loaded().refused().is_empty(), "{:?}", runtime.loaded().refused());
}

#[tokio::test]
async fn read_file_returns_a_window_of_lines_and_says_how_to_read_on() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let lines: String = (1..=10).map(|n| format!("line {n}\n")).collect();
    let ws = workspace_with(&[("notes.txt", &lines)]);
    let output = runtime
        .call(request("read_file", json!({"path": "notes.txt", "offset": 2, "limit": 3}), Some(ws.path())))
        .await
        .unwrap();
    assert!(!output.is_error);
    let [ContentPart::Text { text: content }, ContentPart::Text { text: note }] = output.content.as_slice() else {
        panic!("expected content and a note, got {:?}", output.content);
    };
    assert_eq!(content, "line 2\nline 3\nline 4\n");
    assert!(note.contains("lines 2-4") && note.contains("offset=5"), "{note}");

    let whole = runtime.call(request("read_file", json!({"path": "notes.txt"}), Some(ws.path()))).await.unwrap();
    assert_eq!(text(&whole), lines, "a file read to its end carries no note");
}

/// Files past the size read on the calling thread (256 KiB) are read on a blocking thread, whole.
#[tokio::test]
async fn read_file_reads_a_large_file_to_its_end() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let lines: String = (1..=3000).map(|n| format!("{n:>6} {}\n", "x".repeat(193))).collect();
    assert!(lines.len() > 512 * 1024);
    let ws = workspace_with(&[("big.txt", &lines)]);
    let output = runtime
        .call(request("read_file", json!({"path": "big.txt", "offset": 2998, "limit": 5}), Some(ws.path())))
        .await
        .unwrap();
    assert!(!output.is_error, "{output:?}");
    let expected: String = (2998..=3000).map(|n| format!("{n:>6} {}\n", "x".repeat(193))).collect();
    assert_eq!(text(&output), expected);
}

#[tokio::test]
async fn read_file_explains_directories_missing_files_and_binary_files() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let ws = workspace_with(&[("bin/tool", "\u{7f}ELF\0\0\0"), ("src/a.rs", "")]);
    let missing = runtime.call(request("read_file", json!({"path": "nope.txt"}), Some(ws.path()))).await.unwrap_err();
    assert_eq!(missing.code(), "not_found");
    assert!(missing.to_string().contains("nope.txt"));
    let dir = runtime.call(request("read_file", json!({"path": "src"}), Some(ws.path()))).await.unwrap_err();
    assert!(dir.to_string().contains("is a directory"), "{dir}");
    let binary = runtime.call(request("read_file", json!({"path": "bin/tool"}), Some(ws.path()))).await.unwrap();
    assert!(binary.is_error && text(&binary).contains("binary file"));
    let no_workspace = runtime.call(request("read_file", json!({"path": "a"}), None)).await.unwrap_err();
    assert!(no_workspace.to_string().contains("no workspace"), "{no_workspace}");
}

#[tokio::test]
async fn write_file_creates_parent_folders() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    let args = json!({"path": "deep/er/new.txt", "content": "hello\n"});
    let created = runtime.call(request("write_file", args.clone(), Some(ws.path()))).await.unwrap();
    assert!(text(&created).starts_with("Created"));
    assert_eq!(std::fs::read_to_string(ws.path().join("deep/er/new.txt")).unwrap(), "hello\n");
    let replaced = runtime.call(request("write_file", args, Some(ws.path()))).await.unwrap();
    assert!(text(&replaced).starts_with("Replaced"));
    let leftovers: Vec<_> = std::fs::read_dir(ws.path().join("deep/er")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files are left behind");
}

#[tokio::test]
async fn edit_files_applies_every_edit_or_none() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let ws = workspace_with(&[("a.rs", "fn a() {}\nfn b() {}\n"), ("b.rs", "let x = 1;\nlet x = 1;\n")]);
    let failing = json!({"files": [
        {"path": "a.rs", "edits": [{"search": "fn a() {}", "replace": "fn a() { todo!() }"}]},
        {"path": "b.rs", "edits": [{"search": "let x = 1;", "replace": "let x = 2;"}]}
    ]});
    let error = runtime.call(request("edit_files", failing, Some(ws.path()))).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("edit 1 of `b.rs`") && message.contains("matches 2 times"), "{message}");
    assert_eq!(std::fs::read_to_string(ws.path().join("a.rs")).unwrap(), "fn a() {}\nfn b() {}\n", "a.rs untouched");

    let passing = json!({"files": [
        {"path": "a.rs", "edits": [{"search": "fn a() {}", "replace": "fn a() { 1 }"}, {"search": "fn a() { 1 }\nfn b", "replace": "fn a() { 2 }\nfn c"}]},
        {"path": "b.rs", "edits": [{"search": "let x = 1;", "replace": "let x = 2;", "replace_all": true}]}
    ]});
    let output = runtime.call(request("edit_files", passing, Some(ws.path()))).await.unwrap();
    assert_eq!(text(&output), "Edited `a.rs` (2 edits), `b.rs` (1 edit).");
    assert_eq!(std::fs::read_to_string(ws.path().join("a.rs")).unwrap(), "fn a() { 2 }\nfn c() {}\n");
    assert_eq!(std::fs::read_to_string(ws.path().join("b.rs")).unwrap(), "let x = 2;\nlet x = 2;\n");

    let missing = json!({"files": [{"path": "a.rs", "edits": [{"search": "fn zzz", "replace": ""}]}]});
    let error = runtime.call(request("edit_files", missing, Some(ws.path()))).await.unwrap_err();
    assert!(error.to_string().contains("was not found"), "{error}");
}

#[tokio::test]
async fn arguments_are_checked_against_the_schema_before_the_plugin_runs() {
    let runtime = PluginRuntime::load(RuntimeOptions::default()).await.unwrap();
    let missing = runtime.call(request("read_file", json!({"offset": 1}), None)).await.unwrap_err();
    assert!(matches!(missing, CallError::InvalidArguments { .. }));
    assert!(missing.to_string().contains("\"path\" is a required property"), "{missing}");
    let wrong_type = runtime.call(request("read_file", json!({"path": "a", "limit": "ten"}), None)).await.unwrap_err();
    assert!(wrong_type.to_string().contains("/limit"), "{wrong_type}");
    let unknown = runtime.call(request("raed_file", json!({}), None)).await.unwrap_err();
    assert_eq!(unknown.code(), "unknown_tool");
    assert!(unknown.to_string().contains("did you mean `read_file`"), "{unknown}");
}

fn quick_limits() -> PluginLimits {
    PluginLimits { timeout_ms: 500, memory_mib: 32, max_result_kib: 64, ..PluginLimits::default() }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_time_limit_and_the_next_call_works() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let error = runtime.call(request("spin", json!({}), None)).await.unwrap_err();
    assert_eq!(error.code(), "timeout");
    let message = error.to_string();
    assert!(
        message.contains("plugin `hostile`") && message.contains("time limit of 500 ms") && message.contains("`spin`"),
        "{message}"
    );
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_memory_hog_is_stopped_at_the_memory_limit_and_the_next_call_works() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let error = runtime.call(request("hog", json!({}), None)).await.unwrap_err();
    assert_eq!(error.code(), "memory_limit", "{error}");
    assert!(error.to_string().contains("memory limit of 32 MiB"), "{error}");
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_panic_becomes_a_crash_report_with_the_panic_message() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let error = runtime.call(request("panic", json!({}), None)).await.unwrap_err();
    assert_eq!(error.code(), "crashed");
    assert!(error.to_string().contains("the hostile plugin panicked on purpose"), "{error}");
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn an_oversized_result_is_refused_and_a_small_one_passes() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let error = runtime.call(request("huge", json!({"bytes": 1_000_000}), None)).await.unwrap_err();
    assert_eq!(error.code(), "result_too_large");
    assert!(error.to_string().contains("result size limit of 64 KiB"), "{error}");
    let small = runtime.call(request("huge", json!({"bytes": 1000}), None)).await.unwrap();
    assert_eq!(text(&small).len(), 1000);
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow_and_the_next_call_works() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let error = runtime.call(request("recurse", json!({}), None)).await.unwrap_err();
    assert_eq!(error.code(), "stack_overflow", "{error}");
    assert!(error.to_string().contains("stack limit of 512 KiB"), "{error}");
    assert_still_serves(&runtime).await;
    let error = runtime.call(request("recurse_big_frames", json!({}), None)).await.unwrap_err();
    assert_eq!(error.code(), "crashed", "{error}");
    assert!(error.to_string().contains("stack overflow"), "{error}");
    assert_still_serves(&runtime).await;
}

#[tokio::test]
async fn workspace_fs_refuses_every_way_out_of_the_workspace() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let outside = workspace_with(&[("secret.txt", "TOP SECRET")]);
    let ws = workspace_with(&[("inside.txt", "fine")]);
    std::os::unix::fs::symlink(outside.path(), ws.path().join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), ws.path().join("secret-link")).unwrap();
    std::os::unix::fs::symlink("inside.txt", ws.path().join("inner-link")).unwrap();
    let secret = outside.path().join("secret.txt");
    let relative_escape = format!("../{}/secret.txt", outside.path().file_name().unwrap().to_string_lossy());
    for path in
        [relative_escape.as_str(), secret.to_str().unwrap(), "escape/secret.txt", "secret-link", "a/../../secret.txt"]
    {
        let error = runtime.call(request("read", json!({"path": path}), Some(ws.path()))).await.unwrap_err();
        assert_eq!(error.code(), "denied", "{path}: {error}");
        assert!(!error.to_string().contains("TOP SECRET"));
    }
    let inner = runtime.call(request("read", json!({"path": "inner-link"}), Some(ws.path()))).await.unwrap();
    assert_eq!(text(&inner), "fine", "a symlink that stays inside is followed");
}

#[tokio::test]
async fn a_capability_that_is_not_granted_is_denied_to_the_plugin() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let ws = workspace_with(&[("inside.txt", "fine")]);
    let mut call = request("read", json!({"path": "inside.txt"}), Some(ws.path()));
    call.grants = Some(Grants::of(["log"]));
    let error = runtime.call(call).await.unwrap_err();
    assert_eq!(error.code(), "denied");
    assert!(error.to_string().contains("not granted the `workspace-fs` capability"), "{error}");
}

#[tokio::test]
async fn progress_reports_reach_the_call_s_sink() {
    let (runtime, _dir) = runtime_with(&["hostile"], quick_limits()).await;
    let seen: Arc<Mutex<Vec<ProgressUpdate>>> = Arc::default();
    let sink = seen.clone();
    let mut call = request("log_and_report", json!({}), None);
    call.progress = Some(Arc::new(move |update| sink.lock().unwrap().push(update)));
    runtime.call(call).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].message.as_str(), seen[0].fraction, seen[0].tool.as_str()),
        ("half way", Some(0.5), "log_and_report")
    );
}

#[tokio::test]
async fn a_spinning_call_does_not_hold_up_other_calls() {
    let limits = PluginLimits { timeout_ms: 60_000, ..quick_limits() };
    let (runtime, _dir) = runtime_with(&["hostile"], limits).await;
    let runtime = Arc::new(runtime);
    let spinner = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.call(request("spin", json!({}), None)).await })
    };
    for _ in 0..20 {
        assert_still_serves(&runtime).await;
    }
    assert!(!spinner.is_finished(), "the spinning call is still running while others were served");
    spinner.abort();
}

#[tokio::test]
async fn a_plugin_built_for_another_wit_version_is_refused_naming_both_versions() {
    let (runtime, dir) = runtime_with(&["wrong-version"], quick_limits()).await;
    let set = runtime.loaded();
    let [refusal] = set.refused() else { panic!("expected one refusal: {:?}", set.refused()) };
    assert_eq!(refusal.source, dir.path().join("wrong-version.wasm").display().to_string());
    assert!(
        refusal.reason.contains("toolhost:plugin@0.2.0") && refusal.reason.contains("toolhost:plugin@0.1.0"),
        "{}",
        refusal.reason
    );
    assert!(runtime.loaded().plugin("files").is_some(), "the other plugins still load");
}

#[tokio::test]
async fn a_tool_with_an_invalid_input_schema_is_refused() {
    let (runtime, _dir) = runtime_with(&["bad-schema"], quick_limits()).await;
    let set = runtime.loaded();
    let [refusal] = set.refused() else { panic!("expected one refusal: {:?}", set.refused()) };
    assert!(
        refusal.reason.contains("`bad_schema_tool`") && refusal.reason.contains("not valid JSON Schema"),
        "{}",
        refusal.reason
    );
}

#[tokio::test]
async fn a_tool_name_used_by_two_plugins_is_refused_for_the_second() {
    let dir = plugins_dir(&["hostile"]);
    std::fs::copy(fixture("hostile"), dir.path().join("zz-copy.wasm")).unwrap();
    let runtime = PluginRuntime::load(options(Some(dir.path()), quick_limits())).await.unwrap();
    let set = runtime.loaded();
    let [refusal] = set.refused() else { panic!("expected one refusal: {:?}", set.refused()) };
    assert!(refusal.source.ends_with("zz-copy.wasm"));
    assert!(refusal.reason.contains("already provided by plugin `hostile`"), "{}", refusal.reason);
}

#[tokio::test]
async fn files_that_are_not_tool_components_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm").unwrap();
    std::fs::write(dir.path().join("empty.wasm"), wat::parse_str("(component)").unwrap()).unwrap();
    std::fs::write(dir.path().join("core.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    let runtime = PluginRuntime::load(options(Some(dir.path()), quick_limits())).await.unwrap();
    let set = runtime.loaded();
    let reason = |file: &str| {
        let refusal =
            set.refused().iter().find(|r| r.source.ends_with(file)).unwrap_or_else(|| panic!("{file} refused"));
        refusal.reason.clone()
    };
    assert!(reason("garbage.wasm").contains("not a valid WebAssembly component"), "{}", reason("garbage.wasm"));
    assert!(reason("empty.wasm").contains("not a tool component"), "{}", reason("empty.wasm"));
    assert!(reason("core.wasm").contains("not a valid WebAssembly component"), "{}", reason("core.wasm"));
    let set = runtime.loaded();
    let loaded: Vec<&str> = set.plugins().map(|p| p.name.as_str()).collect();
    assert_eq!(
        loaded,
        ["files", "workspaces", "shell", "subagents", "computer"],
        "only the bundled plugins are loaded"
    );
}

#[tokio::test]
async fn a_component_importing_what_the_host_lacks_is_refused_before_compiling_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    // Each also holds a function that does not validate: compiling it would fail with another
    // message, so the refusal below shows the imports were read first.
    let invalid_code = "(core module (func (result i32)))";
    let component = |import: &str| format!("(component (import \"{import}\" (instance)) {invalid_code})");
    std::fs::write(
        dir.path().join("keyvalue.wasm"),
        wat::parse_str(component("wasi:keyvalue/store@0.2.0-draft")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("teleport.wasm"),
        wat::parse_str(component("toolhost:plugin/teleport@0.1.0")).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("future.wasm"), wat::parse_str(component("wasi:cli/environment@0.3.0")).unwrap())
        .unwrap();
    let runtime = PluginRuntime::load(options(Some(dir.path()), quick_limits())).await.unwrap();
    let set = runtime.loaded();
    let reason = |file: &str| {
        set.refused()
            .iter()
            .find(|r| r.source.ends_with(file))
            .unwrap_or_else(|| panic!("{file} refused"))
            .reason
            .clone()
    };
    let keyvalue = reason("keyvalue.wasm");
    assert!(
        keyvalue.contains("imports `wasi:keyvalue/store@0.2.0-draft`, which this host does not provide"),
        "{keyvalue}"
    );
    assert!(keyvalue.contains("wasi:http/outgoing-handler"), "it says what the host provides: {keyvalue}");
    let teleport = reason("teleport.wasm");
    assert!(teleport.contains("the capability `teleport`, which this host does not provide"), "{teleport}");
    let future = reason("future.wasm");
    assert!(future.contains("`wasi:cli/environment@0.3.0`"), "{future}");
}

#[tokio::test]
async fn compiled_components_are_cached_and_a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let with_cache = || RuntimeOptions { cache_dir: Some(cache.path().to_path_buf()), ..RuntimeOptions::default() };
    let first = PluginRuntime::load(with_cache()).await.unwrap();
    assert!(!first.loaded().plugins().next().unwrap().from_cache);
    let second = PluginRuntime::load(with_cache()).await.unwrap();
    assert!(second.loaded().plugins().next().unwrap().from_cache);
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"corrupt").unwrap();
    }
    let third = PluginRuntime::load(with_cache()).await.unwrap();
    assert!(!third.loaded().plugins().next().unwrap().from_cache);
    let ws = workspace_with(&[("a.txt", "ok\n")]);
    let output = third.call(request("read_file", json!({"path": "a.txt"}), Some(ws.path()))).await.unwrap();
    assert_eq!(text(&output), "ok\n");
}

#[tokio::test]
async fn impossible_limits_are_refused_before_anything_loads() {
    let limits = PluginLimits { memory_mib: 100_000, ..PluginLimits::default() };
    let error = PluginRuntime::load(options(None, limits)).await.err().expect("refused");
    assert!(error.to_string().contains("memory_mib"), "{error}");
}
