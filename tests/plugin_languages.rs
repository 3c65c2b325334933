//! Plugins written in other languages than Rust, as their authors build them: the examples
//! under `examples/plugins/` are built with their language's tool from its registry (installed
//! on first run under the target folder, pinned), loaded as third-party plugins, and called
//! through a chat: they log, and reach the web only where the policy grants them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

#[path = "support/process.rs"]
mod process;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::routing::get;
use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, fake_llm, tool_results};

/// The JavaScript tool, pinned: a newer one may change what it makes.
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
/// The Python tool, pinned likewise.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins")
}

fn tmp() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf()
}

/// Runs `command`, failing the test with its output when it fails.
fn run(command: &mut std::process::Command, what: &str) {
    let done = command.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        done.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
}

/// Held while a tool is installed: the tests run at once and would install it together.
static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// componentize-js, installed under the target folder if it is not yet.
fn componentize_js() -> PathBuf {
    let _installing = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let tools = tmp().join("componentize-js");
    let installed = tools.join("installed.txt");
    if std::fs::read_to_string(&installed).ok().as_deref() != Some(COMPONENTIZE_JS) {
        std::fs::create_dir_all(&tools).unwrap();
        run(
            std::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&tools)
                .arg(COMPONENTIZE_JS),
            "npm install (bash .ci/system-deps installs npm)",
        );
        std::fs::write(&installed, COMPONENTIZE_JS).unwrap();
    }
    tools.join("node_modules/.bin/componentize-js")
}

/// The JavaScript example built by componentize-js, as `npm run build` in its folder would;
/// built once for the tests that use it.
fn build_js_example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_js_example_now).clone()
}

fn build_js_example_now() -> PathBuf {
    let out = tmp().join("page_title.wasm");
    run(
        std::process::Command::new(componentize_js())
            .current_dir(examples().join("js/page-title"))
            .args(["--wit", "wit", "--world-name", "plugin", "--out"])
            .arg(&out)
            .arg("plugin.js"),
        "componentize-js",
    );
    out
}

/// The WASI packages' WIT (wasi:http and what it uses), as the wasmtime-wasi-http crate the host
/// is built with ships them (in Cargo's registry, where the build unpacked it): the version of
/// wasi:http the host provides.
fn wasi_wit() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime-wasi-http\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("the host depends on wasmtime-wasi-http");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let unpacked = std::fs::read_dir(cargo_home.join("registry/src")).unwrap().flatten();
    unpacked
        .map(|index| index.path().join(format!("wasmtime-wasi-http-{version}/wit/deps")))
        .find(|deps| deps.is_dir())
        .unwrap_or_else(|| panic!("wasmtime-wasi-http {version} is not unpacked under {}", cargo_home.display()))
}

/// Copies `from` into `to`, following links (the examples link the Toolhost WIT).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path()).unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// componentize-py, installed in a virtual environment under the target folder if it is not yet.
fn componentize_py() -> PathBuf {
    let _installing = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    support::python_venv_with("componentize-py", COMPONENTIZE_PY).join("bin/componentize-py")
}

/// The Python example built by componentize-py, with the WASI WIT it names in `wit/deps`; built
/// once for the tests that use it.
fn build_python_example() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_python_example_now).clone()
}

fn build_python_example_now() -> PathBuf {
    let componentize_py = componentize_py();
    let build = tmp().join("page-title-py");
    let _ = std::fs::remove_dir_all(&build);
    copy_tree(&examples().join("python/page-title"), &build);
    copy_tree(&wasi_wit(), &build.join("wit/deps"));
    let out = tmp().join("page_title_py.wasm");
    run(
        std::process::Command::new(componentize_py)
            .current_dir(&build)
            .args(["-d", "wit", "-w", "plugin", "componentize", "page_title", "-o"])
            .arg(&out),
        "componentize-py",
    );
    out
}

/// A web page to read the title of, on an ephemeral port.
async fn page_server() -> SocketAddr {
    let app = axum::Router::new().route(
        "/",
        get(|| async { axum::response::Html("<html><head><title>Hello from the test server</title></head></html>") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// The default policy, and: `plugin` may log and reach `http://localhost:PORT`, connecting to
/// the private address 127.0.0.1:PORT.
fn grants(plugin: &str, port: u16) -> String {
    format!(
        r#"{default}
@id("{plugin}-logs")
permit (principal, action == Action::"use_capability", resource == Capability::"log")
when {{ context.plugin.name == "{plugin}" }};

@id("{plugin}-reaches-the-test-server")
permit (principal, action == Action::"use_capability", resource == Capability::"http")
when {{ context.plugin.name == "{plugin}" && context has scope && context.scope == "http://localhost:{port}" }};

@id("{plugin}-connects-to-the-test-server")
permit (principal, action == Action::"use_capability", resource == Capability::"http-private-address")
when {{ context.plugin.name == "{plugin}" && context has scope && context.scope == "127.0.0.1:{port}" }};
"#,
        default = toolhost::policy::DEFAULT_POLICY
    )
}

/// Loads `component` (plugin `plugin`, tool `tool`), grants it one origin, and has a chat
/// call it for that origin and another: the first answers with the page's title, the second is
/// refused by the host (the plugin's error says so, in its own words) and audited.
async fn fetches_only_what_it_is_granted(component: PathBuf, plugin: &str, tool: &str, refusal: &str) {
    let page = page_server().await;
    let server = TestServer::builder().plugin_files(&[component]).start().await;
    let admin = server.user("root", true).await;
    let saved = server
        .http
        .put(server.url("/api/v1/policy"))
        .bearer_auth(&admin)
        .json(&json!({"policy": grants(plugin, page.port())}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::OK, "{}", saved.text().await.unwrap());

    let alice = server.user("alice", false).await;
    let granted = json!({"url": format!("http://localhost:{}/", page.port())}).to_string();
    let refused = json!({"url": format!("http://127.0.0.1:{}/", page.port())}).to_string();
    server.llm.script([
        fake_llm::tool_calls(&[("granted", tool, granted.as_str()), ("refused", tool, refused.as_str())]),
        fake_llm::text("done"),
    ]);
    let (status, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "titles?"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let results = tool_results(&server.finished(chat["id"].as_str().unwrap()).await);
    assert_eq!(results.len(), 2, "{results:?}");
    // In call order: the granted origin, then the other one.
    let (_, title, is_error) = &results[0];
    assert!(!is_error && title == "Hello from the test server", "{title}");
    let (_, denied, is_error) = &results[1];
    assert!(*is_error && denied.contains(refusal), "the origin 127.0.0.1 is not granted: {denied}");
    let refused_origin = format!("http://127.0.0.1:{}", page.port());
    let mut audited = false;
    for _ in 0..100 {
        let (status, audit) = server.get(&admin, "/api/v1/policy/audit").await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        audited = audit["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["plugin"] == plugin && d["capability"] == "http" && d["scope"] == refused_origin.as_str());
        if audited {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audited, "the refused request is in the audit log");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_plugin_built_with_componentize_js_logs_and_fetches_what_it_is_granted() {
    let component = tokio::task::spawn_blocking(build_js_example).await.unwrap();
    // The JavaScript runtime's fetch reports only a NetworkError; the audit log has the reason.
    fetches_only_what_it_is_granted(component, "page-title", "page_title", "cannot fetch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_built_with_componentize_py_logs_and_fetches_what_it_is_granted() {
    let component = tokio::task::spawn_blocking(build_python_example).await.unwrap();
    fetches_only_what_it_is_granted(
        component,
        "page-title-py",
        "page_title_py",
        "the tool policy does not let this plugin reach",
    )
    .await;
}

/// `toolhost plugin new NAME --lang js|python` makes a plugin that builds with the command it
/// prints and answers a call.
#[test]
fn the_javascript_and_python_scaffolds_build_and_answer() {
    let toolhost = env!("CARGO_BIN_EXE_toolhost");
    let parent = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for (lang, name) in [("js", "words-js"), ("python", "words-py")] {
        run(
            std::process::Command::new(toolhost)
                .args(["plugin", "new", name, "--lang", lang, "--path"])
                .arg(parent.path()),
            "toolhost plugin new",
        );
        let dir = parent.path().join(name);
        let module = name.replace('-', "_");
        let out = dir.join(format!("{module}.wasm"));
        if lang == "js" {
            run(
                std::process::Command::new(componentize_js())
                    .current_dir(&dir)
                    .args(["--wit", "wit", "--world-name", "plugin", "--out"])
                    .arg(&out)
                    .arg("plugin.js"),
                "componentize-js on the scaffold",
            );
        } else {
            run(
                std::process::Command::new(componentize_py())
                    .current_dir(&dir)
                    .args(["-d", "wit", "-w", "plugin", "componentize", &module, "-o"])
                    .arg(&out),
                "componentize-py on the scaffold",
            );
        }
        let called = std::process::Command::new(toolhost)
            .arg("--plugins-dir")
            .arg(&dir)
            .args(["plugin", "call", &format!("{module}_count_words"), "--args", r#"{"text": "one two three"}"#])
            .env("TOOLHOST_DATA_DIR", data.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&called.stdout);
        assert!(called.status.success(), "{lang}: {stdout}{}", String::from_utf8_lossy(&called.stderr));
        let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(result["content"][0]["text"], "3 words", "{lang}: {result}");
        assert_eq!(result["is_error"], false);
    }
}

/// A server whose plugins directory holds a Python and a JavaScript plugin never compiled
/// (a fresh data directory: nothing cached) listens before they are compiled: the API answers,
/// readiness and the models list say what is still compiling, and the tools come into service
/// when they are ready. (How long each step takes is measured by `startup_bench`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listens_before_its_python_and_javascript_plugins_are_compiled() {
    let js = tokio::task::spawn_blocking(build_js_example).await.unwrap();
    let python = tokio::task::spawn_blocking(build_python_example).await.unwrap();
    let plugins = tempfile::tempdir().unwrap();
    for component in [&js, &python] {
        std::fs::copy(component, plugins.path().join(component.file_name().unwrap())).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let deployment = process::Deployment { data_dir: data.path().to_path_buf(), database_url: None, config_file: None };
    let created = deployment.run(&["users", "create", "root", "--admin"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = deployment.run(&["tokens", "create", "root"]);
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    let mut server = deployment
        .command()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--plugins-dir")
        .arg(plugins.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = server.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| {
        lines
            .recv_timeout(std::time::Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("the server never said {what}"))
    };
    let base = loop {
        let line = next_line("where it listens");
        assert!(!line.starts_with("toolhost: plugins ready"), "it listens before its plugins are ready: {line}");
        if let Some(rest) = line.strip_prefix("toolhost: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let http = reqwest::Client::new();
    let live = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let not_ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(not_ready["error"]["code"], "loading_plugins", "{not_ready}");
    let models: serde_json::Value =
        http.get(format!("{base}/api/v1/models")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let compiling = models["plugins_compiling"].as_array().expect("the models list says what compiles");
    assert!(!compiling.is_empty(), "{models}");

    loop {
        if next_line("that its plugins are ready").starts_with("toolhost: plugins ready") {
            break;
        }
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let models: serde_json::Value =
        http.get(format!("{base}/api/v1/models")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["plugins_compiling"], json!([]), "{models}");
    let listed: serde_json::Value =
        http.get(format!("{base}/api/v1/plugins")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    for name in ["page-title", "page-title-py"] {
        let plugin = listed["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name);
        let plugin = plugin.unwrap_or_else(|| panic!("{name} is listed: {listed}"));
        assert_eq!((plugin["state"].as_str(), plugin["origin"].as_str()), (Some("loaded"), Some("file")), "{plugin}");
    }
    let _ = server.kill();
    let _ = server.wait();
}
