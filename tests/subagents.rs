//! Subagents: a root chat spawns children that work in its workspace in parallel, waits for
//! their reports and finishes; the limits, ancestry and bad input give clear tool errors;
//! interrupting a root chat reaches its children; the tree is visible through the API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm::{self, computed};
use support::{Backend, TestServer, tool_results};
use toolhost::agents::AgentsConfig;

/// The chat ids spawn_agent returned, as the model reads them in its request.
fn spawned_ids(request: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for message in request["messages"].as_array().unwrap() {
        if message["role"] == "tool"
            && let Ok(result) = serde_json::from_str::<Value>(message["content"].as_str().unwrap_or(""))
            && let (Some(id), Some(_)) = (result["chat_id"].as_str(), result["note"].as_str())
        {
            ids.push(id.to_string());
        }
    }
    ids
}

/// A `wait_agent` call on every child spawned so far.
fn wait_for_all(id: &'static str, timeout_seconds: u64) -> fake_llm::Script {
    computed(move |request| {
        let args = json!({"chat_ids": spawned_ids(request), "timeout_seconds": timeout_seconds}).to_string();
        fake_llm::tool_calls(&[(id, "wait_agent", &args)])
    })
}

fn offered_tools(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| tools.iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

async fn a_root_chat_delegates_to_two_subagents_in_its_workspace_and_collects_their_reports(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    let workspace = server.ready_workspace(&alice, "blank", json!({})).await;
    server.llm.script_for(
        "ROOT-TASK",
        [
            fake_llm::tool_calls(&[
                ("r1", "spawn_agent", r#"{"prompt": "CHILD-A: write a.txt", "title": "writer a"}"#),
                ("r2", "spawn_agent", r#"{"prompt": "CHILD-B: write b.txt"}"#),
            ]),
            wait_for_all("r3", 60),
            fake_llm::text("Both subagents are done."),
        ],
    );
    server.llm.script_for(
        "CHILD-A",
        [
            fake_llm::tool_calls(&[
                ("a1", "write_file", r#"{"path": "a.txt", "content": "from A\n"}"#),
                ("a2", "spawn_agent", r#"{"prompt": "grandchild"}"#),
            ]),
            fake_llm::tool_calls(&[("a3", "execute", r#"{"command": "cat a.txt"}"#)]),
            fake_llm::text("A: wrote a.txt"),
        ],
    );
    server.llm.script_for(
        "CHILD-B",
        [
            fake_llm::tool_calls(&[("b1", "write_file", r#"{"path": "b.txt", "content": "from B\n"}"#)]),
            fake_llm::text("B: wrote b.txt"),
        ],
    );
    let body =
        json!({"content": [{"type": "text", "text": "ROOT-TASK: split the work"}], "workspace_id": workspace["id"]});
    let (status, root) = server.post(&alice, "/api/v1/chats", body).await;
    assert_eq!(status, StatusCode::CREATED, "{root}");
    let root = root["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&root).await);

    let spawned: Vec<&(String, String, bool)> = done.iter().filter(|(tool, _, _)| tool == "spawn_agent").collect();
    assert!(spawned.len() == 2 && spawned.iter().all(|(_, _, is_error)| !is_error), "{done:?}");
    let (_, waited, is_error) = done.iter().find(|(tool, _, _)| tool == "wait_agent").unwrap();
    assert!(!is_error, "{waited}");
    let waited: Value = serde_json::from_str(waited).unwrap();
    let reports: Vec<&str> =
        waited["agents"].as_array().unwrap().iter().map(|a| a["report"].as_str().unwrap_or("")).collect();
    assert_eq!(reports, ["A: wrote a.txt", "B: wrote b.txt"], "the reports come back in the order asked: {waited}");
    assert!(waited["agents"].as_array().unwrap().iter().all(|a| a["status"] == "finished"));

    let files = server.workspace_files(workspace["id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(files.join("a.txt")).unwrap(), "from A\n");
    assert_eq!(
        std::fs::read_to_string(files.join("b.txt")).unwrap(),
        "from B\n",
        "both children worked in the root's workspace"
    );

    let (status, children) = server.get(&alice, &format!("/api/v1/chats/{root}/children")).await;
    assert_eq!(status, StatusCode::OK);
    let children = children["chats"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for child in children {
        assert_eq!(
            (child["parent_chat_id"].as_str(), child["root_chat_id"].as_str(), child["kind"].as_str()),
            (Some(root.as_str()), Some(root.as_str()), Some("subagent"))
        );
    }
    assert!(children.iter().any(|c| c["title"] == "writer a"));

    let child_a = children.iter().find(|c| c["title"] == "writer a").unwrap()["id"].as_str().unwrap().to_string();
    let child_a_results = tool_results(&server.store.messages(&child_a, 0).await.unwrap());
    let (_, grandchild, is_error) = child_a_results.iter().find(|(tool, _, _)| tool == "spawn_agent").unwrap();
    assert!(*is_error && grandchild.contains("subagents-do-not-provision-workspaces-or-spawn-agents"), "{grandchild}");
    let first_user = |r: &Value| {
        r["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "user")
            .map(|m| m["content"].to_string())
            .unwrap_or_default()
    };
    let child_requests: Vec<Value> =
        server.llm.requests().into_iter().filter(|r| first_user(r).contains("CHILD-")).collect();
    assert!(child_requests.len() >= 5, "{}", child_requests.len());
    for request in &child_requests {
        let offered = offered_tools(request);
        for hidden in [
            "spawn_agent",
            "wait_agent",
            "message_agent",
            "close_agent",
            "create_workspace",
            "start_workspace",
            "list_templates",
        ] {
            assert!(!offered.contains(&hidden.to_string()), "a child's request offers {hidden}: {offered:?}");
        }
        assert!(
            request["messages"][0]["content"].as_str().unwrap().contains("You are a subagent"),
            "children get the subagent instruction"
        );
    }
    server.finish().await;
}
on_both_backends!(a_root_chat_delegates_to_two_subagents_in_its_workspace_and_collects_their_reports);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_ancestry_and_bad_input_are_clear_tool_errors() {
    let agents = AgentsConfig { max_depth: 1, max_concurrent_per_root: 2, max_spawns_per_turn: 2 };
    let server = TestServer::start_with_agents(Backend::Sqlite, agents).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;
    // A chat of someone else's, which alice's chat must not be able to address.
    server.llm.script_for("BOB-TASK", [fake_llm::text("bob's answer")]);
    let (_, bobs) =
        server.post(&bob, "/api/v1/chats", json!({"content": [{"type": "text", "text": "BOB-TASK"}]})).await;
    let bobs = bobs["id"].as_str().unwrap().to_string();
    server.finished(&bobs).await;

    let slow = (0..30).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ") + " eight";
    server.llm.script_for("SLOW-1", [fake_llm::slow_text(&slow, Duration::from_millis(100))]);
    server.llm.script_for("SLOW-2", [fake_llm::slow_text(&slow, Duration::from_millis(100))]);
    let bad_waits = format!(
        r#"{{"chat_ids": ["no-such-chat"]}}|{{"chat_ids": ["{bobs}"]}}|{{"chat_ids": []}}|{{"prompt": "   "}}"#
    );
    let bad: Vec<String> = bad_waits.split('|').map(str::to_string).collect();
    server.llm.script_for(
        "ROOT-LIMITS",
        [
            fake_llm::tool_calls(&[
                ("s1", "spawn_agent", r#"{"prompt": "SLOW-1"}"#),
                ("s2", "spawn_agent", r#"{"prompt": "SLOW-2"}"#),
                ("s3", "spawn_agent", r#"{"prompt": "THIRD"}"#),
            ]),
            fake_llm::tool_calls(&[
                ("w1", "wait_agent", &bad[0]),
                ("w2", "wait_agent", &bad[1]),
                ("w3", "wait_agent", &bad[2]),
                ("w4", "spawn_agent", &bad[3]),
            ]),
            computed(|request| {
                let ids = spawned_ids(request);
                fake_llm::tool_calls(&[(
                    "w5",
                    "wait_agent",
                    &json!({"chat_ids": [ids[0]], "timeout_seconds": 0}).to_string(),
                )])
            }),
            wait_for_all("w6", 60),
            fake_llm::tool_calls(&[("s4", "spawn_agent", r#"{"prompt": "FOURTH"}"#)]),
            fake_llm::text("done"),
        ],
    );
    let (_, root) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "ROOT-LIMITS"}]})).await;
    let root = root["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&root).await);
    let result = |id: usize| done[id].clone();

    let spawns: Vec<(String, String, bool)> = done[..3].to_vec();
    let refused: Vec<&(String, String, bool)> = spawns.iter().filter(|(_, _, is_error)| *is_error).collect();
    assert_eq!(refused.len(), 1, "two spawns run, the third is refused: {spawns:?}");
    assert!(refused[0].1.contains("max_concurrent_per_root"), "the error names the limit: {}", refused[0].1);

    let (_, not_found, is_error) = result(3);
    assert!(is_error && not_found.contains("there is no chat `no-such-chat`"), "{not_found}");
    let (_, foreign, is_error) = result(4);
    assert!(is_error && foreign.contains("is not one of this chat's subagents"), "{foreign}");
    let (_, empty, is_error) = result(5);
    assert!(is_error && empty.contains("chat_ids"), "an empty list is refused by the schema: {empty}");
    let (_, blank, is_error) = result(6);
    assert!(is_error && blank.contains("the prompt is empty"), "{blank}");

    let (_, short, is_error) = result(7);
    let short: Value = serde_json::from_str(&short).unwrap_or(json!({"raw": short}));
    assert!(
        !is_error && short["note"].as_str().unwrap_or("").contains("still working"),
        "a zero timeout is clamped to a short wait that reports progress: {short}"
    );
    let (_, all, is_error) = result(8);
    assert!(!is_error && all.contains("eight"), "{all}");
    let (_, per_turn, is_error) = result(9);
    assert!(is_error && per_turn.contains("max_spawns_per_turn"), "{per_turn}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subagent_may_not_spawn_past_the_depth_limit_even_when_the_policy_lets_it_try() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.user("root", true).await;
    // The default policy without the rule that hides agent tools from subagents.
    let policy = toolhost::policy::DEFAULT_POLICY
        .replace("\"spawn_agent\", \"wait_agent\", \"message_agent\", \"close_agent\",", "");
    let response = server
        .http
        .put(server.url("/api/v1/policy"))
        .bearer_auth(&admin)
        .json(&json!({"policy": policy}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.llm.script_for(
        "ROOT-DEPTH",
        [
            fake_llm::tool_calls(&[("r1", "spawn_agent", r#"{"prompt": "CHILD-DEPTH"}"#)]),
            wait_for_all("r2", 60),
            fake_llm::text("ok"),
        ],
    );
    server.llm.script_for(
        "CHILD-DEPTH",
        [
            fake_llm::tool_calls(&[("c1", "spawn_agent", r#"{"prompt": "grandchild"}"#)]),
            fake_llm::text("I could not delegate."),
        ],
    );
    let (_, root) =
        server.post(&admin, "/api/v1/chats", json!({"content": [{"type": "text", "text": "ROOT-DEPTH"}]})).await;
    let root = root["id"].as_str().unwrap().to_string();
    server.finished(&root).await;
    let children = server.store.children(&root).await.unwrap();
    assert_eq!(children.len(), 1);
    let (_, refused, is_error) = tool_results(&server.store.messages(&children[0].id, 0).await.unwrap()).remove(0);
    assert!(is_error && refused.contains("max_depth"), "{refused}");
    assert!(server.store.children(&children[0].id).await.unwrap().is_empty());
    server.finish().await;
}

async fn interrupting_a_root_chat_interrupts_its_running_subagents(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let words = (0..400).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    server.llm.script_for("CHILD-LONG", [fake_llm::slow_text(&words, Duration::from_millis(50))]);
    server.llm.script_for(
        "ROOT-INTERRUPT",
        [
            fake_llm::tool_calls(&[("r1", "spawn_agent", r#"{"prompt": "CHILD-LONG"}"#)]),
            wait_for_all("r2", 600),
            fake_llm::text("never"),
        ],
    );
    let (_, root) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "ROOT-INTERRUPT"}]})).await;
    let root = root["id"].as_str().unwrap().to_string();
    let mut child = None;
    for _ in 0..200 {
        if let Some(first) = server.store.children(&root).await.unwrap().into_iter().next()
            && first.status == toolhost::store::ChatStatus::Running
        {
            child = Some(first.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let child = child.expect("the child runs");
    let (status, _) = server.post(&alice, &format!("/api/v1/chats/{root}/interrupt"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.wait_for_status(&alice, &root, "waiting").await;
    let child_now = server.wait_for_status(&alice, &child, "waiting").await;
    assert_eq!(child_now["status"], "waiting", "the interrupt reached the child");
    let streamed = server.store.last_assistant_text(&child).await.unwrap().unwrap_or_default();
    assert!(
        !streamed.contains("w399"),
        "the child stopped before the end of its answer: {} words",
        streamed.split(' ').count()
    );
    server.finish().await;
}
on_both_backends!(interrupting_a_root_chat_interrupts_its_running_subagents);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subagent_that_fails_is_a_tool_error_carrying_its_last_error() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.user("alice", false).await;
    server.llm.script_for(
        "CHILD-FAILS",
        [fake_llm::Script::Status(401, json!({"error": {"message": "Incorrect API key provided"}}))],
    );
    server.llm.script_for(
        "ROOT-FAILS",
        [
            fake_llm::tool_calls(&[("r1", "spawn_agent", r#"{"prompt": "CHILD-FAILS"}"#)]),
            wait_for_all("r2", 60),
            fake_llm::text("noted"),
        ],
    );
    let (_, root) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "ROOT-FAILS"}]})).await;
    let root = root["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&root).await);
    let (_, waited, is_error) = done.iter().find(|(tool, _, _)| tool == "wait_agent").unwrap().clone();
    assert!(is_error, "{waited}");
    let waited: Value = serde_json::from_str(&waited).unwrap();
    assert_eq!(waited["agents"][0]["status"], "error");
    assert!(
        waited["error"].as_str().unwrap().contains("Incorrect API key provided"),
        "the child's last_error reaches the parent: {waited}"
    );
    server.finish().await;
}

async fn a_restart_during_a_wait_repeats_the_wait_and_says_a_cut_off_command_may_not_have_run(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    let workspace = server.ready_workspace(&alice, "blank", json!({})).await;
    // A command of this test's own: the other backend's run of it may be under way at once.
    let seconds = match backend {
        Backend::Sqlite => 1021,
        Backend::Postgres => 1023,
    };
    let sleeping = format!("sleep\u{0}{seconds}");
    // The child's first answer is cut off by the restart; its turn runs again and reports.
    let slow = (0..40).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    server.llm.script_for(
        "CHILD-PATIENT",
        [fake_llm::slow_text(&slow, Duration::from_millis(200)), fake_llm::text("the patient report")],
    );
    server.llm.script_for(
        "ROOT-RESTART",
        [
            fake_llm::tool_calls(&[("r1", "spawn_agent", r#"{"prompt": "CHILD-PATIENT: take your time"}"#)]),
            computed(move |request| {
                let wait = json!({"chat_ids": spawned_ids(request), "timeout_seconds": 120}).to_string();
                let command = json!({"command": format!("sleep {seconds}")}).to_string();
                fake_llm::tool_calls(&[("r2", "wait_agent", &wait), ("r3", "execute", &command)])
            }),
            fake_llm::text("all done"),
        ],
    );
    let body = json!({"content": [{"type": "text", "text": "ROOT-RESTART"}], "workspace_id": workspace["id"]});
    let (_, root) = server.post(&alice, "/api/v1/chats", body).await;
    let root = root["id"].as_str().unwrap().to_string();
    for _ in 0..400 {
        if support::processes_running(&sleeping) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(support::processes_running(&sleeping) > 0, "the command runs while the root waits");
    let child = server.store.children(&root).await.unwrap().remove(0);
    assert_eq!(
        server.store.chat(&child.id).await.unwrap().unwrap().status,
        toolhost::store::ChatStatus::Running,
        "the child is still at work"
    );

    server.restart_worker().await;
    for _ in 0..100 {
        if support::processes_running(&sleeping) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(support::processes_running(&sleeping), 0, "the shutdown ended the command");

    let done = tool_results(&server.finished(&root).await);
    assert_eq!(done.len(), 3, "one result per call, none twice: {done:?}");
    let (tool, waited, is_error) = &done[1];
    assert!(
        tool == "wait_agent" && !is_error && waited.contains("the patient report"),
        "the wait ran again and got the report: {waited}"
    );
    let (tool, cut_off, is_error) = &done[2];
    assert!(
        tool == "execute" && *is_error && cut_off.contains("server restarted"),
        "the model learns the command may not have run: {cut_off}"
    );
    let last = server.store.messages(&root, 0).await.unwrap().last().unwrap().clone();
    assert_eq!(
        (last.role.as_str(), last.content[0].clone()),
        ("assistant", toolhost::domain::parts::MessagePart::text("all done"))
    );
    server.finish().await;
}
on_both_backends!(a_restart_during_a_wait_repeats_the_wait_and_says_a_cut_off_command_may_not_have_run);

async fn a_parent_waiting_on_its_subagents_leaves_them_room_to_work(backend: Backend) {
    // One turn and one plugin call at a time: the root's wait must make room for its children.
    let server = TestServer::start_with_slots(backend, 1, 1).await;
    server.require_sandbox();
    let alice = server.user("alice", false).await;
    let workspace = server.ready_workspace(&alice, "blank", json!({})).await;
    server.llm.script_for(
        "ROOT-ROOM",
        [
            fake_llm::tool_calls(&[
                ("r1", "spawn_agent", r#"{"prompt": "CHILD-ROOM-A"}"#),
                ("r2", "spawn_agent", r#"{"prompt": "CHILD-ROOM-B"}"#),
            ]),
            wait_for_all("r3", 60),
            fake_llm::text("both done"),
        ],
    );
    for (marker, file) in [("CHILD-ROOM-A", "a.txt"), ("CHILD-ROOM-B", "b.txt")] {
        let write = json!({"path": file, "content": marker}).to_string();
        server.llm.script_for(
            marker,
            [fake_llm::tool_calls(&[("c1", "write_file", &write)]), fake_llm::text(&format!("wrote {file}"))],
        );
    }
    let body = json!({"content": [{"type": "text", "text": "ROOT-ROOM"}], "workspace_id": workspace["id"]});
    let (_, root) = server.post(&alice, "/api/v1/chats", body).await;
    let root = root["id"].as_str().unwrap().to_string();
    let done = tool_results(&server.finished(&root).await);
    let (_, waited, is_error) = done.iter().find(|(tool, _, _)| tool == "wait_agent").unwrap();
    let waited: Value = serde_json::from_str(waited).unwrap();
    let statuses: Vec<&str> =
        waited["agents"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert!(!is_error && statuses == ["finished", "finished"], "the children ran while their parent waited: {waited}");
    let files = server.workspace_files(workspace["id"].as_str().unwrap());
    assert!(files.join("a.txt").exists() && files.join("b.txt").exists());
    server.finish().await;
}
on_both_backends!(a_parent_waiting_on_its_subagents_leaves_them_room_to_work);
