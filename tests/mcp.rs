//! The MCP gateway, driven by the official MCP Python SDK (from PyPI, installed on first run into
//! a virtual environment under the target folder) over both transports: streamable HTTP at
//! `/mcp`, and stdio through `toolhost mcp`. What a client sees is what the tool policy shows
//! the `mcp` principal for the token's user; calls run the real Wasm tools in the user's
//! workspace, and refusals come back as `isError` results.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestServer};

/// The SDK version the run is pinned to.
const MCP_SDK: &str = "mcp==2.3.0";

/// The virtual environment's Python with the SDK, installed if it is not yet.
fn sdk_python() -> PathBuf {
    support::python_venv_with("mcp-sdk-venv", MCP_SDK).join("bin/python")
}

/// Runs the SDK client (`tests/mcp/client.py`) with `plan` and returns its report.
async fn sdk_session(plan: Value) -> Value {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/client.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(plan.to_string().as_bytes()).await.unwrap();
    }
    let done = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the MCP client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "the MCP client failed: {}\n{stdout}", String::from_utf8_lossy(&done.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The calls every session makes, in this order.
fn calls() -> Value {
    json!([
        ["write_file", {"path": "notes/hello.txt", "content": "hello from MCP\n"}],
        ["read_file", {"path": "notes/hello.txt"}],
        ["echo", {"path": "ping"}],
        ["create_workspace", {"template_id": "blank"}],
        ["no_such_tool", {}],
        ["read_file", {"path": "../../etc/passwd"}],
        ["log_and_report", {}],
    ])
}

fn result<'a>(report: &'a Value, index: usize, tool: &str) -> &'a Value {
    let result = &report["results"][index];
    assert_eq!(result["tool"], tool, "{report}");
    result
}

/// A policy: the default, `hostile` may report progress, and MCP clients may see `echo` but not
/// call it.
const POLICY: &str = r#"
@id("hostile-reports-progress")
permit (principal, action == Action::"use_capability", resource == Capability::"progress")
when { context.plugin.name == "hostile" };

@id("mcp-clients-may-not-echo")
forbid (principal, action == Action::"call_tool", resource)
when { principal.kind == "mcp" && resource.name == "echo" };
"#;

/// What every transport must show: the workspace's files written and read back, the policy's
/// hidden tool absent and its refused calls answered with `isError`, an unknown tool a
/// protocol error, and a path outside the workspace refused by the tool.
fn assert_session(report: &Value, files: &Path) {
    let names: Vec<&str> = report["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for visible in ["read_file", "write_file", "edit_files", "execute", "echo"] {
        assert!(names.contains(&visible), "{visible} is listed: {names:?}");
    }
    for hidden in ["create_workspace", "spawn_agent", "computer"] {
        assert!(!names.contains(&hidden), "the policy hides {hidden} from MCP clients: {names:?}");
    }
    let read_file = report["tools"].as_array().unwrap().iter().find(|t| t["name"] == "read_file").unwrap();
    assert_eq!(read_file["annotations"]["read_only_hint"], true, "{read_file}");
    assert_eq!(read_file["schema"]["type"], "object", "{read_file}");

    let written = result(report, 0, "write_file");
    assert_eq!(written["is_error"], false, "{written}");
    assert_eq!(std::fs::read_to_string(files.join("notes/hello.txt")).unwrap(), "hello from MCP\n");
    let read = result(report, 1, "read_file");
    assert_eq!(read["is_error"], false, "{read}");
    assert!(read["text"].as_str().unwrap().contains("hello from MCP"), "{read}");

    let denied = result(report, 2, "echo");
    assert_eq!(denied["is_error"], true, "{denied}");
    assert!(denied["text"].as_str().unwrap().contains("mcp-clients-may-not-echo"), "{denied}");
    let hidden = result(report, 3, "create_workspace");
    assert_eq!(hidden["is_error"], true, "{hidden}");
    assert!(hidden["text"].as_str().unwrap().contains("not visible to MCP clients"), "{hidden}");
    let unknown = result(report, 4, "no_such_tool");
    assert!(unknown["protocol_error"].as_str().unwrap().contains("no tool named `no_such_tool`"), "{unknown}");
    let escaped = result(report, 5, "read_file");
    assert_eq!(escaped["is_error"], true, "{escaped}");
    let reported = result(report, 6, "log_and_report");
    assert_eq!(reported["text"], "logged", "{reported}");
    assert_eq!(
        reported["progress"],
        json!([{"progress": 0.5, "total": 1.0, "message": "half way"}]),
        "the plugin's progress reached the client before the result: {reported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_use_the_tools_the_policy_shows_them_in_their_own_workspace() {
    let server = TestServer::start_with_fixtures(Backend::Sqlite, &["hostile"]).await;
    server.require_sandbox();
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;
    let default = toolhost::policy::DEFAULT_POLICY;
    let saved = server
        .http
        .put(server.url("/api/v1/policy"))
        .bearer_auth(&admin)
        .json(&json!({"policy": format!("{default}\n{POLICY}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), StatusCode::OK, "{}", saved.text().await.unwrap());
    let workspace = server.ready_workspace(&alice, "blank", json!({})).await;
    let workspace_id = workspace["id"].as_str().unwrap();
    let files = server.workspace_files(workspace_id);

    // Streamable HTTP, on the newest revision both speak and on the initialize handshake.
    let url = format!("{}?workspace_id={workspace_id}", server.url("/mcp"));
    let modern = sdk_session(json!({"transport": "http", "url": url, "token": alice, "calls": calls()})).await;
    assert_session(&modern, &files);
    std::fs::remove_file(files.join("notes/hello.txt")).unwrap();
    let legacy =
        sdk_session(json!({"transport": "http", "url": url, "token": alice, "mode": "legacy", "calls": calls()})).await;
    assert_session(&legacy, &files);
    assert_ne!(modern["protocol_version"], legacy["protocol_version"], "two revisions were tried");

    // stdio: the client starts `toolhost mcp`, which forwards to the server.
    std::fs::remove_file(files.join("notes/hello.txt")).unwrap();
    let command = json!([env!("CARGO_BIN_EXE_toolhost"), "mcp", "--url", server.url(""), "--workspace", workspace_id]);
    for mode in ["auto", "legacy"] {
        let report = sdk_session(json!({
            "transport": "stdio", "command": command, "env": {"TOOLHOST_TOKEN": alice}, "mode": mode, "calls": calls()
        }))
        .await;
        assert_session(&report, &files);
        std::fs::remove_file(files.join("notes/hello.txt")).unwrap();
    }

    // Without a workspace, tools that work in one say how to name it; others still run.
    let bare = sdk_session(json!({
        "transport": "http", "url": server.url("/mcp"), "token": bob,
        "calls": [["read_file", {"path": "x"}], ["huge", {"bytes": 3}]],
    }))
    .await;
    let refused = result(&bare, 0, "read_file");
    assert_eq!(refused["is_error"], true);
    assert!(refused["text"].as_str().unwrap().contains("?workspace_id="), "{refused}");
    let ran = result(&bare, 1, "huge");
    assert_eq!((&ran["is_error"], ran["text"].as_str()), (&json!(false), Some("xxx")), "{ran}");

    // The denials are in the audit log, under the MCP principal.
    let (status, audit) = server.get(&admin, "/api/v1/policy/audit").await;
    assert_eq!(status, StatusCode::OK);
    let mcp_denials: Vec<&Value> = audit["denials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["chat_id"].as_str().unwrap().starts_with("mcp:"))
        .collect();
    assert!(
        mcp_denials.iter().any(|d| d["tool"] == "echo" && d["decided_by"] == "mcp-clients-may-not-echo"),
        "{audit}"
    );
    server.finish().await;
}

/// A raw JSON-RPC `tools/list` request to `/mcp`.
async fn post_mcp(server: &TestServer, query: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(format!("{}{query}", server.url("/mcp")))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25")
        .body(r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_strangers_foreign_pages_and_other_peoples_workspaces() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;
    let workspace = server.ready_workspace(&alice, "blank", json!({})).await;
    let theirs = format!("?workspace_id={}", workspace["id"].as_str().unwrap());
    let bearer = |token: &str| format!("Bearer {token}");

    let (status, body) = post_mcp(&server, "", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let (status, body) = post_mcp(&server, "", &[("Authorization", "Bearer nope")]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));

    let (status, body) = post_mcp(&server, &theirs, &[("Authorization", &bearer(&bob))]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "bob cannot work in alice's workspace: {body}");
    let (status, body) =
        post_mcp(&server, "", &[("Authorization", &bearer(&alice)), ("Origin", "https://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Origin"), "{body}");

    let (status, body) = post_mcp(&server, &theirs, &[("Authorization", &bearer(&alice))]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tools = body["result"]["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "read_file"), "{body}");
    assert!(!tools.iter().any(|t| t["name"] == "spawn_agent"), "{body}");

    // A plain `tools/call` is answered without rmcp's service (see `api::mcp`), one with `_meta`
    // by rmcp: the client cannot tell them apart, for a result, a tool's error and an unknown tool.
    std::fs::write(server.workspace_files(workspace["id"].as_str().unwrap()).join("note.txt"), "hi\n").unwrap();
    for (tool, arguments) in [
        ("read_file", json!({"path": "note.txt"})),
        ("read_file", json!({"path": "missing.txt"})),
        ("no_such_tool", json!({})),
    ] {
        let plain = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
        let mut with_meta = plain.clone();
        with_meta["params"]["_meta"] = json!({});
        let (fast_status, fast) = call_mcp(&server, &theirs, &alice, &plain).await;
        let (rmcp_status, answered_by_rmcp) = call_mcp(&server, &theirs, &alice, &with_meta).await;
        assert_eq!((fast_status, &fast), (rmcp_status, &answered_by_rmcp), "{tool} {arguments}");
        assert_eq!(fast["id"], 7, "{fast}");
    }
    let (_, read) = call_mcp(
        &server,
        &theirs,
        &alice,
        &json!({"jsonrpc": "2.0", "id": "s", "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "note.txt"}}}),
    )
    .await;
    assert_eq!(read["result"]["isError"], false, "{read}");
    assert!(read["result"]["content"][0]["text"].as_str().unwrap().contains("hi"), "{read}");
    server.finish().await;
}

/// A raw JSON-RPC message to `/mcp` with `token`, as a client of the 2025-11-25 revision sends it.
async fn call_mcp(server: &TestServer, query: &str, token: &str, message: &Value) -> (StatusCode, Value) {
    let response = server
        .http
        .post(format!("{}{query}", server.url("/mcp")))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25")
        .body(message.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}
