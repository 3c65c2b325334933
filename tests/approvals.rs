//! Approvals: tool calls the policy's `require_approval` holds until the chat's owner answers.
//! With the fake model, on SQLite and on PostgreSQL: a call pauses its step; approve once runs
//! it; approve for this chat runs the next call without asking; a denial gives the model the
//! reason; a restart keeps the request pending; a timeout denies; another member cannot answer;
//! and, with replicas, the answer comes through the replica that is not running the chat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "support/client.rs"]
mod client;
mod support;

use std::time::Duration;

use client::Collector;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm;
use support::{Backend, TestServer};

/// The default policy, with members' calls of `list_templates` waiting for their approval.
fn members_approve_template_listings() -> String {
    format!(
        "{}\n@id(\"members-approve-template-listings\")\npermit (principal, action == Action::\"require_approval\", resource)\nwhen {{ principal.owner_role == \"member\" && resource.name == \"list_templates\" }};\n",
        toolhost::policy::DEFAULT_POLICY
    )
}

async fn put_policy(server: &TestServer, admin: &str, policy: &str) {
    let response =
        server.http.put(server.url("/api/v1/policy")).bearer_auth(admin).json(&json!({"policy": policy})).send().await;
    let response = response.unwrap();
    let status = response.status();
    assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap());
}

/// Waits (up to 20 s) until the chat has `count` calls waiting for approval; returns them.
async fn waiting(server: &TestServer, token: &str, chat: &str, count: usize) -> Vec<Value> {
    for _ in 0..400 {
        let (status, list) = server.get(token, &format!("/api/v1/chats/{chat}/approvals")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let approvals = list["approvals"].as_array().unwrap().clone();
        if approvals.len() == count {
            return approvals;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chat {chat} never had {count} calls waiting for approval");
}

async fn answer(server: &TestServer, token: &str, chat: &str, approval: &Value, body: Value) -> (StatusCode, Value) {
    server.post(token, &format!("/api/v1/chats/{chat}/approvals/{}", approval["id"].as_str().unwrap()), body).await
}

/// The result the model got for each call id of the chat: (result text, is_error).
async fn results_by_call(server: &TestServer, chat: &str) -> std::collections::BTreeMap<String, (String, bool)> {
    let messages = server.store.messages(chat, 0).await.unwrap();
    messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|part| match part {
            toolhost::domain::parts::MessagePart::ToolResult { tool_call_id, result, is_error, .. } => {
                Some((tool_call_id.clone(), (result.as_str().unwrap_or_default().to_string(), *is_error)))
            }
            _ => None,
        })
        .collect()
}

/// A call that ran: `list_templates` lists the templates (the bundled ones include `empty`).
fn ran(result: &(String, bool)) -> bool {
    !result.1 && result.0.contains("\"templates\"")
}

async fn a_call_waits_for_its_owner_who_approves_once_or_for_the_chat_or_denies_with_a_reason(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;
    put_policy(&server, &admin, &members_approve_template_listings()).await;

    // Explain says which calls wait, and which rule asks.
    let (status, explained) =
        server.post(&admin, "/api/v1/policy/explain", json!({"kind": "root", "owner_role": "member"})).await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    let listing = explained["tools"].as_array().unwrap().iter().find(|t| t["tool"] == "list_templates").unwrap();
    assert_eq!(listing["needs_approval"], true, "{listing}");
    assert_eq!(listing["approval_decided_by"], "members-approve-template-listings");
    let reading = explained["tools"].as_array().unwrap().iter().find(|t| t["tool"] == "read_template").unwrap();
    assert_eq!(reading["needs_approval"], false, "{reading}");

    // Two calls of one step are asked together, in one request on the chat's stream.
    server.llm.script([
        fake_llm::tool_calls(&[("a1", "list_templates", "{}"), ("a2", "list_templates", r#"{"why": 2}"#)]),
        fake_llm::text("One listed, one refused."),
    ]);
    let chat = client::create_chat(&server.base, &alice, "list the templates twice").await;
    let stream = Collector::sse(&server.base, &alice, &chat, None).await;
    let asked = waiting(&server, &alice, &chat, 2).await;
    assert_eq!(asked[0]["tool"], "list_templates");
    assert_eq!(asked[0]["rule"], "members-approve-template-listings");
    assert_eq!(asked[0]["status"], "pending");
    assert!(asked[0]["deadline_at"].as_i64().unwrap() > asked[0]["created_at"].as_i64().unwrap());
    let requests =
        stream.until(Duration::from_secs(10), |events| events.iter().any(|e| e.kind() == "approval_request")).await;
    let request = requests.iter().find(|e| e.kind() == "approval_request").unwrap();
    assert_eq!(request.event["approvals"].as_array().unwrap().len(), 2, "asked together: {}", request.event);
    let by_call = |id: &str| asked.iter().find(|a| a["tool_call_id"] == id).unwrap().clone();
    assert_eq!(by_call("a2")["arguments"], json!({"why": 2}));
    // The step waits: the model is not called again, and the chat is still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.llm.requests().len(), 1);
    assert_eq!(client::chat_state(&server.base, &alice, &chat).await["status"], "running");
    // Everyone's own pending list has them; nobody else's.
    let (_, mine) = server.get(&alice, "/api/v1/approvals").await;
    assert_eq!(mine["approvals"].as_array().unwrap().len(), 2, "{mine}");
    let (_, theirs) = server.get(&bob, "/api/v1/approvals").await;
    assert_eq!(theirs["approvals"].as_array().unwrap().len(), 0, "{theirs}");

    // Another member cannot answer, nor see, alice's request.
    let (status, refused) = answer(&server, &bob, &chat, &by_call("a1"), json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    assert_eq!(refused["error"]["code"], "not_found");
    let (status, _) = server.get(&bob, &format!("/api/v1/chats/{chat}/approvals")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A malformed answer says what to send.
    let (status, bad) = answer(&server, &alice, &chat, &by_call("a1"), json!({"decision": "maybe"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("approve_once"), "{bad}");
    assert_eq!(waiting(&server, &alice, &chat, 2).await.len(), 2, "still both waiting");

    // Approve one once; the step still waits for the other.
    let (status, approved) = answer(&server, &alice, &chat, &by_call("a1"), json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!((approved["status"].as_str(), approved["scope"].as_str()), (Some("approved"), Some("once")));
    waiting(&server, &alice, &chat, 1).await;
    assert_eq!(server.llm.requests().len(), 1, "the step waits for every call it asked about");
    let (status, denied) = answer(
        &server,
        &alice,
        &chat,
        &by_call("a2"),
        json!({"decision": "deny", "reason": "not the second time, the first list is enough"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    assert_eq!(denied["status"], "denied");
    server.finished(&chat).await;
    let results = results_by_call(&server, &chat).await;
    assert!(ran(&results["a1"]), "approved once, it ran: {:?}", results["a1"]);
    assert!(results["a2"].1, "denied, it did not run: {:?}", results["a2"]);
    assert!(
        results["a2"].0.contains("not the second time, the first list is enough"),
        "the model reads why: {:?}",
        results["a2"]
    );
    // Answered twice: a conflict, and nothing changes.
    let (status, again) = answer(&server, &alice, &chat, &by_call("a2"), json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "already_answered");
    let answered = stream
        .until(Duration::from_secs(10), |events| events.iter().filter(|e| e.kind() == "approval_answered").count() >= 2)
        .await;
    assert!(answered.iter().any(|e| e.kind() == "approval_answered"
        && e.event["approvals"][0]["status"] == "denied"
        && e.event["approvals"][0]["reason"] == "not the second time, the first list is enough"));

    // Approved for the chat: the next call of the tool in this chat runs without asking.
    server.llm.script([
        fake_llm::tool_calls(&[("b1", "list_templates", "{}")]),
        fake_llm::tool_calls(&[("b2", "list_templates", "{}")]),
        fake_llm::text("Listed twice."),
    ]);
    let (status, sent) = server
        .post(
            &alice,
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"content": [{"type": "text", "text": "again, twice"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let asked = waiting(&server, &alice, &chat, 1).await;
    assert_eq!(asked[0]["tool_call_id"], "b1");
    let (status, approved) = answer(&server, &alice, &chat, &asked[0], json!({"decision": "approve_for_chat"})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["scope"], "chat");
    server.finished(&chat).await;
    let results = results_by_call(&server, &chat).await;
    assert!(ran(&results["b1"]) && ran(&results["b2"]), "{results:?}");
    assert!(server.store.approval_of_call(&chat, "b2").await.unwrap().is_none(), "b2 was never asked about");

    // The remembered approval is this chat's: a new chat asks again.
    server.llm.script([fake_llm::tool_calls(&[("c1", "list_templates", "{}")]), fake_llm::text("Listed.")]);
    let other = client::create_chat(&server.base, &alice, "list them here").await;
    let asked = waiting(&server, &alice, &other, 1).await;
    answer(&server, &alice, &other, &asked[0], json!({"decision": "approve_once"})).await;
    server.finished(&other).await;
    // Admins' chats are not held (the rule names members).
    server.llm.script([fake_llm::tool_calls(&[("d1", "list_templates", "{}")]), fake_llm::text("Listed.")]);
    let admins = client::create_chat(&server.base, &admin, "list them").await;
    server.finished(&admins).await;
    assert!(ran(&results_by_call(&server, &admins).await["d1"]));
    stream.cut();
}
on_both_backends!(a_call_waits_for_its_owner_who_approves_once_or_for_the_chat_or_denies_with_a_reason);

async fn a_pending_approval_survives_a_restart_and_is_answered_after_it(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    put_policy(&server, &admin, &members_approve_template_listings()).await;
    server.llm.script([fake_llm::tool_calls(&[("r1", "list_templates", "{}")]), fake_llm::text("Listed.")]);
    let chat = client::create_chat(&server.base, &alice, "list the templates").await;
    let before = waiting(&server, &alice, &chat, 1).await;

    server.restart_worker().await;
    // The new worker runs the step again, finds the call still waiting (the same approval,
    // with its first deadline), and does not call the model again.
    server.wait_for_status(&alice, &chat, "running").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = waiting(&server, &alice, &chat, 1).await;
    assert_eq!((&after[0]["id"], &after[0]["deadline_at"]), (&before[0]["id"], &before[0]["deadline_at"]));
    assert_eq!(server.llm.requests().len(), 1, "the model is not asked again");
    // A client connecting now is shown what waits.
    let stream = Collector::sse(&server.base, &alice, &chat, None).await;
    let shown =
        stream.until(Duration::from_secs(10), |events| events.iter().any(|e| e.kind() == "approval_request")).await;
    let request = shown.iter().find(|e| e.kind() == "approval_request").unwrap();
    assert_eq!(request.event["approvals"][0]["id"], before[0]["id"]);

    let (status, approved) = answer(&server, &alice, &chat, &after[0], json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    server.finished(&chat).await;
    let results = results_by_call(&server, &chat).await;
    assert_eq!(results.len(), 1, "one result, not a cut-off one besides: {results:?}");
    assert!(ran(&results["r1"]), "{results:?}");
    stream.cut();
}
on_both_backends!(a_pending_approval_survives_a_restart_and_is_answered_after_it);

async fn an_unanswered_call_is_denied_at_its_deadline_and_an_interrupt_cancels_the_wait(backend: Backend) {
    let settings =
        toolhost::chat::worker::WorkerSettings { approval_timeout: Duration::from_secs(1), ..support::test_settings() };
    let server = TestServer::start_with(backend, settings).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    put_policy(&server, &admin, &members_approve_template_listings()).await;
    server.llm.script([fake_llm::tool_calls(&[("t1", "list_templates", "{}")]), fake_llm::text("Nobody answered.")]);
    let chat = client::create_chat(&server.base, &alice, "list the templates").await;
    server.finished(&chat).await;
    let results = results_by_call(&server, &chat).await;
    assert!(results["t1"].1 && results["t1"].0.contains("nobody approved this call"), "{results:?}");
    assert!(results["t1"].0.contains("1 second"), "{results:?}");
    let expired = server.store.approval_of_call(&chat, "t1").await.unwrap().unwrap();
    assert_eq!(expired.status, toolhost::store::ApprovalStatus::Expired);

    // Interrupted while it waits: the call is cancelled, never run, and its answer is refused.
    let settings = toolhost::chat::worker::WorkerSettings {
        approval_timeout: Duration::from_secs(60),
        ..support::test_settings()
    };
    let server = TestServer::start_with(backend, settings).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    put_policy(&server, &admin, &members_approve_template_listings()).await;
    server.llm.script([fake_llm::tool_calls(&[("i1", "list_templates", "{}")])]);
    let chat = client::create_chat(&server.base, &alice, "list the templates").await;
    let asked = waiting(&server, &alice, &chat, 1).await;
    let (status, _) = server.post(&alice, &format!("/api/v1/chats/{chat}/interrupt"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.finished(&chat).await;
    waiting(&server, &alice, &chat, 0).await;
    let (status, late) = answer(&server, &alice, &chat, &asked[0], json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
    assert!(late["error"]["message"].as_str().unwrap().contains("cancelled"), "{late}");
    // The interrupt settles the chat at once; the run stores the call's result as it stops.
    let mut results = results_by_call(&server, &chat).await;
    for _ in 0..200 {
        if results.contains_key("i1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        results = results_by_call(&server, &chat).await;
    }
    assert!(results["i1"].1 && results["i1"].0.contains("interrupted"), "{results:?}");
}
on_both_backends!(an_unanswered_call_is_denied_at_its_deadline_and_an_interrupt_cancels_the_wait);

/// Reads a user's watch stream until an `approval_request` arrives; returns it.
async fn watched_request(server: &TestServer, token: &str) -> tokio::task::JoinHandle<Value> {
    let response = server.http.get(server.url("/api/v1/chats/watch")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tokio::spawn(async move {
        let mut events = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
        while let Some(Ok(event)) = events.next().await {
            let value: Value = serde_json::from_str(&event.data).unwrap_or_default();
            if value["type"] == "approval_request" {
                return value;
            }
        }
        panic!("the watch stream ended without an approval request");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_reaches_the_owner_on_every_replica_and_is_answered_through_the_one_not_running_the_chat() {
    let first = TestServer::builder().relayed().start().await;
    let second = TestServer::builder().replica_of(&first).start().await;
    let admin = first.user("root", true).await;
    let alice = first.user("alice", false).await;
    put_policy(&first, &admin, &members_approve_template_listings()).await;
    let watched_on_second = watched_request(&second, &alice).await;
    first.llm.script([fake_llm::tool_calls(&[("x1", "list_templates", "{}")]), fake_llm::text("Listed.")]);
    let chat = client::create_chat(&first.base, &alice, "list the templates").await;
    let asked = waiting(&first, &alice, &chat, 1).await;
    let watched = tokio::time::timeout(Duration::from_secs(15), watched_on_second).await.unwrap().unwrap();
    assert_eq!(watched["chat"]["id"], chat.as_str(), "{watched}");
    assert_eq!(watched["approvals"][0]["id"], asked[0]["id"], "{watched}");

    // Answered on the replica that is not running the chat.
    let runner = first.store.chat(&chat).await.unwrap().unwrap().worker_id.unwrap();
    let elsewhere = if runner == first.worker_id { &second } else { &first };
    let stream = Collector::sse(&elsewhere.base, &alice, &chat, None).await;
    let (status, approved) = answer(elsewhere, &alice, &chat, &asked[0], json!({"decision": "approve_once"})).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    first.finished(&chat).await;
    assert!(ran(&results_by_call(&first, &chat).await["x1"]));
    let seen = stream.until(Duration::from_secs(10), client::assistant_message).await;
    assert!(
        seen.iter().any(|e| e.kind() == "approval_answered"),
        "{:?}",
        seen.iter().map(|e| e.kind().to_string()).collect::<Vec<_>>()
    );
    stream.cut();
}
