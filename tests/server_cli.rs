//! `toolhost serve`, `migrate`, `users` and `tokens`, run as an operator runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "support/process.rs"]
mod process;
mod support;

use std::path::Path;

use process::{Deployment, Served};
use serde_json::Value;

/// The server's command line over a data directory, as an operator runs it.
fn local(data_dir: &Path) -> Deployment {
    Deployment { data_dir: data_dir.to_path_buf(), database_url: None, config_file: None }
}

fn toolhost(data_dir: &Path, args: &[&str]) -> std::process::Output {
    local(data_dir).run(args)
}

/// Starts `serve` on an ephemeral port, its model unreachable.
fn serve(data_dir: &Path) -> Served {
    local(data_dir).serve("http://127.0.0.1:9/v1", &[])
}

/// Replicas of a test server are real processes configured as the in-process one is: through
/// the test builder's configuration, written as a file (`api.max_message_kib = 64` there, where
/// the default is 256).
#[tokio::test]
async fn a_server_process_runs_with_the_test_builders_configuration_file() {
    let data = tempfile::tempdir().unwrap();
    let builder =
        support::TestServer::builder().agents(toolhost::agents::AgentsConfig { max_depth: 2, ..Default::default() });
    let (deployment, _database) = process::deployment_of(&builder, support::Backend::Sqlite, data.path()).await;
    let token = deployment.user_token("alice");
    let mut server = deployment.serve("http://127.0.0.1:9/v1", &[]);
    let client = reqwest::Client::new();
    let big = serde_json::json!({"content": [{"type": "text", "text": "x".repeat(70 * 1024)}]});
    let response = client.post(server.url("/api/v1/chats")).bearer_auth(&token).json(&big).send().await.unwrap();
    assert_eq!(response.status(), 400, "the file's 64 KiB limit applies, not the default 256 KiB");
    let small = serde_json::json!({"content": [{"type": "text", "text": "hi"}]});
    let response = client.post(server.url("/api/v1/chats")).bearer_auth(&token).json(&small).send().await.unwrap();
    assert_eq!(response.status(), 201);
    server.stop();
}

#[tokio::test]
async fn an_operator_starts_the_server_creates_a_token_and_calls_the_api() {
    let data = tempfile::tempdir().unwrap();
    let mut first = serve(data.path());
    assert!(
        first.said.join("\n").contains("toolhost users create admin --admin"),
        "the first start explains how to get a token: {:?}",
        first.said
    );
    first.stop();

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

    let mut server = serve(data.path());
    assert!(!server.said.join("\n").contains("no users"), "{:?}", server.said);
    let response = reqwest::Client::new().get(server.url("/api/v1/chats")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop();
}

#[test]
fn an_unusable_database_url_is_refused_with_what_to_use() {
    let data = tempfile::tempdir().unwrap();
    let out = toolhost(data.path(), &["--database-url", "mysql://x", "migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sqlite://") && err.contains("postgres://"), "{err}");
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
    std::fs::write(
        &nested,
        format!("permit (principal, action, resource)\nwhen {{ {}true{} }};\n", "(".repeat(150), ")".repeat(150)),
    )
    .unwrap();
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
    assert_eq!(
        (write["visible"].as_bool(), write["decided_by"].as_str()),
        (Some(false), Some("subagents-do-not-write"))
    );
    let read = tools.iter().find(|t| t["tool"] == "read_file").unwrap();
    assert_eq!(
        (read["visible"].as_bool(), read["decided_by"].as_str()),
        (Some(true), Some("subagents-use-tools-but-computer"))
    );
    let missing = toolhost(data.path(), &["policy", "explain", "--chat", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
}
