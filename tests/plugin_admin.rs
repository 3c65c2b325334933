//! Plugins administered live: admins upload components through the API (and the CLI), and
//! every replica checks, compiles, serves, disables, reconfigures and removes them without a
//! restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, fake_llm};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("TOOLHOST_WASM_DIR")).join(name)).unwrap()
}

/// The same component with a custom section appended: other bytes (another SHA-256), the same
/// plugin, as a rebuilt new version of it would be.
fn rebuilt(mut component: Vec<u8>, marker: &str) -> Vec<u8> {
    let name = b"toolhost-test";
    let payload = [&[name.len() as u8][..], name, marker.as_bytes()].concat();
    component.push(0);
    component.push(payload.len() as u8);
    component.extend(payload);
    component
}

async fn upload(server: &TestServer, token: &str, bytes: Vec<u8>, query: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/api/v1/plugins{query}")))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn patch(server: &TestServer, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .patch(server.url(&format!("/api/v1/plugins/{id}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The plugin once `server` has it in `state` (it compiles in the background).
async fn once_in_state(server: &TestServer, token: &str, id: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, plugin) = server.get(token, &format!("/api/v1/plugins/{id}")).await;
        if status == StatusCode::OK && plugin["state"] == state {
            return plugin;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never `{state}`: {status} {plugin}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tools a root chat of an admin sees on `server`, by name.
async fn visible_tools(server: &TestServer, token: &str) -> Vec<String> {
    let (status, explained) = server.post(token, "/api/v1/policy/explain", json!({"kind": "root"})).await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    let tools = explained["tools"].as_array().unwrap();
    tools.iter().filter(|t| t["visible"] == true).map(|t| t["tool"].as_str().unwrap().to_string()).collect()
}

/// Runs a chat through `server` whose model (`model`'s fake, shared by the replicas) calls
/// `tool` with `arguments`; returns the call's result text.
async fn call(server: &TestServer, model: &TestServer, token: &str, tool: &str, arguments: &str) -> String {
    model.llm.script([fake_llm::tool_calls(&[("c1", tool, arguments)]), fake_llm::text("done")]);
    let (status, chat) =
        server.post(token, "/api/v1/chats", json!({"content": [{"type": "text", "text": "fetch"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let messages = server.finished(chat["id"].as_str().unwrap()).await;
    let results = support::tool_results(&messages);
    let (_, result, _) = results.iter().find(|(called, _, _)| called == tool).expect("the call has a result");
    result.clone()
}

async fn call_fetch(server: &TestServer, model: &TestServer, token: &str) -> String {
    call(server, model, token, "fetch", r#"{"url": "http://example.invalid/"}"#).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_is_checked_compiled_and_served_by_every_replica_and_follows_every_change_without_restart() {
    let mut first = TestServer::builder().relayed().start().await;
    let second = TestServer::builder().replica_of(&first).start().await;
    let admin = first.user("root", true).await;
    let alice = first.user("alice", false).await;
    let fetcher = fixture("fixture_fetcher.wasm");
    assert!(!visible_tools(&second, &admin).await.contains(&"fetch".to_string()));

    // Members cannot upload; admins can, and the answer comes before the compile.
    assert_eq!(upload(&first, &alice, fetcher.clone(), "").await.0, StatusCode::FORBIDDEN);
    let (status, uploaded) = upload(&first, &admin, fetcher.clone(), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{uploaded}");
    assert_eq!(uploaded["origin"], "uploaded");
    assert_eq!(uploaded["uploaded_by"], "root");
    let sha = uploaded["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert!(
        uploaded["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasi:http/outgoing-handler@")),
        "its imports are shown at once: {uploaded}"
    );
    // Content-addressed: the same bytes again are the same plugin.
    let (status, again) = upload(&first, &admin, fetcher.clone(), "").await;
    assert_eq!((status, again["sha256"].as_str()), (StatusCode::OK, Some(sha.as_str())), "{again}");

    let on_first = once_in_state(&first, &admin, &sha, "loaded").await;
    assert_eq!(on_first["name"], "fetcher");
    assert_eq!(on_first["tools"][0]["name"], "fetch");
    assert!(on_first["capabilities"].as_array().unwrap().contains(&json!("http")), "{on_first}");
    // The other replica loads it on its own, from the database, without a restart.
    let on_second = once_in_state(&second, &admin, "fetcher", "loaded").await;
    assert_eq!(on_second["sha256"], sha.as_str());
    assert!(visible_tools(&second, &admin).await.contains(&"fetch".to_string()));
    // And its chats call it (the first replica's worker stopped: the chat runs on the second).
    first.stop_worker().await;
    let result = call_fetch(&second, &first, &admin).await;
    assert!(!result.contains("no tool named"), "the tool runs: {result}");

    // Settings: the plugin reads them in `describe` (it is described again) and in its calls.
    let (status, set) = patch(&first, &admin, "fetcher", json!({"settings": {"motto": "carpe diem"}})).await;
    assert_eq!((status, &set["settings"]), (StatusCode::OK, &json!({"motto": "carpe diem"})), "{set}");
    wait_until(|| async {
        let (_, plugin) = second.get(&admin, "/api/v1/plugins/fetcher").await;
        plugin["tools"].to_string().contains("motto: carpe diem")
    })
    .await;
    let settings = call(&second, &first, &admin, "fetcher_settings", "{}").await;
    assert_eq!(serde_json::from_str::<Value>(&settings).unwrap(), json!({"motto": "carpe diem"}), "{settings}");

    // Limits are checked, then follow on every replica.
    let (status, refused) = patch(&first, &admin, "fetcher", json!({"limits": {"timeout_ms": 0}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("timeout_ms"), "{refused}");
    let (status, limited) = patch(&first, &admin, "fetcher", json!({"limits": {"timeout_ms": 4321}})).await;
    assert_eq!(status, StatusCode::OK, "{limited}");
    wait_until(|| async { second.get(&admin, "/api/v1/plugins/fetcher").await.1["limits"]["timeout_ms"] == 4321 })
        .await;

    // Disabled: out of service everywhere, kept stored; a chat's call no longer finds it.
    let (status, disabled) = patch(&first, &admin, &sha, json!({"enabled": false})).await;
    assert_eq!((status, disabled["state"].as_str()), (StatusCode::OK, Some("disabled")), "{disabled}");
    once_in_state(&second, &admin, &sha, "disabled").await;
    wait_until(|| async { !visible_tools(&second, &admin).await.contains(&"fetch".to_string()) }).await;
    let result = call_fetch(&second, &first, &admin).await;
    assert!(result.contains("no tool named `fetch`"), "{result}");
    // Enabled again, with its limits as they were.
    assert_eq!(patch(&first, &admin, "fetcher", json!({"enabled": true})).await.0, StatusCode::OK);
    let back = once_in_state(&second, &admin, &sha, "loaded").await;
    assert_eq!(back["limits"]["timeout_ms"], 4321);

    // A new version (other bytes, the same name) replaces it once checked, keeping its limits.
    let (status, newer) = upload(&second, &admin, rebuilt(fetcher.clone(), "v2"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{newer}");
    let newer_sha = newer["sha256"].as_str().unwrap().to_string();
    assert_ne!(newer_sha, sha);
    once_in_state(&first, &admin, &newer_sha, "loaded").await;
    once_in_state(&second, &admin, &newer_sha, "loaded").await;
    let (_, listed) = first.get(&admin, "/api/v1/plugins").await;
    let fetchers: Vec<&Value> =
        listed["plugins"].as_array().unwrap().iter().filter(|p| p["name"] == "fetcher").collect();
    assert_eq!(fetchers.len(), 1, "the old version is gone: {listed}");
    assert_eq!(fetchers[0]["limit_overrides"]["timeout_ms"], 4321, "{listed}");

    // Removed: gone from every replica.
    let (status, _) = second.delete(&admin, "/api/v1/plugins/fetcher").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_until(|| async { !visible_tools(&first, &admin).await.contains(&"fetch".to_string()) }).await;
    let (status, gone) = first.get(&admin, &format!("/api/v1/plugins/{newer_sha}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");

    second.finish().await;
    first.finish().await;
}

async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(60), "the change never reached the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn uploads_the_host_cannot_run_are_refused_with_the_messages_of_loading() {
    let server = TestServer::start(support::Backend::Sqlite).await;
    let admin = server.user("root", true).await;

    // Refused at once, before anything is stored or compiled.
    let (status, refused) = upload(&server, &admin, b"not a component".to_vec(), "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "plugin_refused");
    assert!(refused["error"]["message"].as_str().unwrap().contains("not a valid WebAssembly component"), "{refused}");
    let core_module = wat::parse_str("(module)").unwrap();
    let (status, refused) = upload(&server, &admin, core_module, "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused["error"]["message"].as_str().unwrap().contains("it is a core module"), "{refused}");
    let future = wat::parse_str(r#"(component (import "wasi:cli/environment@0.3.0" (instance)))"#).unwrap();
    let (status, refused) = upload(&server, &admin, future, "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("wasi:cli/environment@0.3.0"),
        "names it: {refused}"
    );
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/plugins"))
        .bearer_auth(&admin)
        .json(&json!({"component": "base64?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("application/wasm"), "{body}");

    // Refused after compiling (a clash with a bundled plugin): stored as refused, with why.
    let (status, clash) = upload(&server, &admin, fixture("toolhost_files.wasm"), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{clash}");
    let sha = clash["sha256"].as_str().unwrap();
    let refused = once_in_state(&server, &admin, sha, "refused").await;
    assert!(refused["problem"].as_str().unwrap().contains("already provided by plugin `files`"), "{refused}");
    // Bundled plugins are not the API's to change.
    let (status, bundled) = patch(&server, &admin, "files", json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{bundled}");
    let (_, listed) = server.get(&admin, "/api/v1/plugins").await;
    let files = listed["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "files" && p["origin"] == "bundled");
    assert_eq!(files.expect("bundled plugins are listed")["state"], "loaded", "{listed}");
    assert_eq!(listed["started"], true);

    // Uploaded disabled: stored, not loaded.
    let (status, kept) = upload(&server, &admin, fixture("fixture_fetcher.wasm"), "?enabled=false").await;
    assert_eq!((status, kept["state"].as_str()), (StatusCode::ACCEPTED, Some("disabled")), "{kept}");
    assert!(!visible_tools(&server, &admin).await.contains(&"fetch".to_string()));
    // What is set before its first check is kept by the check.
    let sha = kept["sha256"].as_str().unwrap();
    let (status, set) = patch(&server, &admin, sha, json!({"limits": {"timeout_ms": 1234}, "enabled": true})).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let loaded = once_in_state(&server, &admin, sha, "loaded").await;
    assert_eq!(loaded["limits"]["timeout_ms"], 1234, "{loaded}");
    server.finish().await;
}

/// Runs `toolhost ARGS` against `server` as the holder of `token`: (success, stdout, stderr).
async fn toolhost(server: &TestServer, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_toolhost"));
    command.args(args).arg("--url").arg(server.url("")).env("TOOLHOST_TOKEN", token);
    let done = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (done.status.success(), text(&done.stdout), text(&done.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_installs_disables_enables_and_removes_a_plugin_on_a_running_server() {
    let server = TestServer::start(support::Backend::Sqlite).await;
    let admin = server.user("root", true).await;
    let component = Path::new(env!("TOOLHOST_WASM_DIR")).join("fixture_fetcher.wasm");
    let file = component.to_str().unwrap();

    let (ok, out, err) = toolhost(&server, &admin, &["plugin", "install", file]).await;
    assert!(
        ok && out.starts_with("installed fetcher 0.1.0 (") && out.contains("fetch, fetcher_settings"),
        "{out}{err}"
    );
    assert!(visible_tools(&server, &admin).await.contains(&"fetch".to_string()));
    let (ok, out, err) = toolhost(&server, &admin, &["plugin", "disable", "fetcher"]).await;
    assert!(ok && out.trim() == "disabled fetcher", "{out}{err}");
    assert!(!visible_tools(&server, &admin).await.contains(&"fetch".to_string()));
    let (ok, out, err) = toolhost(&server, &admin, &["plugin", "enable", "fetcher"]).await;
    assert!(ok && out.starts_with("installed fetcher"), "{out}{err}");
    let (ok, out, err) = toolhost(&server, &admin, &["plugin", "remove", "fetcher"]).await;
    assert!(ok && out.trim() == "removed fetcher", "{out}{err}");
    assert!(!visible_tools(&server, &admin).await.contains(&"fetch".to_string()));

    // Refusals come back as the API says them, with a failing exit.
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), b"not wasm").unwrap();
    let (ok, _, err) = toolhost(&server, &admin, &["plugin", "install", garbage.path().to_str().unwrap()]).await;
    assert!(!ok && err.contains("not a valid WebAssembly component"), "{err}");
    let member = server.user("alice", false).await;
    let (ok, _, err) = toolhost(&server, &member, &["plugin", "install", file]).await;
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, _, err) = toolhost(&server, &admin, &["plugin", "remove", "files"]).await;
    assert!(!ok && err.contains("configured in the server's configuration file"), "{err}");
    server.finish().await;
}
