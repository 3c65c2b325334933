//! Workspaces: templates, the lifecycle over the API, the bundled `workspaces`, `shell` and
//! `files` plugins in a chat end to end (with git watch), and the sandbox holding against
//! commands that try to escape it or exhaust the machine.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm;
use support::{Backend, TestServer, processes_running, tool_results};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use toolhost::chat::parts::MessagePart;
use toolhost::plugins::ChatKind;
use toolhost::store::{NewChat, Store};
use toolhost::workspace::sandbox::{CommandLimits, CommandSpec};
use toolhost::workspace::{CreateRequest, WorkspaceService, WorkspacesConfig};



fn result_of(results: &[(String, String, bool)], tool: &str) -> (String, String, bool) {
    results.iter().find(|(name, _, _)| name == tool).cloned().unwrap_or_else(|| panic!("no `{tool}` result in {results:?}"))
}

fn offered_tools(request: &Value) -> Vec<String> {
    request["tools"].as_array().map(|tools| tools.iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// A git-watch client of `chat`.
struct GitWatch {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl GitWatch {
    async fn connect(server: &TestServer, token: &str, chat: &str) -> GitWatch {
        let url = server.url(&format!("/api/v1/chats/{chat}/git/watch")).replace("http://", "ws://");
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
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
        fake_llm::tool_calls(&[("c2", "create_workspace", r#"{"template_id": "starter", "parameters": {"project": "demo"}}"#)]),
        fake_llm::tool_calls(&[("c3", "write_file", r#"{"path": "notes.txt", "content": "hello from the agent\n"}"#)]),
        fake_llm::tool_calls(&[("c4", "execute", r#"{"command": "cat notes.txt; echo lines=$(wc -l < notes.txt); id -u"}"#)]),
        fake_llm::text("Done."),
    ]);
    let (status, chat) = server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "set up a project"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let chat = chat["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&chat).await);

    let (_, listed, _) = result_of(&done, "list_templates");
    assert!(listed.contains("\"starter\"") && listed.contains("\"blank\""), "{listed}");
    let (_, created, is_error) = result_of(&done, "create_workspace");
    assert!(!is_error && created.contains("is ready"), "create_workspace returns once the startup script is done: {created}");
    assert!(created.contains("project demo ready"), "its outcome includes the script's output: {created}");
    let (_, executed, is_error) = result_of(&done, "execute");
    let executed: Value = serde_json::from_str(&executed).unwrap();
    assert!(!is_error && executed["success"] == true && executed["exit_code"] == 0, "{executed}");
    let output = executed["output"].as_str().unwrap();
    assert!(output.contains("hello from the agent") && output.contains("lines=1"), "the command read the file the files tool wrote: {output}");
    assert!(output.trim_end().ends_with("1000"), "commands run as an unprivileged user: {output}");

    let workspace = server.store.chat_workspace(&chat).await.unwrap().expect("the chat is bound to its workspace");
    assert_eq!((workspace.template_id.as_str(), workspace.status.as_str()), ("starter", "ready"));
    assert_eq!(std::fs::read_to_string(server.workspace_files(&workspace.id).join("README.md")).unwrap().lines().next(), Some("# demo"));

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
            ("s1", "edit_files", r##"{"files": [{"path": "README.md", "edits": [{"search": "# demo", "replace": "# demo, edited"}]}]}"##),
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
    let after = watch.snapshot_where(|s| s["repositories"][0]["diff"].as_str().is_some_and(|d| d.contains("+# demo, edited"))).await;
    let changed: Vec<&str> = after["repositories"][0]["changed_files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
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

    let (status, refused) = server.post(&alice, "/api/v1/workspaces", json!({"template_id": "starter", "parameters": {"project": "Bad Name", "license": "GPL"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("`project` must match the pattern") && message.contains("`license` must be one of"), "{message}");
    let (status, missing) = server.post(&alice, "/api/v1/workspaces", json!({"template_id": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"]["message"].as_str().unwrap().contains("blank, starter"), "{missing}");

    let workspace = server.ready_workspace(&alice, "starter", json!({"project": "api"})).await;
    let id = workspace["id"].as_str().unwrap();
    assert!(workspace["detail"].as_str().unwrap().contains("project api ready (Apache-2.0)"), "defaults fill in: {workspace}");
    let (status, _) = server.get(&bob, &format!("/api/v1/workspaces/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "someone else's workspace does not exist for bob");
    let (status, _) = server.post(&bob, "/api/v1/chats", json!({"content": [{"type": "text", "text": "hi"}], "workspace_id": id})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nor can bob bind a chat to it");

    let (status, stopped) = server.post(&alice, &format!("/api/v1/workspaces/{id}/stop"), json!({})).await;
    assert_eq!((status, stopped["status"].as_str()), (StatusCode::OK, Some("stopped")));
    server.llm.script([fake_llm::tool_calls(&[("c1", "execute", r#"{"command": "true"}"#), ("c2", "create_workspace", r#"{"template_id": "blank"}"#)]), fake_llm::text("ok")]);
    let (_, chat) = server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "run"}], "workspace_id": id})).await;
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
    let response = server.http.delete(server.url(&format!("/api/v1/workspaces/{id}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!files.exists(), "its files are gone");
    let (_, chat) = server.get(&alice, &format!("/api/v1/chats/{}", chat["id"].as_str().unwrap())).await;
    assert_eq!(chat["workspace_id"], Value::Null, "its chats are unbound");

    let twins = (0..6).map(|_| server.post(&alice, "/api/v1/workspaces", json!({"template_id": "blank", "name": "twin"})));
    let answers = futures::future::join_all(twins).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let refused: Vec<&Value> = answers.iter().filter(|(status, _)| *status == StatusCode::CONFLICT).map(|(_, body)| body).collect();
    assert_eq!((created, refused.len()), (1, 5), "of six made at once with one name, one is made and five refused: {answers:?}");
    assert!(refused.iter().all(|body| body["error"]["message"].as_str().unwrap().contains("already have a workspace named `twin`")), "{refused:?}");
    server.finish().await;
}
on_both_backends!(workspaces_are_created_validated_stopped_started_and_deleted_over_the_api);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_from_the_templates_directory_are_checked_and_admins_only_ones_refused_to_others() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let templates = server.data.path().join("templates");
    std::fs::create_dir_all(templates.join("broken")).unwrap();
    std::fs::write(templates.join("broken/template.toml"), "name = 'Broken'\n[[parameters]]\nname = 'Bad-Name'\n").unwrap();
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
    assert!(!seen.to_string().contains("internal") && seen["problems"] == json!([]), "members see neither admin templates nor problems: {seen}");

    let (status, refused) = server.post(&alice, "/api/v1/workspaces", json!({"template_id": "internal"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["error"]["message"].as_str().unwrap().contains("admins only"), "{refused}");
    server.llm.script([fake_llm::tool_calls(&[("c1", "create_workspace", r#"{"template_id": "internal"}"#)]), fake_llm::text("no")]);
    let (_, chat) = server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "make it"}]})).await;
    let done = tool_results(&server.finished(chat["id"].as_str().unwrap()).await);
    let (_, denied, is_error) = result_of(&done, "create_workspace");
    assert!(is_error && denied.contains("admins only"), "{denied}");

    let workspace = server.ready_workspace(&admin, "internal", json!({})).await;
    let files = server.workspace_files(workspace["id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(files.join("src/main.sh")).unwrap(), "echo hi\n", "the template's files are copied");
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
        let limits = CommandLimits { cpu_seconds: 20, memory_mib: 1024, processes: 64, file_size_mib: 8, tmp_mib: 16, disk_mib: 64, files: 5000, output_kib: 64 };
        let config = WorkspacesConfig { limits, ..WorkspacesConfig::default() };
        let service = WorkspaceService::start(store, data.path(), &config).await.unwrap();
        assert_eq!(service.sandbox_problem(), None, "run `bash .ci/system-deps` to install bubblewrap");
        let created = service.create(&owner.id, false, CreateRequest { template_id: "blank".into(), ..CreateRequest::default() }).await.unwrap();
        let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(workspace.status.as_str(), "ready", "{:?}", workspace.detail);
        let files = data.path().join("workspaces").join(&workspace.id).join("files");
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
    assert!(listing.contains("workspace") && !listing.contains(&other.workspace.id) && !listing.contains("private.txt"), "{listing}");
    let host_data = other.files.parent().unwrap().display().to_string();
    let done = sandbox.run(&format!("ls {host_data} 2>&1; cat /etc/shadow 2>&1; echo planted > /usr/bin/planted 2>&1; echo status=$?"), Duration::from_secs(10)).await;
    let output = &done.output.text;
    assert!(output.contains("No such file or directory"), "other workspaces' folders do not exist inside: {output}");
    assert!(output.contains("/etc/shadow: Permission denied"), "the host's secrets stay unreadable: {output}");
    assert!(output.contains("Read-only file system") && output.contains("status=1"), "the system is read-only: {output}");
    assert!(!std::path::Path::new("/usr/bin/planted").exists());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(), "something listens on the host's loopback");
    let done = sandbox.run(&format!("(echo > /dev/tcp/127.0.0.1/{port}) 2>&1 && echo reached || echo unreachable"), Duration::from_secs(10)).await;
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
    let created = service.create(&owner.id, false, CreateRequest { template_id: "online".into(), ..CreateRequest::default() }).await.unwrap();
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
    assert!(allowed.contains("hello from another host"), "the network is reachable: {allowed}");
    assert!(allowed.contains("no 127.0.0.1") && allowed.contains("no 10.0.2.2"), "the server's loopback is not, directly or through the gateway: {allowed}");
    let denied = service.run(&workspace, spec, Duration::from_secs(20), false).await.unwrap().output.text;
    assert!(denied.contains("no outward"), "without the policy's grant there is no network: {denied}");
    for _ in 0..40 {
        if processes_running("slirp4netns") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    for _ in 0..40 {
        if processes_running("sleep\u{0}1017") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(processes_running("sleep\u{0}1017"), 0, "every process it started is gone, the one sent to the background too");

    let done = sandbox.run("yes 'a line of output'", Duration::from_secs(2)).await;
    assert!(done.timed_out && done.output.total_bytes > 1_000_000, "it printed plenty: {}", done.output.total_bytes);
    assert!(done.output.text.len() <= 64 * 1024 + 100, "only the head and tail are kept: {}", done.output.text.len());
    assert!(done.output.text.contains("bytes of output left out"));

    let done = sandbox.run(":(){ :|:& };: ; sleep 1; echo survived", Duration::from_secs(20)).await;
    assert!(done.output.text.contains("Resource temporarily unavailable"), "the process limit stops the bomb: {}", done.output.text);

    let done = sandbox.run("head -c 20000000 /dev/zero > big.bin; echo status=$?; ls -l big.bin", Duration::from_secs(20)).await;
    assert!(done.output.text.contains("File size limit exceeded") || done.output.text.contains("status=153"), "one file cannot pass file_size_mib: {}", done.output.text);
    let done = sandbox.run("for i in $(seq 1 20); do head -c 7000000 /dev/zero > fill-$i.bin; done; sleep 5; echo finished", Duration::from_secs(30)).await;
    assert!(done.stopped_because.as_deref().is_some_and(|why| why.contains("disk quota of 64 MiB")), "{done:?}");

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
        fake_llm::tool_calls(&[("c1", "execute", r#"{"command": "ln -s /etc/hostname host-file; ln -s / host-root; ln -s ../../.. up; mkfifo pipe"}"#)]),
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
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), json!({"content": [{"type": "text", "text": "go"}]})).await;
    let mut all = server.finished(&chat).await;
    while all.len() < before + 6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        all = server.finished(&chat).await;
    }
    let done = tool_results(&all[before..]);
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    assert!(std::fs::symlink_metadata(files.join("host-root")).unwrap().file_type().is_symlink(), "the command planted its links");
    for (tool, result, is_error) in &done[1..] {
        assert!(*is_error, "{tool} must fail: {result}");
        assert!(hostname.is_empty() || !result.contains(&hostname), "the host's file leaked: {result}");
    }
    let (_, workdir, _) = done[5].clone();
    assert!(workdir.contains("must stay inside the workspace"), "{workdir}");
    let (_, pipe, _) = done[6].clone();
    assert!(pipe.contains("not a regular file"), "reading a FIFO fails at once instead of hanging: {pipe}");
    assert!(!files.parent().unwrap().parent().unwrap().join("escaped.txt").exists() && !std::path::Path::new("/escaped.txt").exists());
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_are_listed_read_signalled_and_killed_with_their_workspace() {
    let sandbox = Sandboxed::new().await;
    let spec = CommandSpec { command: "echo started; trap 'echo got TERM; exit 3' TERM; while true; do sleep 0.1; done".into(), ..CommandSpec::default() };
    let process = sandbox.service.spawn(&sandbox.workspace, spec, false).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let processes = sandbox.service.processes();
    let (info, output) = processes.output(&sandbox.workspace.id, &process.id).unwrap();
    assert!(info.running && output.contains("started"), "{info:?} {output}");
    assert!(processes.output("another-workspace", &process.id).is_none(), "a process is found only through its own workspace");
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
    assert!(!processes.output(&workspace.id, &process.id).unwrap().0.running, "the server's shutdown kills every process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_workspace_ends_its_startup_script_and_a_new_start_is_not_overtaken_by_the_old() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let admin = server.user("root", true).await;
    let templates = server.data.path().join("templates");
    std::fs::create_dir_all(templates.join("slow")).unwrap();
    let script = "if [ -f second-start ]; then echo second; exit 0; fi\ntouch second-start\nsleep 1019\n";
    std::fs::write(templates.join("slow/template.toml"), format!("name = 'Slow'\n[startup]\ntimeout_seconds = 120\nscript = {script:?}\n")).unwrap();
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
