//! Workspaces: templates, the lifecycle over the API, the bundled `workspaces`, `shell` and
//! `files` plugins in a chat end to end (with git watch), and the sandbox holding against
//! commands that try to escape it or exhaust the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm;
use support::{Backend, TestServer, processes_running, tool_results};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use toolhost::domain::ChatKind;
use toolhost::domain::parts::MessagePart;
use toolhost::store::{NewChat, Store};
use toolhost::workspace::sandbox::{CommandLimits, CommandSpec};
use toolhost::workspace::{CreateRequest, WorkspaceService, WorkspacesConfig};

/// Waits (up to 2 s) until no process on this machine has `needle` in its command line.
async fn gone_from_the_host(needle: &str) {
    for _ in 0..40 {
        if processes_running(needle) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn result_of(results: &[(String, String, bool)], tool: &str) -> (String, String, bool) {
    results
        .iter()
        .find(|(name, _, _)| name == tool)
        .cloned()
        .unwrap_or_else(|| panic!("no `{tool}` result in {results:?}"))
}

fn offered_tools(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| tools.iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A git-watch client of `chat`.
struct GitWatch {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl GitWatch {
    async fn connect(server: &TestServer, token: &str, chat: &str) -> GitWatch {
        let url = server.url(&format!("/api/v1/chats/{chat}/git/watch")).replace("http://", "ws://");
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        GitWatch { socket }
    }

    /// The next snapshot that satisfies `until` (snapshots come only when something changed).
    async fn snapshot_where(&mut self, until: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, self.socket.next()).await {
            if let WsMessage::Text(text) = frame {
                let event: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(event["type"], "snapshot", "{event}");
                if until(&event["snapshot"]) {
                    return event["snapshot"].clone();
                }
                last = event;
            }
        }
        panic!("no matching snapshot; the last was {last}");
    }

    async fn refresh(&mut self) {
        self.socket.send(WsMessage::Text("refresh".into())).await.unwrap();
    }
}

async fn a_root_chat_provisions_a_workspace_works_in_it_and_git_watch_sees_the_diff(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    server.llm.script([
        fake_llm::tool_calls(&[("c1", "list_templates", "{}")]),
        fake_llm::tool_calls(&[(
            "c2",
            "create_workspace",
            r#"{"template_id": "starter", "parameters": {"project": "demo"}}"#,
        )]),
        fake_llm::tool_calls(&[("c3", "write_file", r#"{"path": "notes.txt", "content": "hello from the agent\n"}"#)]),
        fake_llm::tool_calls(&[(
            "c4",
            "execute",
            r#"{"command": "cat notes.txt; echo lines=$(wc -l < notes.txt); id -u"}"#,
        )]),
        fake_llm::text("Done."),
    ]);
    let (status, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "set up a project"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&chat).await);

    let (_, listed, _) = result_of(&done, "list_templates");
    assert!(listed.contains("\"starter\"") && listed.contains("\"blank\""), "{listed}");
    let (_, created, is_error) = result_of(&done, "create_workspace");
    assert!(
        !is_error && created.contains("is ready"),
        "create_workspace returns once the startup script is done: {created}"
    );
    assert!(created.contains("project demo ready"), "its outcome includes the script's output: {created}");
    let (_, executed, is_error) = result_of(&done, "execute");
    let executed: Value = serde_json::from_str(&executed).unwrap();
    assert!(!is_error && executed["success"] == true && executed["exit_code"] == 0, "{executed}");
    let output = executed["output"].as_str().unwrap();
    assert!(
        output.contains("hello from the agent") && output.contains("lines=1"),
        "the command read the file the files tool wrote: {output}"
    );
    assert!(output.trim_end().ends_with("1000"), "commands run as an unprivileged user: {output}");

    let workspace = server.store.chat_workspace(&chat).await.unwrap().expect("the chat is bound to its workspace");
    assert_eq!((workspace.template_id.as_str(), workspace.status.as_str()), ("starter", "ready"));
    assert_eq!(
        std::fs::read_to_string(server.workspace_files(&workspace.id).join("README.md")).unwrap().lines().next(),
        Some("# demo")
    );

    let mut watch = GitWatch::connect(&server, &alice, &chat).await;
    let first = watch.snapshot_where(|s| !s["repositories"].as_array().unwrap().is_empty()).await;
    let repository = &first["repositories"][0];
    assert_eq!((repository["path"].as_str(), repository["branch"].as_str()), (Some("."), Some("main")), "{first}");
    assert_eq!(repository["changed_files"], json!([{"path": "notes.txt", "status": "??"}]));
    assert!(repository["diff"].as_str().unwrap().contains("+hello from the agent"), "{first}");

    // A subagent in the same tree works in the same workspace, but cannot provision.
    let child = NewChat {
        owner_id: server.store.find_user("alice").await.unwrap().unwrap().id,
        parent_chat_id: Some(chat.clone()),
        root_chat_id: Some(chat.clone()),
        kind: ChatKind::Subagent,
        workspace_id: None,
        title: "helper".into(),
        model: None,
        content: vec![MessagePart::text("edit the readme")],
    };
    server.llm.script([
        fake_llm::tool_calls(&[
            (
                "s1",
                "edit_files",
                r##"{"files": [{"path": "README.md", "edits": [{"search": "# demo", "replace": "# demo, edited"}]}]}"##,
            ),
            ("s2", "create_workspace", r#"{"template_id": "blank"}"#),
        ]),
        fake_llm::tool_calls(&[("s3", "execute", r#"{"command": "head -1 README.md"}"#)]),
        fake_llm::text("Edited."),
    ]);
    let requests_before = server.llm.requests().len();
    let (child, _) = server.store.create_chat(child).await.unwrap();
    let child_done = tool_results(&server.finished(&child.id).await);
    let child_request = &server.llm.requests()[requests_before];
    let offered = offered_tools(child_request);
    assert!(offered.contains(&"execute".to_string()) && offered.contains(&"edit_files".to_string()), "{offered:?}");
    for root_only in ["create_workspace", "start_workspace", "list_templates", "read_template"] {
        assert!(!offered.contains(&root_only.to_string()), "a subagent is not offered {root_only}: {offered:?}");
    }
    let (_, denied, is_error) = result_of(&child_done, "create_workspace");
    assert!(is_error && denied.contains("subagents-do-not-provision"), "{denied}");
    let (_, head, _) = result_of(&child_done, "execute");
    assert!(head.contains("# demo, edited"), "the subagent's command sees its edit: {head}");

    watch.refresh().await;
    let after = watch
        .snapshot_where(|s| s["repositories"][0]["diff"].as_str().is_some_and(|d| d.contains("+# demo, edited")))
        .await;
    let changed: Vec<&str> = after["repositories"][0]["changed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["README.md", "notes.txt"]);
    server.finish().await;
}
on_both_backends!(a_root_chat_provisions_a_workspace_works_in_it_and_git_watch_sees_the_diff);

async fn workspaces_are_created_validated_stopped_started_and_deleted_over_the_api(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;

    let (status, templates) = server.get(&alice, "/api/v1/templates").await;
    assert_eq!(status, StatusCode::OK);
    let starter = templates["templates"].as_array().unwrap().iter().find(|t| t["id"] == "starter").unwrap();
    assert_eq!(starter["parameters"][0]["name"], "project");

    let (status, refused) = server
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"template_id": "starter", "parameters": {"project": "Bad Name", "license": "GPL"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`project` must match the pattern") && message.contains("`license` must be one of"),
        "{message}"
    );
    let (status, missing) = server.post(&alice, "/api/v1/workspaces", json!({"template_id": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"]["message"].as_str().unwrap().contains("blank, starter"), "{missing}");

    let workspace = server.ready_workspace(&alice, "starter", json!({"project": "api"})).await;
    let id = workspace["id"].as_str().unwrap();
    assert!(
        workspace["detail"].as_str().unwrap().contains("project api ready (Apache-2.0)"),
        "defaults fill in: {workspace}"
    );
    let (status, _) = server.get(&bob, &format!("/api/v1/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "someone else's workspace does not exist for bob");
    let (status, _) = server
        .post(&bob, "/api/v1/chats", json!({"content": [{"type": "text", "text": "hi"}], "workspace_id": id}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor can bob bind a chat to it");

    let (status, stopped) = server.post(&alice, &format!("/api/v1/workspaces/{id}/stop"), json!({})).await;
    assert_eq!((status, stopped["status"].as_str()), (StatusCode::OK, Some("stopped")));
    server.llm.script([
        fake_llm::tool_calls(&[
            ("c1", "execute", r#"{"command": "true"}"#),
            ("c2", "create_workspace", r#"{"template_id": "blank"}"#),
        ]),
        fake_llm::text("ok"),
    ]);
    let (_, chat) = server
        .post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "run"}], "workspace_id": id}))
        .await;
    let done = tool_results(&server.finished(chat["id"].as_str().unwrap()).await);
    let (_, refused, is_error) = result_of(&done, "execute");
    assert!(is_error && refused.contains("is stopped; start it with start_workspace"), "{refused}");
    let (_, reused, _) = result_of(&done, "create_workspace");
    assert!(reused.contains("use start_workspace"), "a stopped workspace is not replaced: {reused}");

    let (status, starting) = server.post(&alice, &format!("/api/v1/workspaces/{id}/start"), json!({})).await;
    assert_eq!((status, starting["status"].as_str()), (StatusCode::OK, Some("starting")));
    let (status, listed) = server.get(&alice, "/api/v1/workspaces").await;
    assert_eq!((status, listed["workspaces"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let files = server.workspace_files(id);
    assert!(files.join("README.md").exists());
    let response =
        server.http.delete(server.url(&format!("/api/v1/workspaces/{id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!files.exists(), "its files are gone");
    let (_, chat) = server.get(&alice, &format!("/api/v1/chats/{}", chat["id"].as_str().unwrap())).await;
    assert_eq!(chat["workspace_id"], Value::Null, "its chats are unbound");

    let twins =
        (0..6).map(|_| server.post(&alice, "/api/v1/workspaces", json!({"template_id": "blank", "name": "twin"})));
    let answers = futures::future::join_all(twins).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let refused: Vec<&Value> =
        answers.iter().filter(|(status, _)| *status == StatusCode::CONFLICT).map(|(_, body)| body).collect();
    assert_eq!(
        (created, refused.len()),
        (1, 5),
        "of six made at once with one name, one is made and five refused: {answers:?}"
    );
    assert!(
        refused
            .iter()
            .all(|body| body["error"]["message"].as_str().unwrap().contains("already have a workspace named `twin`")),
        "{refused:?}"
    );
    server.finish().await;
}
on_both_backends!(workspaces_are_created_validated_stopped_started_and_deleted_over_the_api);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_watching_sees_create_workspace_report_its_progress_live_and_never_replayed() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    server.llm.script_for(
        "PROGRESS:",
        [
            fake_llm::text("Ready when you are."),
            fake_llm::tool_calls(&[("p1", "create_workspace", r#"{"template_id": "blank"}"#)]),
            fake_llm::text("Made."),
        ],
    );
    let (status, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "PROGRESS: hello"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().unwrap().to_string();
    server.wait_for_status(&alice, &chat, "waiting").await;
    let seen = server.store.last_message_seq(&chat).await.unwrap();

    // A subscriber that is there when the tool runs: progress is sent live only.
    let watcher = {
        let (server_base, alice, chat) = (server.base.clone(), alice.clone(), chat.clone());
        let http = server.http.clone();
        tokio::spawn(async move {
            let response = http
                .get(format!("{server_base}/api/v1/chats/{chat}/stream?after={seen}"))
                .bearer_auth(&alice)
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
            let mut seen = Vec::new();
            while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                let value: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                let done = value["type"] == "message" && value["message"]["role"] == "tool";
                seen.push((event.id.clone(), value));
                if done {
                    break;
                }
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, sent) = server
        .post(
            &alice,
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"content": [{"type": "text", "text": "make a workspace"}]}),
        )
        .await;
    assert!(status.is_success(), "{sent}");
    let events = watcher.await.unwrap();
    let progress =
        events.iter().position(|(_, e)| e["type"] == "tool_progress").unwrap_or_else(|| panic!("{events:?}"));
    let (id, report) = &events[progress];
    assert_eq!(report["tool_call_id"], "p1", "{report}");
    assert_eq!(report["tool"], "create_workspace", "{report}");
    assert!(report["message"].as_str().unwrap().contains("startup script"), "{report}");
    // SSE carries the last id over to an event without one: the cursor stays where it was.
    let before = progress.checked_sub(1).map(|i| events[i].0.clone()).unwrap_or_default();
    assert!(report.get("seq").is_none() && *id == before, "a progress report takes no number: {id:?} {report}");
    assert!(events.iter().skip(progress).any(|(_, e)| e["type"] == "message" && e["message"]["role"] == "tool"));

    server.wait_for_status(&alice, &chat, "waiting").await;
    let replayed = support::read_stream(&server, &alice, &chat, Some(0), |events| {
        events.iter().filter(|e| e["type"] == "message" && e["message"]["role"] == "assistant").count() >= 3
    })
    .await;
    assert!(!replayed.iter().any(|(_, e)| e["type"] == "tool_progress"), "progress is not replayed: {replayed:?}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_from_the_templates_directory_are_checked_and_admins_only_ones_refused_to_others() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let templates = server.data.path().join("templates");
    std::fs::create_dir_all(templates.join("broken")).unwrap();
    std::fs::write(templates.join("broken/template.toml"), "name = 'Broken'\n[[parameters]]\nname = 'Bad-Name'\n")
        .unwrap();
    std::fs::create_dir_all(templates.join("internal/files/src")).unwrap();
    std::fs::write(templates.join("internal/template.toml"), "name = 'Internal'\nadmins_only = true\n").unwrap();
    std::fs::write(templates.join("internal/files/src/main.sh"), "echo hi\n").unwrap();

    let (status, _) = server.post(&alice, "/api/v1/templates/reload", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins reload templates");
    let (status, reloaded) = server.post(&admin, "/api/v1/templates/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let problem = &reloaded["problems"][0];
    assert_eq!(problem["id"], "broken");
    assert!(problem["problem"].as_str().unwrap().contains("parameter name `Bad-Name`"), "{problem}");
    let (_, seen) = server.get(&alice, "/api/v1/templates").await;
    assert!(
        !seen.to_string().contains("internal") && seen["problems"] == json!([]),
        "members see neither admin templates nor problems: {seen}"
    );

    let (status, refused) = server.post(&alice, "/api/v1/workspaces", json!({"template_id": "internal"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["error"]["message"].as_str().unwrap().contains("admins only"), "{refused}");
    server.llm.script([
        fake_llm::tool_calls(&[("c1", "create_workspace", r#"{"template_id": "internal"}"#)]),
        fake_llm::text("no"),
    ]);
    let (_, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "make it"}]})).await;
    let done = tool_results(&server.finished(chat["id"].as_str().unwrap()).await);
    let (_, denied, is_error) = result_of(&done, "create_workspace");
    assert!(is_error && denied.contains("admins only"), "{denied}");

    let workspace = server.ready_workspace(&admin, "internal", json!({})).await;
    let files = server.workspace_files(workspace["id"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(files.join("src/main.sh")).unwrap(),
        "echo hi\n",
        "the template's files are copied"
    );
    server.finish().await;
}

/// A workspace service on its own, with small limits, and a ready workspace of the blank
/// template.
struct Sandboxed {
    service: std::sync::Arc<WorkspaceService>,
    workspace: toolhost::store::Workspace,
    files: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl Sandboxed {
    async fn new() -> Sandboxed {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
        let owner = store.create_user("alice", false).await.unwrap();
        let limits = CommandLimits {
            cpu_seconds: 20,
            memory_mib: 1024,
            processes: 64,
            file_size_mib: 8,
            tmp_mib: 16,
            disk_mib: 64,
            files: 5000,
            output_kib: 64,
        };
        let config = WorkspacesConfig { limits, ..WorkspacesConfig::default() };
        let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
        assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps` to install bubblewrap");
        let created = service
            .create(&owner.id, false, CreateRequest { template_id: "blank".into(), ..CreateRequest::default() })
            .await
            .unwrap();
        let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(workspace.status.as_str(), "ready", "{:?}", workspace.detail);
        let files = service.local_files(&workspace.id).unwrap();
        Sandboxed { service, workspace, files, _data: data }
    }

    async fn run(&self, command: &str, timeout: Duration) -> toolhost::workspace::sandbox::Completed {
        let spec = CommandSpec { command: command.into(), ..CommandSpec::default() };
        self.service.run(&self.workspace, spec, timeout, false).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_see_only_their_workspace_and_no_network() {
    let sandbox = Sandboxed::new().await;
    let other = Sandboxed::new().await;
    std::fs::write(other.files.join("private.txt"), "other workspace").unwrap();

    let listing = sandbox.run("ls -a / /workspace", Duration::from_secs(10)).await.output.text;
    assert!(
        listing.contains("workspace") && !listing.contains(&other.workspace.id) && !listing.contains("private.txt"),
        "{listing}"
    );
    let host_data = other._data.path().join("workspaces").join(&other.workspace.id).display().to_string();
    let done = sandbox
        .run(
            &format!("ls {host_data} 2>&1; cat /etc/shadow 2>&1; echo planted > /usr/bin/planted 2>&1; echo status=$?"),
            Duration::from_secs(10),
        )
        .await;
    let output = &done.output.text;
    assert!(output.contains("No such file or directory"), "other workspaces' folders do not exist inside: {output}");
    assert!(output.contains("/etc/shadow: Permission denied"), "the host's secrets stay unreadable: {output}");
    assert!(
        output.contains("Read-only file system") && output.contains("status=1"),
        "the system is read-only: {output}"
    );
    assert!(!std::path::Path::new("/usr/bin/planted").exists());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
        "something listens on the host's loopback"
    );
    let done = sandbox
        .run(
            &format!("(echo > /dev/tcp/127.0.0.1/{port}) 2>&1 && echo reached || echo unreachable"),
            Duration::from_secs(10),
        )
        .await;
    assert!(done.output.text.contains("unreachable"), "no network unless allowed: {}", done.output.text);
}

/// This machine's address on its default route (no packet is sent: UDP only picks a route).
fn outward_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").expect("a default route");
    socket.local_addr().unwrap().ip()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_allowed_the_network_reaches_other_hosts_but_not_the_servers_loopback() {
    let data = tempfile::tempdir().unwrap();
    let templates = data.path().join("templates");
    std::fs::create_dir_all(templates.join("online")).unwrap();
    std::fs::write(templates.join("online/template.toml"), "name = 'Online'\nnetwork = true\n").unwrap();
    let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
    let owner = store.create_user("alice", false).await.unwrap();
    let config = WorkspacesConfig { templates_dir: Some(templates), ..WorkspacesConfig::default() };
    let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
    assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps` to install bubblewrap and slirp4netns");
    let created = service
        .create(&owner.id, false, CreateRequest { template_id: "online".into(), ..CreateRequest::default() })
        .await
        .unwrap();
    let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();

    // A service on the server's loopback (a database trusting local connections, say), and one
    // on the machine's outward address, as another host would be.
    let loopback = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loopback_port = loopback.local_addr().unwrap().port();
    let outward = tokio::net::TcpListener::bind((outward_address(), 0)).await.unwrap();
    let outward_at = outward.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut connection, _)) = outward.accept().await {
            let _ = connection.write_all(b"hello from another host\n").await;
        }
    });
    let probe = format!(
        "for at in 127.0.0.1 10.0.2.2; do (echo > /dev/tcp/$at/{loopback_port}) 2>/dev/null && echo \"reached $at\" || echo \"no $at\"; done; \
         (exec 3<>/dev/tcp/{}/{} && head -1 <&3) 2>/dev/null || echo 'no outward'",
        outward_at.ip(),
        outward_at.port()
    );
    let spec = CommandSpec { command: probe.clone(), ..CommandSpec::default() };
    let allowed = service.run(&workspace, spec.clone(), Duration::from_secs(20), true).await.unwrap().output.text;
    let private = match outward_at.ip() {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if private {
        // The machine's own private address is a private destination like any other (see the
        // private destinations test for one that is reached when named).
        assert!(allowed.contains("no outward"), "a private address is out of reach: {allowed}");
    } else {
        assert!(allowed.contains("hello from another host"), "the network is reachable: {allowed}");
    }
    assert!(
        allowed.contains("no 127.0.0.1") && allowed.contains("no 10.0.2.2"),
        "the server's loopback is not, directly or through the gateway: {allowed}"
    );
    let denied = service.run(&workspace, spec, Duration::from_secs(20), false).await.unwrap().output.text;
    assert!(denied.contains("no outward"), "without the policy's grant there is no network: {denied}");
    gone_from_the_host("slirp4netns").await;
    assert_eq!(processes_running("slirp4netns"), 0, "the network's helper ends with its command");
    drop(loopback);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_hang_flood_fork_or_fill_the_disk_are_stopped_and_the_workspace_lives_on() {
    let sandbox = Sandboxed::new().await;

    let started = std::time::Instant::now();
    let done = sandbox.run("sleep 1017 & sleep 1017", Duration::from_secs(1)).await;
    assert!(done.timed_out && done.exit_code.is_none(), "{done:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout stops it");
    gone_from_the_host("sleep\u{0}1017").await;
    assert_eq!(
        processes_running("sleep\u{0}1017"),
        0,
        "every process it started is gone, the one sent to the background too"
    );

    let done = sandbox.run("yes 'a line of output'", Duration::from_secs(2)).await;
    assert!(done.timed_out && done.output.total_bytes > 1_000_000, "it printed plenty: {}", done.output.total_bytes);
    assert!(done.output.text.len() <= 64 * 1024 + 100, "only the head and tail are kept: {}", done.output.text.len());
    assert!(done.output.text.contains("bytes of output left out"));

    let done = sandbox.run(":(){ :|:& };: ; sleep 1; echo survived", Duration::from_secs(20)).await;
    assert!(
        done.output.text.contains("Resource temporarily unavailable"),
        "the process limit stops the bomb: {}",
        done.output.text
    );

    let done = sandbox
        .run("head -c 20000000 /dev/zero > big.bin; echo status=$?; ls -l big.bin", Duration::from_secs(20))
        .await;
    assert!(
        done.output.text.contains("File size limit exceeded") || done.output.text.contains("status=153"),
        "one file cannot pass file_size_mib: {}",
        done.output.text
    );
    let done = sandbox
        .run(
            "for i in $(seq 1 20); do head -c 7000000 /dev/zero > fill-$i.bin; done; sleep 3; echo finished",
            Duration::from_secs(30),
        )
        .await;
    if rustix::process::geteuid().is_root() {
        // The workspace's own file system is full: the kernel refuses the rest.
        assert!(done.output.text.contains("No space left on device"), "{done:?}");
    } else {
        assert!(done.stopped_because.as_deref().is_some_and(|why| why.contains("disk quota of 64 MiB")), "{done:?}");
    }

    sandbox.run("rm -f fill-*.bin big.bin", Duration::from_secs(10)).await;
    let done = sandbox.run("echo still here", Duration::from_secs(10)).await;
    assert_eq!((done.exit_code, done.output.text.as_str()), (Some(0), "still here\n"), "the workspace works on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_by_a_command_does_not_lead_file_tools_out_of_the_workspace() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    server.llm.script([fake_llm::text("ready")]);
    let (chat, files) = server.chat_with_workspace(&alice, "plant links").await;
    let before = server.finished(&chat).await.len();
    server.llm.script([
        fake_llm::tool_calls(&[(
            "c1",
            "execute",
            r#"{"command": "ln -s /etc/hostname host-file; ln -s / host-root; ln -s ../../.. up; mkfifo pipe"}"#,
        )]),
        fake_llm::tool_calls(&[
            ("c2", "read_file", r#"{"path": "host-file"}"#),
            ("c3", "read_file", r#"{"path": "host-root/etc/hostname"}"#),
            ("c4", "write_file", r#"{"path": "up/escaped.txt", "content": "x"}"#),
            ("c5", "read_file", r#"{"path": "../../etc/hostname"}"#),
            ("c6", "execute", r#"{"command": "pwd", "workdir": "../.."}"#),
            ("c7", "read_file", r#"{"path": "pipe"}"#),
        ]),
        fake_llm::text("done"),
    ]);
    server
        .post(&alice, &format!("/api/v1/chats/{chat}/messages"), json!({"content": [{"type": "text", "text": "go"}]}))
        .await;
    let mut all = server.finished(&chat).await;
    while all.len() < before + 6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        all = server.finished(&chat).await;
    }
    let done = tool_results(&all[before..]);
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    assert!(
        std::fs::symlink_metadata(files.join("host-root")).unwrap().file_type().is_symlink(),
        "the command planted its links"
    );
    for (tool, result, is_error) in &done[1..] {
        assert!(*is_error, "{tool} must fail: {result}");
        assert!(hostname.is_empty() || !result.contains(&hostname), "the host's file leaked: {result}");
    }
    let (_, workdir, _) = done[5].clone();
    assert!(workdir.contains("must stay inside the workspace"), "{workdir}");
    let (_, pipe, _) = done[6].clone();
    assert!(pipe.contains("not a regular file"), "reading a FIFO fails at once instead of hanging: {pipe}");
    assert!(
        !files.parent().unwrap().parent().unwrap().join("escaped.txt").exists()
            && !std::path::Path::new("/escaped.txt").exists()
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_are_listed_read_signalled_and_killed_with_their_workspace() {
    let sandbox = Sandboxed::new().await;
    let spec = CommandSpec {
        command: "echo started; trap 'echo got TERM; exit 3' TERM; while true; do sleep 0.1; done".into(),
        ..CommandSpec::default()
    };
    let process = sandbox.service.spawn(&sandbox.workspace, spec, false).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let processes = sandbox.service.processes();
    let (info, output) = processes.output(&sandbox.workspace.id, &process.id).unwrap();
    assert!(info.running && output.contains("started"), "{info:?} {output}");
    assert!(
        processes.output("another-workspace", &process.id).is_none(),
        "a process is found only through its own workspace"
    );
    assert!(processes.signal(&sandbox.workspace.id, &process.id, toolhost::workspace::processes::Signal::TERM));
    let mut ended = None;
    for _ in 0..100 {
        let (info, output) = processes.output(&sandbox.workspace.id, &process.id).unwrap();
        if !info.running {
            ended = Some((info, output));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (info, output) = ended.expect("terminate ends it");
    assert_eq!(info.exit_code, Some(3), "the command's own TERM handler ran: {output}");
    assert!(output.contains("got TERM"));

    let forever = CommandSpec { command: "sleep 1000".into(), ..CommandSpec::default() };
    let process = sandbox.service.spawn(&sandbox.workspace, forever.clone(), false).unwrap();
    sandbox.service.stop(&sandbox.workspace.id).await.unwrap();
    let mut stopped = false;
    for _ in 0..100 {
        if !processes.output(&sandbox.workspace.id, &process.id).unwrap().0.running {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "stopping the workspace kills its processes");
    let now = sandbox.service.get(&sandbox.workspace.id).await.unwrap();
    let refused = sandbox.service.spawn(&now, forever.clone(), false).unwrap_err();
    assert!(refused.to_string().contains("stopped; start it with start_workspace"), "{refused}");

    let workspace = sandbox.service.start_workspace(&sandbox.workspace.id).await.unwrap();
    let workspace = sandbox.service.wait_settled(&workspace.id, Duration::from_secs(30)).await.unwrap();
    let process = sandbox.service.spawn(&workspace, forever, false).unwrap();
    sandbox.service.shutdown().await;
    assert!(
        !processes.output(&workspace.id, &process.id).unwrap().0.running,
        "the server's shutdown kills every process"
    );
    gone_from_the_host("sleep\u{0}1000").await;
    assert_eq!(
        processes_running("sleep\u{0}1000"),
        0,
        "nothing of the killed commands is left on the host, their sandboxes' init included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_workspace_ends_its_startup_script_and_a_new_start_is_not_overtaken_by_the_old() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let admin = server.user("root", true).await;
    let templates = server.data.path().join("templates");
    std::fs::create_dir_all(templates.join("slow")).unwrap();
    let script = "if [ -f second-start ]; then echo second; exit 0; fi\ntouch second-start\nsleep 1019\n";
    std::fs::write(
        templates.join("slow/template.toml"),
        format!("name = 'Slow'\n[startup]\ntimeout_seconds = 120\nscript = {script:?}\n"),
    )
    .unwrap();
    server.post(&admin, "/api/v1/templates/reload", json!({})).await;
    let (status, workspace) = server.post(&admin, "/api/v1/workspaces", json!({"template_id": "slow"})).await;
    assert_eq!(status, StatusCode::CREATED, "{workspace}");
    let id = workspace["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        if processes_running("sleep\u{0}1019") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_running("sleep\u{0}1019") > 0, "the startup script is running");

    let (_, stopped) = server.post(&admin, &format!("/api/v1/workspaces/{id}/stop"), json!({})).await;
    assert_eq!(stopped["status"], "stopped");
    let (_, started) = server.post(&admin, &format!("/api/v1/workspaces/{id}/start"), json!({})).await;
    assert_eq!(started["status"], "starting");
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, now) = server.get(&admin, &format!("/api/v1/workspaces/{id}")).await;
        if now["status"] != "starting" {
            last = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "ready", "the second start's outcome stands: {last}");
    assert!(last["detail"].as_str().unwrap().contains("second"), "{last}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes_running("sleep\u{0}1019"), 0, "the first startup script was killed by the stop");
    let (_, after) = server.get(&admin, &format!("/api/v1/workspaces/{id}")).await;
    assert_eq!(after["status"], "ready", "the killed script did not record its outcome over the new one: {after}");
    server.finish().await;
}

/// The system prompt of the last model request (OpenAI wire format: the first message).
fn last_system_prompt(server: &TestServer) -> String {
    let requests = server.llm.requests();
    let last = requests.last().expect("a model request");
    last["messages"][0]["content"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_md_planted_as_a_link_fifo_device_or_huge_file_never_reaches_the_prompt_nor_blocks_the_server() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    server.llm.script([fake_llm::text("ready")]);
    let (chat, files) = server.chat_with_workspace(&alice, "plant AGENTS.md").await;
    server.finished(&chat).await;
    std::fs::write(files.join("AGENTS.md"), "Use tabs.").unwrap();
    server.llm.script([fake_llm::text("ok")]);
    server
        .post(&alice, &format!("/api/v1/chats/{chat}/messages"), json!({"content": [{"type": "text", "text": "hi"}]}))
        .await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    assert!(last_system_prompt(&server).contains("Use tabs."), "a real AGENTS.md is read");

    // The sealing key a default install keeps in its data directory (this test server is
    // given its key directly, so it is laid there as the file would be).
    let key = server.data.path().join("secret.key");
    let key_text = "c2VhbGluZy1rZXktb2YtdGhlLXRlc3Qtc2VydmVyISE=";
    std::fs::write(&key, key_text).unwrap();
    // Each plant replaces AGENTS.md, as a command in the workspace would.
    let plants = [
        ("the sealing key", format!("ln -sf {} AGENTS.md", key.display())),
        ("the server's environment", "ln -sf /proc/self/environ AGENTS.md".to_string()),
        ("a relative way out", "ln -sf ../../../secret.key AGENTS.md".to_string()),
        ("a device", "ln -sf /dev/zero AGENTS.md".to_string()),
        ("a FIFO", "rm -f AGENTS.md && mkfifo AGENTS.md".to_string()),
        ("a huge sparse file", "rm -f AGENTS.md && truncate -s 1000M AGENTS.md".to_string()),
    ];
    for (what, plant) in plants {
        let workspace = server.workspaces.of_chat(&chat).await.unwrap().unwrap();
        let spec = CommandSpec { command: plant.clone(), ..CommandSpec::default() };
        let done = server.workspaces.run(&workspace, spec, Duration::from_secs(10), false).await.unwrap();
        assert_eq!(done.exit_code, Some(0), "{plant}: {}", done.output.text);
        server.llm.script([fake_llm::text("ok")]);
        let started = std::time::Instant::now();
        server
            .post(
                &alice,
                &format!("/api/v1/chats/{chat}/messages"),
                json!({"content": [{"type": "text", "text": what}]}),
            )
            .await;
        server.wait_for_status(&alice, &chat, "waiting").await;
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: the turn was not held up");
        let (health, _) = server.get(&alice, "/healthz").await;
        assert_eq!(health, StatusCode::OK, "{what}: the server answers");
        let prompt = last_system_prompt(&server);
        assert!(!prompt.contains(key_text.trim()), "{what}: the sealing key reached the prompt");
        assert!(
            !prompt.contains("PATH=") && !prompt.contains("HOME="),
            "{what}: the server's environment reached the prompt"
        );
        assert!(prompt.len() < 70 * 1024, "{what}: at most the instructions' limit is read ({} bytes)", prompt.len());
        assert!(
            !prompt.contains("Workspace instructions") || what == "a huge sparse file",
            "{what}: gave instructions: {prompt:.300}"
        );
    }
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_as_an_unprivileged_host_user_and_can_change_nothing_outside_their_workspace() {
    let sandbox = Sandboxed::new().await;
    let root = rustix::process::geteuid().is_root();

    let before = std::fs::read_to_string("/proc/sys/vm/stat_interval").unwrap();
    let done = sandbox.run("echo 7 > /proc/sys/vm/stat_interval; echo status=$?; echo '|/bin/true' > /proc/sys/kernel/core_pattern; echo core=$?", Duration::from_secs(10)).await;
    assert!(
        done.output.text.contains("status=1") && done.output.text.contains("core=1"),
        "kernel settings cannot be written: {}",
        done.output.text
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/stat_interval").unwrap(),
        before,
        "the host's setting is unchanged"
    );

    // A secret the host makes after the server started, readable by its owner only.
    let secret = std::path::PathBuf::from(format!("/etc/toolhost-test-secret-{}", std::process::id()));
    std::fs::write(&secret, "host secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let done = sandbox.run(&format!("cat {} 2>&1", secret.display()), Duration::from_secs(10)).await;
    std::fs::remove_file(&secret).unwrap();
    assert!(
        !done.output.text.contains("host secret"),
        "a 0600 file made after start stays hidden: {}",
        done.output.text
    );
    assert!(done.output.text.contains("Permission denied"), "{}", done.output.text);

    // What agents never need is refused by the seccomp filter.
    let done = sandbox
        .run("grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo unshare=$?; perl -e '$r = syscall(250, 0, 0, 0, 0, 0); print \"keyctl $r $!\\n\"'; echo alive", Duration::from_secs(10))
        .await;
    let output = &done.output.text;
    assert!(output.contains("Seccomp:\t2"), "a filter is installed: {output}");
    assert!(output.contains("unshare=1"), "no new namespaces: {output}");
    assert!(output.contains("keyctl -1 Operation not permitted"), "no kernel keyrings: {output}");
    let done = sandbox
        .run(
            "perl -e '$r = syscall(250 | 0x40000000, 0, 0, 0, 0, 0); print \"x32 keyctl $r $!\\n\"'",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        done.output.text.contains("x32 keyctl -1 Operation not permitted"),
        "nor through the x32 numbers: {}",
        done.output.text
    );

    // Nothing of the server's environment reaches a command, not even through the sandbox's
    // init process (cargo gives every test process CARGO_PKG_NAME).
    let done = sandbox.run("tr '\\0' '\\n' < /proc/1/environ; echo; env", Duration::from_secs(10)).await;
    assert!(!done.output.text.contains("CARGO_PKG_NAME"), "the server's environment leaked: {}", done.output.text);
    assert!(output.contains("alive"), "{output}");

    // Files a command makes are the sandbox user's on the host, never root's; and so is what
    // the host lays out for it, so the command can change it.
    let root_of = sandbox.service.files_root(&sandbox.workspace).unwrap();
    let host_side = root_of.open().unwrap();
    host_side.write(std::path::Path::new("host-made/notes.txt"), b"from the host\n").unwrap_err();
    host_side.create_dir(std::path::Path::new("host-made"), true).unwrap();
    host_side.write(std::path::Path::new("host-made/notes.txt"), b"from the host\n").unwrap();
    let done = sandbox
        .run(
            "touch made-by-command && echo more >> host-made/notes.txt && touch host-made/beside && echo ok",
            Duration::from_secs(10),
        )
        .await;
    assert!(done.output.text.contains("ok"), "what the host lays out is the command's to change: {}", done.output.text);
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(sandbox.files.join("made-by-command")).unwrap().uid();
    if root {
        assert_eq!(owner, toolhost::workspace::DEFAULT_SANDBOX_ID, "a root server's commands are not root on the host");
        assert_eq!(std::fs::metadata(&sandbox.files).unwrap().uid(), toolhost::workspace::DEFAULT_SANDBOX_ID);
    } else {
        assert_eq!(
            owner,
            rustix::process::geteuid().as_raw(),
            "a server that is not root runs commands as its own user"
        );
    }
}

/// A host of the test's own on a private address: a network namespace joined to this one by a
/// veth pair, with a TCP listener that greets each connection. Removed when dropped.
struct PrivateHost {
    namespace: String,
    address: String,
    port: u16,
    listener: std::process::Child,
}

impl PrivateHost {
    fn start() -> PrivateHost {
        // A number no other run on this machine uses at the moment (its namespace is absent).
        let taken = String::from_utf8_lossy(
            &std::process::Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default(),
        )
        .into_owned();
        let n = (0..230)
            .map(|i| (std::process::id() + i) % 230 + 20)
            .find(|n| {
                !taken.contains(&format!("toolhost-test-{n} "))
                    && !taken.lines().any(|l| l.trim() == format!("toolhost-test-{n}"))
            })
            .expect("a free test network");
        let (namespace, outside, inside) = (format!("toolhost-test-{n}"), format!("thtest{n}a"), format!("thtest{n}b"));
        let address = format!("10.254.{n}.2");
        let ip = |args: &str| {
            let done = std::process::Command::new("ip")
                .args(args.split_whitespace())
                .output()
                .expect("`ip` runs (bash .ci/system-deps installs iproute2)");
            assert!(done.status.success(), "ip {args}: {}", String::from_utf8_lossy(&done.stderr));
        };
        let _ = std::process::Command::new("ip").args(["link", "del", &outside]).output();
        ip(&format!("netns add {namespace}"));
        ip(&format!("link add {outside} type veth peer name {inside}"));
        ip(&format!("link set {inside} netns {namespace}"));
        ip(&format!("addr add 10.254.{n}.1/30 dev {outside}"));
        ip(&format!("link set {outside} up"));
        ip(&format!("netns exec {namespace} ip addr add {address}/30 dev {inside}"));
        ip(&format!("netns exec {namespace} ip link set {inside} up"));
        ip(&format!("netns exec {namespace} ip link set lo up"));
        let port = 18000 + n as u16;
        let script = format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('{address}', {port}))\ns.listen()\nwhile True:\n    c, _ = s.accept()\n    c.sendall(b'hello from a private host\\n')\n    c.close()\n"
        );
        let mut listener = std::process::Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-c", &script])
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(
                &format!("{address}:{port}").parse().unwrap(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return PrivateHost { namespace, address, port, listener };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = listener.kill();
        let _ = listener.wait();
        panic!("the private host's listener did not come up");
    }
}

impl Drop for PrivateHost {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.namespace]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_command_reaches_no_private_destination_unless_its_template_names_it() {
    let private = PrivateHost::start();
    let data = tempfile::tempdir().unwrap();
    let templates = data.path().join("templates");
    std::fs::create_dir_all(templates.join("online")).unwrap();
    std::fs::write(templates.join("online/template.toml"), "name = 'Online'\nnetwork = true\n").unwrap();
    std::fs::create_dir_all(templates.join("with-db")).unwrap();
    std::fs::write(
        templates.join("with-db/template.toml"),
        format!("name = 'With a database'\nnetwork = true\nprivate_destinations = ['{}']\n", private.address),
    )
    .unwrap();
    let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
    let owner = store.create_user("alice", false).await.unwrap();
    let config = WorkspacesConfig { templates_dir: Some(templates), ..WorkspacesConfig::default() };
    let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
    assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps`");
    let make = |template: &str| {
        let (service, owner) = (service.clone(), owner.id.clone());
        let template = template.to_string();
        async move {
            let created = service
                .create(&owner, false, CreateRequest { template_id: template, ..CreateRequest::default() })
                .await
                .unwrap();
            service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap()
        }
    };
    let probe = format!(
        "for at in {address}/{port} 169.254.169.254/80 192.168.1.1/80 100.64.0.1/80; do (exec 3<>/dev/tcp/${{at%/*}}/${{at#*/}} && echo \"reached $at: $(head -1 <&3)\") 2>&1 || echo \"refused $at\"; done",
        address = private.address,
        port = private.port
    );
    let online = make("online").await;
    let spec = CommandSpec { command: probe.clone(), ..CommandSpec::default() };
    let started = std::time::Instant::now();
    let refused = service.run(&online, spec.clone(), Duration::from_secs(30), true).await.unwrap().output.text;
    assert!(!refused.contains("hello from a private host"), "a private address is out of reach: {refused}");
    for at in [
        format!("{}/{}", private.address, private.port),
        "169.254.169.254/80".into(),
        "192.168.1.1/80".into(),
        "100.64.0.1/80".into(),
    ] {
        assert!(refused.contains(&format!("refused {at}")), "{at}: {refused}");
    }
    assert!(refused.contains("Permission denied"), "refused at once by a route, not left to time out: {refused}");
    assert!(started.elapsed() < Duration::from_secs(10), "no connection attempt waited for a timeout");

    // The template names the database, and the caller's policy grants `network` (tests call
    // the service directly: the grant is the `true`).
    let with_db = make("with-db").await;
    let spec = CommandSpec { private_destinations: service.private_destinations(&with_db), ..spec };
    let allowed = service.run(&with_db, spec, Duration::from_secs(30), true).await.unwrap().output.text;
    assert!(
        allowed.contains(&format!("reached {}/{}: hello from a private host", private.address, private.port)),
        "the named destination is reached: {allowed}"
    );
    assert!(allowed.contains("refused 169.254.169.254/80"), "and nothing else private: {allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallocate_loop_cannot_put_more_than_the_quota_into_a_workspace_nor_onto_the_host() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
    let owner = store.create_user("alice", false).await.unwrap();
    let limits = CommandLimits { disk_mib: 300, file_size_mib: 1024, files: 5000, ..CommandLimits::default() };
    let config = WorkspacesConfig { limits, ..WorkspacesConfig::default() };
    let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
    assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps`");
    let created = service
        .create(&owner.id, false, CreateRequest { template_id: "blank".into(), ..CreateRequest::default() })
        .await
        .unwrap();
    let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();
    let spec = CommandSpec { command: "for i in $(seq 1 40); do fallocate -l 190M f$i 2>&1; done; du -sm --apparent-size . | cut -f1; du -sm . | cut -f1".into(), ..CommandSpec::default() };
    let done = service.run(&workspace, spec, Duration::from_secs(60), false).await.unwrap();
    let figures: Vec<u64> = done.output.text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(rustix::process::geteuid().is_root(), "CI runs as root, where the kernel enforces the quota");
    assert!(done.output.text.contains("No space left on device"), "{}", done.output.text);
    let used = *figures.last().unwrap_or_else(|| panic!("{}", done.output.text));
    assert!(used <= 300, "at most the quota is in the workspace: {used} MiB");
    // On the host, the workspace is its image: it never holds more than the quota and its
    // metadata, and fallocated space that was never written takes none of the host's disk.
    use std::os::unix::fs::MetadataExt;
    let image = data.path().join("workspaces").join(format!("{}.img", workspace.id));
    let on_host =
        std::fs::metadata(&image).unwrap_or_else(|e| panic!("{}: {e}", image.display())).blocks() * 512 / (1024 * 1024);
    assert!(on_host <= 300 + 8, "the host holds {on_host} MiB for the workspace");
    let cleaned = CommandSpec { command: "rm -f f*; echo still here".into(), ..CommandSpec::default() };
    assert_eq!(
        service.run(&workspace, cleaned, Duration::from_secs(20), false).await.unwrap().output.text,
        "still here\n",
        "the workspace works on"
    );
    service.delete(&workspace.id).await.unwrap();
    assert!(!image.exists(), "deleting the workspace removes its file system");
}
