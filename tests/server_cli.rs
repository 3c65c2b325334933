//! `toolhost serve`, `migrate`, `users` and `tokens`, run as an operator runs them.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::fake_llm::{self, FakeLlm};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn toolhost(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TOOLHOST_CONFIG")
        .output()
        .expect("toolhost runs")
}

/// Starts `serve` on an ephemeral port; returns the child, its base URL and what it said first.
fn serve(data_dir: &Path) -> (Child, String, Vec<String>) {
    serve_with_model(data_dir, "http://127.0.0.1:9/v1")
}

fn serve_with_model(data_dir: &Path, model_url: &str) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolhost"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--model", "test-model"])
        .env("OPENAI_BASE_URL", model_url)
        .env_remove("OPENAI_API_KEY")
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve says where it listens").unwrap();
        if let Some(rest) = line.strip_prefix("toolhost: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        said.push(line);
    };
    // Keep draining what the server says, as a terminal would, and echo it for failures.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("[server] {line}");
        }
    });
    (child, base, said)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap()
}

#[tokio::test]
async fn an_operator_starts_the_server_creates_a_token_and_calls_the_api() {
    let data = tempfile::tempdir().unwrap();
    let (mut first, _, said) = serve(data.path());
    assert!(said.join("\n").contains("toolhost users create admin --admin"), "the first start explains how to get a token: {said:?}");
    assert!(terminate(&mut first).success(), "SIGTERM shuts down cleanly");

    let migrate = toolhost(data.path(), &["migrate"]);
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let created = toolhost(data.path(), &["users", "create", "admin", "--admin"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let again = toolhost(data.path(), &["users", "create", "admin"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let nobody = toolhost(data.path(), &["tokens", "create", "nobody"]);
    assert!(!nobody.status.success() && String::from_utf8_lossy(&nobody.stderr).contains("no user `nobody`"));
    let token = toolhost(data.path(), &["tokens", "create", "admin"]);
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("th_"));

    let (mut server, base, said) = serve(data.path());
    assert!(!said.join("\n").contains("no users"), "{said:?}");
    let response = reqwest::Client::new().get(format!("{base}/api/v1/chats")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(terminate(&mut server).success());
}

#[test]
fn an_unusable_database_url_is_refused_with_what_to_use() {
    let data = tempfile::tempdir().unwrap();
    let out = toolhost(data.path(), &["--database-url", "mysql://x", "migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sqlite://") && err.contains("postgres://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_turn_resumes_the_chat_when_it_starts_again() {
    let data = tempfile::tempdir().unwrap();
    assert!(toolhost(data.path(), &["users", "create", "alice"]).status.success());
    let token = String::from_utf8(toolhost(data.path(), &["tokens", "create", "alice"]).stdout).unwrap().trim().to_string();
    let llm = FakeLlm::start().await;
    llm.script([fake_llm::slow_text("this answer will never finish because the server dies", Duration::from_millis(150))]);
    let (mut server, base, _) = serve_with_model(data.path(), &llm.base_url);
    let http = reqwest::Client::new();
    let chat: Value = http
        .post(format!("{base}/api/v1/chats"))
        .bearer_auth(&token)
        .json(&json!({"content": [{"type": "text", "text": "tell me something long"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = chat["id"].as_str().unwrap().to_string();
    // Watch until the answer is streaming, then kill the server without warning.
    let response = http.get(format!("{base}/api/v1/chats/{id}/stream")).bearer_auth(&token).send().await.unwrap();
    let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut parts = 0;
    while let Some(Ok(event)) = events.next().await {
        if event.event == "message_part" {
            parts += 1;
            if parts == 3 {
                break;
            }
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();

    llm.script([fake_llm::text("Resumed after the crash.")]);
    let (mut server, base, _) = serve_with_model(data.path(), &llm.base_url);
    let mut last = Value::Null;
    for _ in 0..200 {
        last = http.get(format!("{base}/api/v1/chats/{id}/messages")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        if last["messages"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = last["messages"].as_array().unwrap();
    let state: Value = http.get(format!("{base}/api/v1/chats/{id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(messages.len(), 2, "{last} {state} requests: {}", llm.requests().len());
    assert_eq!(messages[0]["content"][0]["text"], "tell me something long", "the accepted message survived");
    assert_eq!(messages[1]["content"][0]["text"], "Resumed after the crash.");
    assert!(terminate(&mut server).success());
}

#[test]
fn an_admin_checks_sets_and_explains_the_policy_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let broken = data.path().join("broken.cedar");
    std::fs::write(&broken, "permit (principal, action, resource);\n\nforbid (principal, action resource);\n").unwrap();
    let checked = toolhost(data.path(), &["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(1));
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(said.contains(&format!("{}:3:", broken.display())), "line-precise: {said}");
    let nested = data.path().join("nested.cedar");
    std::fs::write(&nested, format!("permit (principal, action, resource)\nwhen {{ {}true{} }};\n", "(".repeat(150), ")".repeat(150))).unwrap();
    let checked = toolhost(data.path(), &["policy", "check", nested.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(1), "a deeply nested policy is refused, not a crash: {checked:?}");
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(said.contains(&format!("{}:2:", nested.display())) && said.contains("nested more than"), "{said}");

    let policy = data.path().join("policy.cedar");
    let text = format!(
        "{}\n@id(\"subagents-do-not-write\")\nforbid (principal, action in [Action::\"see_tool\", Action::\"call_tool\"], resource)\nwhen {{ principal.kind == \"subagent\" && resource.name == \"write_file\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    );
    std::fs::write(&policy, text).unwrap();
    let checked = toolhost(data.path(), &["policy", "check", policy.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("valid"));

    let set = toolhost(data.path(), &["policy", "set", policy.to_str().unwrap(), "--author", "ops"]);
    assert_eq!(set.status.code(), Some(0), "{}", String::from_utf8_lossy(&set.stderr));
    let refused = toolhost(data.path(), &["policy", "set", broken.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "an invalid policy is not set");

    let explained = toolhost(data.path(), &["policy", "explain", "--kind", "subagent", "--json"]);
    assert_eq!(explained.status.code(), Some(0), "{}", String::from_utf8_lossy(&explained.stderr));
    let explained: Value = serde_json::from_slice(&explained.stdout).unwrap();
    assert_eq!(explained["policy_version"], 1);
    let tools = explained["explanation"]["tools"].as_array().unwrap();
    let write = tools.iter().find(|t| t["tool"] == "write_file").unwrap();
    assert_eq!((write["visible"].as_bool(), write["decided_by"].as_str()), (Some(false), Some("subagents-do-not-write")));
    let read = tools.iter().find(|t| t["tool"] == "read_file").unwrap();
    assert_eq!((read["visible"].as_bool(), read["decided_by"].as_str()), (Some(true), Some("subagents-use-tools")));
    let missing = toolhost(data.path(), &["policy", "explain", "--chat", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
}
