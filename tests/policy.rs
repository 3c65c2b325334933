//! Tool policy: the default policy, administration through the API with validation, versions
//! and restore, explain, and enforcement (tool lists, calls, capability scopes) with the audit
//! log; on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm;
use support::{Backend, TestServer};
use toolhost::domain::ChatKind;
use toolhost::domain::parts::MessagePart;
use toolhost::store::NewChat;

async fn put_policy(server: &TestServer, token: &str, policy: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .put(server.url("/api/v1/policy"))
        .bearer_auth(token)
        .json(&json!({"policy": policy}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn tool<'a>(explained: &'a Value, name: &str) -> &'a Value {
    explained["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {explained}"))
}

/// The default policy, with subagents also kept from writing files.
fn no_writes_for_subagents() -> String {
    format!(
        "{}\n@id(\"subagents-do-not-write\")\nforbid (principal, action in [Action::\"see_tool\", Action::\"call_tool\"], resource)\nwhen {{ principal.kind == \"subagent\" && resource.name == \"write_file\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    )
}

/// Waits until a chat created through the store has finished its turn.
async fn wait_until_waiting(server: &TestServer, chat: &str) {
    for _ in 0..200 {
        if server.store.chat(chat).await.unwrap().unwrap().status == toolhost::store::ChatStatus::Waiting {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("chat {chat} never finished its turn");
}

/// A root chat of `owner` whose first turn (one scripted answer) is over.
async fn finished_root_chat(server: &TestServer, owner: &str) -> toolhost::store::Chat {
    let owner = server.store.find_user(owner).await.unwrap().unwrap();
    let root = NewChat {
        owner_id: owner.id,
        parent_chat_id: None,
        root_chat_id: None,
        kind: ChatKind::Root,
        workspace_id: None,
        title: "root".into(),
        model: None,
        content: vec![MessagePart::text("root")],
    };
    let (root, _) = server.store.create_chat(root).await.unwrap();
    wait_until_waiting(server, &root.id).await;
    root
}

/// A subagent of `root` started with `text`, created as the subagent tools will create them.
async fn subagent_chat(server: &TestServer, root: &toolhost::store::Chat, text: &str) -> String {
    let child = NewChat {
        owner_id: root.owner_id.clone(),
        parent_chat_id: Some(root.id.clone()),
        root_chat_id: Some(root.id.clone()),
        kind: ChatKind::Subagent,
        workspace_id: None,
        title: "child".into(),
        model: None,
        content: vec![MessagePart::text(text)],
    };
    server.store.create_chat(child).await.unwrap().0.id
}

async fn audit(server: &TestServer, admin: &str, expected: usize) -> Vec<Value> {
    for _ in 0..100 {
        let (status, page) = server.get(admin, "/api/v1/policy/audit").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let denials = page["denials"].as_array().unwrap().clone();
        if denials.len() >= expected {
            return denials;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the audit log never had {expected} denials");
}

async fn the_default_policy_is_in_force_out_of_the_box_and_explains_itself(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let (status, policy) = server.get(&admin, "/api/v1/policy").await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!((policy["version"].as_i64(), policy["source"].as_str()), (Some(0), Some("default")));
    assert!(policy["policy"].as_str().unwrap().contains("subagents-do-not-provision-workspaces-or-spawn-agents"));
    assert!(policy["schema"].as_str().unwrap().contains("action use_capability"));
    let (status, _) = server.get(&alice, "/api/v1/policy").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "members do not read the policy");

    let (status, root) = server.post(&admin, "/api/v1/policy/explain", json!({"kind": "root"})).await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(tool(&root, "write_file")["visible"], true);
    assert_eq!(tool(&root, "write_file")["decided_by"], "root-chats-use-every-tool-but-computer");
    let capability = root["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tool"] == "read_file" && c["capability"] == "workspace-fs")
        .unwrap();
    assert_eq!(capability["allowed"], true);
    assert_eq!(capability["decided_by"], "bundled-plugins-use-what-they-import");

    let (_, computer) = server.post(&admin, "/api/v1/policy/explain", json!({"kind": "computer-use"})).await;
    assert_eq!(tool(&computer, "read_file")["visible"], false);
    assert_eq!(tool(&computer, "read_file")["decided_by"], "no rule permits");
    assert_eq!(computer["principal"]["depth"], 1);

    let (status, both) = server.post(&admin, "/api/v1/policy/explain", json!({"chat_id": "x", "kind": "root"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{both}");
    let (status, _) = server.post(&admin, "/api/v1/policy/explain", json!({"chat_id": "no-such-chat"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.finish().await;
}
on_both_backends!(the_default_policy_is_in_force_out_of_the_box_and_explains_itself);

fn offered_tools(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|t| t.iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn tool_results(messages: &[toolhost::store::Message]) -> Vec<(String, bool)> {
    messages
        .iter()
        .filter(|m| m.role == toolhost::domain::Role::Tool)
        .flat_map(|m| m.content.iter())
        .filter_map(|p| match p {
            MessagePart::ToolResult { result, is_error, .. } => {
                Some((result.as_str().unwrap_or_default().to_string(), *is_error))
            }
            _ => None,
        })
        .collect()
}

async fn under_the_default_policy_a_subagent_is_not_told_of_root_only_tools_and_cannot_call_them(backend: Backend) {
    // The bundled workspaces, subagents and computer plugins.
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    server.user("alice", false).await;
    server.llm.script([
        fake_llm::tool_calls(&[("c1", "spawn_computer_use_agent", r#"{"prompt": "open the browser"}"#)]),
        fake_llm::text("spawned"),
    ]);
    let root = finished_root_chat(&server, "alice").await;
    let root_results = tool_results(&server.store.messages(&root.id, 0).await.unwrap());
    // The policy lets the call through; the agent service then says what is missing.
    assert_eq!(root_results.len(), 1);
    assert!(
        root_results[0].0.contains("no model is marked for computer use") && root_results[0].1,
        "root chats call it, and learn which setting it needs: {root_results:?}"
    );
    let root_tools = offered_tools(&server.llm.requests()[0]);
    for tool in ["create_workspace", "spawn_agent", "wait_agent", "list_templates", "read_file", "execute"] {
        assert!(root_tools.iter().any(|t| t == tool), "root chats are told of {tool}: {root_tools:?}");
    }
    assert!(
        !root_tools.iter().any(|t| t == "spawn_computer_use_agent"),
        "with no model marked for computer use, the agent on a desktop is not offered: {root_tools:?}"
    );

    server.llm.script([fake_llm::tool_calls(&[("c2", "create_workspace", "{}")]), fake_llm::text("I may not.")]);
    let child = subagent_chat(&server, &root, "make a workspace").await;
    wait_until_waiting(&server, &child).await;
    let requests = server.llm.requests();
    let child_request = requests.iter().find(|r| r.to_string().contains("make a workspace")).unwrap();
    let child_tools = offered_tools(child_request);
    assert!(
        child_tools.iter().any(|t| t == "read_file") && child_tools.iter().any(|t| t == "execute"),
        "{child_tools:?}"
    );
    for tool in [
        "create_workspace",
        "start_workspace",
        "spawn_agent",
        "wait_agent",
        "message_agent",
        "close_agent",
        "spawn_computer_use_agent",
        "list_templates",
        "read_template",
    ] {
        assert!(!child_tools.iter().any(|t| t == tool), "the subagent is told of {tool}: {child_tools:?}");
    }
    let (result, is_error) = tool_results(&server.store.messages(&child, 0).await.unwrap()).remove(0);
    assert!(
        is_error && result.contains("subagents-do-not-provision-workspaces-or-spawn-agents") && !result.contains("ran"),
        "{result}"
    );
    let denials = audit(&server, &admin, 1).await;
    assert_eq!(
        (denials[0]["chat_id"].as_str(), denials[0]["tool"].as_str(), denials[0]["plugin"].as_str()),
        (Some(child.as_str()), Some("create_workspace"), Some("workspaces"))
    );
    assert_eq!(denials[0]["policy_version"], 0, "the built-in default decided");
    server.finish().await;
}
on_both_backends!(under_the_default_policy_a_subagent_is_not_told_of_root_only_tools_and_cannot_call_them);

async fn a_subagent_sees_and_calls_only_what_the_policy_allows_and_denials_are_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    server.user("alice", false).await;
    let (status, saved) = put_policy(&server, &admin, &no_writes_for_subagents()).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["version"], 1);

    server.llm.script([fake_llm::text("root answer")]);
    let root = finished_root_chat(&server, "alice").await;
    server.llm.script([
        fake_llm::tool_calls(&[
            ("call_w", "write_file", r#"{"path": "stolen.txt", "content": "x"}"#),
            ("call_r", "read_file", r#"{"path": "missing.txt"}"#),
        ]),
        fake_llm::text("I could not write."),
    ]);
    let child = subagent_chat(&server, &root, "write a file").await;
    wait_until_waiting(&server, &child).await;
    let requests = server.llm.requests();
    let child_requests: Vec<&Value> = requests.iter().filter(|r| r.to_string().contains("write a file")).collect();
    assert_eq!(child_requests.len(), 2, "{requests:?}");
    let offered: Vec<&str> = child_requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.contains(&"read_file") && !offered.contains(&"write_file"),
        "the subagent is not told about write_file: {offered:?}"
    );
    let root_requests: Vec<&Value> = requests.iter().filter(|r| !r.to_string().contains("write a file")).collect();
    assert!(root_requests[0]["tools"].to_string().contains("write_file"), "root chats still see it");

    let messages = server.store.messages(&child, 0).await.unwrap();
    let results = &messages.iter().find(|m| m.role == toolhost::domain::Role::Tool).unwrap().content;
    let MessagePart::ToolResult { result, is_error, .. } = &results[0] else { panic!("{results:?}") };
    assert!(
        *is_error && result.as_str().unwrap().contains("the tool policy denies it (subagents-do-not-write"),
        "{result}"
    );
    let MessagePart::ToolResult { result, .. } = &results[1] else { panic!() };
    assert!(!result.as_str().unwrap().contains("policy"), "read_file ran: {result}");
    let workspaces = server.data.path().join("workspaces");
    let ids: Vec<String> = std::fs::read_dir(&workspaces)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let stolen = ids
        .iter()
        .filter_map(|id| server.workspaces.local_files(id))
        .any(|files| files.exists() && has_file(&files, "stolen.txt"));
    assert!(!stolen, "the invented call did not run");

    let denials = audit(&server, &admin, 1).await;
    assert_eq!(denials[0]["chat_id"], child.as_str());
    assert_eq!((denials[0]["tool"].as_str(), denials[0]["action"].as_str()), (Some("write_file"), Some("call_tool")));
    assert_eq!(denials[0]["decided_by"], "subagents-do-not-write (not visible to this chat)");
    assert_eq!(denials[0]["policy_version"], 1);

    let (_, explained) = server.post(&admin, "/api/v1/policy/explain", json!({"chat_id": child})).await;
    assert_eq!(explained["principal"]["kind"], "subagent");
    assert_eq!(explained["principal"]["depth"], 1);
    assert_eq!(explained["principal"]["owner"], "alice");
    assert_eq!(tool(&explained, "write_file")["callable"], false);
    server.finish().await;
}
on_both_backends!(a_subagent_sees_and_calls_only_what_the_policy_allows_and_denials_are_audited);

async fn a_capability_use_outside_its_allowed_scope_is_denied_and_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let policy = format!(
        "{}\n@id(\"no-secrets\")\nforbid (principal, action == Action::\"use_capability\", resource == Capability::\"workspace-fs\")\nwhen {{ context has scope && context.scope like \"secrets/*\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    );
    let (status, saved) = put_policy(&server, &admin, &policy).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    server.llm.script([
        fake_llm::tool_calls(&[
            ("c1", "write_file", r#"{"path": "secrets/key", "content": "k"}"#),
            ("c2", "write_file", r#"{"path": "notes.txt", "content": "n"}"#),
        ]),
        fake_llm::text("done"),
    ]);
    let (chat, workspace) = server.chat_with_workspace(&alice, "write both").await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    assert!(!workspace.join("secrets/key").exists(), "the forbidden path was not written");
    assert_eq!(std::fs::read_to_string(workspace.join("notes.txt")).unwrap(), "n", "other paths are");
    let denials = audit(&server, &admin, 1).await;
    assert_eq!(denials[0]["action"], "use_capability");
    assert_eq!(denials[0]["capability"], "workspace-fs");
    assert_eq!(denials[0]["scope"], "secrets/key");
    assert_eq!(denials[0]["decided_by"], "no-secrets");
    server.finish().await;
}
on_both_backends!(a_capability_use_outside_its_allowed_scope_is_denied_and_audited);

async fn bad_policies_are_refused_with_line_precise_errors_and_nothing_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;

    let (status, refused) =
        put_policy(&server, &admin, "permit (principal, action, resource);\n\nforbid (principal, action resource);\n")
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_policy");
    assert_eq!(refused["error"]["details"]["problems"][0]["line"], 3, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("nothing was changed"));

    let (status, refused) = put_policy(&server, &admin, "permit (principal is Robot, action, resource);").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an unknown entity type: {refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("Robot"), "{refused}");
    let (status, refused) =
        put_policy(&server, &admin, "permit (principal, action, resource)\nwhen { principal.colour == \"red\" };")
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an unknown attribute: {refused}");
    assert_eq!(refused["error"]["details"]["problems"][0]["line"], 2);

    let (status, _) = put_policy(&server, &alice, toolhost::policy::DEFAULT_POLICY).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server.get(&admin, "/api/v1/policy").await.1["version"], 0, "nothing refused took effect");

    let typo = format!(
        "{}\n@id(\"typo\")\nforbid (principal, action, resource) when {{ resource.name == \"raed_file\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    );
    let (status, saved) = put_policy(&server, &admin, &typo).await;
    assert_eq!(status, StatusCode::OK, "an unknown tool name is a warning: {saved}");
    let warnings = saved["warnings"].as_array().unwrap();
    let warning = warnings.iter().find(|w| w["rule"] == "typo").unwrap_or_else(|| panic!("{saved}"));
    assert!(
        warning["message"].as_str().unwrap().contains("no installed plugin offers a tool named `raed_file`"),
        "{saved}"
    );
    assert!(warning["line"].as_u64().unwrap() > 30, "{warning}");

    let (status, saved) = put_policy(
        &server,
        &admin,
        "@id(\"lockdown\")\nforbid (principal, action, resource);\npermit (principal, action, resource);",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(
        saved["warnings"].to_string().contains("WARNING: with this policy an admin's root chat sees none"),
        "{saved}"
    );
    assert_eq!(saved["version"], 2);

    // Every version is kept and an earlier one can be put back; another replica picks it up.
    let (_, versions) = server.get(&admin, "/api/v1/policy/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(versions["versions"][0]["author"], "root");
    let (status, restored) = server.post(&admin, "/api/v1/policy/versions/1/restore", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["version"], 3);
    let (_, active) = server.get(&admin, "/api/v1/policy").await;
    assert!(active["policy"].as_str().unwrap().contains("raed_file"));
    let (_, listed) = server.get(&admin, "/api/v1/policy/versions").await;
    assert_eq!(listed["versions"][0]["note"], "restored version 1");
    let (status, _) = server.post(&admin, "/api/v1/policy/versions/99/restore", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let inventory = toolhost::policy::Inventory::default();
    let replica = toolhost::policy::PolicyEngine::load(server.store.clone(), inventory).await.unwrap();
    assert_eq!(replica.active().version, 3, "another replica loads the stored policy");
    let (status, _) = server.post(&admin, "/api/v1/policy/versions/0/restore", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replica.refresh().await.unwrap().version, 4, "and follows changes before its next step");
    server.finish().await;
}
on_both_backends!(bad_policies_are_refused_with_line_precise_errors_and_nothing_changes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policy_texts_get_a_422_with_a_place_and_the_server_lives_on() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.user("root", true).await;
    let rule = |condition: String| format!("permit (principal, action, resource)\nwhen {{ {condition} }};\n");
    for (what, text) in [
        ("nested parentheses", rule(format!("{}true{}", "(".repeat(150), ")".repeat(150)))),
        ("a long && chain", rule(vec!["principal.depth == 0"; 3000].join(" && "))),
        ("nested if-then-else", rule(format!("{}true{}", "if true then ".repeat(1200), " else false".repeat(1200)))),
    ] {
        let (status, refused) = put_policy(&server, &admin, &text).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {refused}");
        assert_eq!(refused["error"]["code"], "invalid_policy", "{what}");
        let line = refused["error"]["details"]["problems"][0]["line"].as_u64().unwrap_or_default();
        assert!((1..=2).contains(&line), "{what}: the problem is placed in the rule (lines 1-2): {refused}");
        let (health, _) = server.get(&admin, "/healthz").await;
        assert_eq!(health, StatusCode::OK, "{what}: the server lives on");
    }
    assert_eq!(server.get(&admin, "/api/v1/policy").await.1["version"], 0, "nothing refused took effect");
    server.finish().await;
}

async fn scoped_rules_follow_symbolic_links_and_hidden_tools_stay_uncallable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let policy = format!(
        "{}\n@id(\"no-secrets\")\nforbid (principal, action == Action::\"use_capability\", resource == Capability::\"workspace-fs\")\nwhen {{ context has scope && (context.scope == \"secrets\" || context.scope like \"secrets/*\") }};\n\
         @id(\"edit-files-unseen\")\nforbid (principal, action == Action::\"see_tool\", resource) when {{ resource.name == \"edit_files\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    );
    let (status, saved) = put_policy(&server, &admin, &policy).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    server.llm.script([
        fake_llm::tool_calls(&[("c1", "write_file", r#"{"path": "notes.txt", "content": "n"}"#)]),
        fake_llm::text("ok"),
    ]);
    let (chat, workspace) = server.chat_with_workspace(&alice, "start").await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    assert!(!offered_tools(&server.llm.requests()[0]).iter().any(|t| t == "edit_files"), "edit_files is not offered");

    // A link planted in the workspace (as a command could) leads into the closed folder.
    std::fs::create_dir_all(workspace.join("secrets")).unwrap();
    std::fs::write(workspace.join("secrets/key"), "hunter2").unwrap();
    std::os::unix::fs::symlink("secrets", workspace.join("shortcut")).unwrap();
    server.llm.script([
        fake_llm::tool_calls(&[
            ("c2", "read_file", r#"{"path": "shortcut/key"}"#),
            ("c3", "edit_files", r#"{"files": [{"path": "notes.txt", "edits": [{"search": "n", "replace": "m"}]}]}"#),
        ]),
        fake_llm::text("done"),
    ]);
    server
        .post(
            &alice,
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"content": [{"type": "text", "text": "read it"}]}),
        )
        .await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let results = tool_results(&server.store.messages(&chat, 0).await.unwrap());
    let (read, read_error) = &results[1];
    assert!(*read_error && read.contains("no-secrets") && !read.contains("hunter2"), "{read}");
    let (edit, edit_error) = &results[2];
    assert!(
        *edit_error && edit.contains("edit-files-unseen") && edit.contains("not visible"),
        "a tool hidden from the chat is not callable by name: {edit}"
    );
    assert_eq!(std::fs::read_to_string(workspace.join("notes.txt")).unwrap(), "n");
    let denials = audit(&server, &admin, 2).await;
    assert!(denials.iter().any(|d| d["scope"] == "secrets/key" && d["decided_by"] == "no-secrets"), "{denials:?}");
    server.finish().await;
}
on_both_backends!(scoped_rules_follow_symbolic_links_and_hidden_tools_stay_uncallable);

async fn a_stored_policy_that_no_longer_loads_denies_everything_rather_than_falling_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    // As if an upgrade changed the schema under a stored policy.
    server
        .store
        .add_policy_version("permit (principal, action, resource) when { principal.retired_attribute };", "root", "")
        .await
        .unwrap();
    let inventory = toolhost::policy::sample_inventory(0);
    let engine = toolhost::policy::PolicyEngine::load(server.store.clone(), inventory).await.unwrap();
    let active = engine.active();
    assert_eq!(active.version, 1);
    assert!(
        active
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("no longer validates") && p.contains("PUT /api/v1/policy")),
        "{:?}",
        active.problem
    );
    let root = toolhost::policy::Principal {
        id: "c".into(),
        kind: ChatKind::Root,
        depth: 0,
        owner: "a".into(),
        owner_role: "admin".into(),
        model: String::new(),
    };
    assert!(active.rules.visible_tools(&root).is_empty(), "nothing is allowed");
    assert_eq!(engine.refresh().await.unwrap().version, 1, "and it is not rebuilt at every step");
    let saved = engine.save(toolhost::policy::DEFAULT_POLICY, "root", "").await.unwrap();
    assert_eq!(saved.version, 2);
    assert!(
        engine.active().problem.is_none() && !engine.active().rules.visible_tools(&root).is_empty(),
        "a valid policy heals it"
    );
    server.finish().await;
}
on_both_backends!(a_stored_policy_that_no_longer_loads_denies_everything_rather_than_falling_back);

/// Whether a file named `name` is anywhere under `folder`.
fn has_file(folder: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(folder).unwrap().flatten().any(|entry| {
        let path = entry.path();
        entry.file_name() == name || (path.is_dir() && !path.is_symlink() && has_file(&path, name))
    })
}
