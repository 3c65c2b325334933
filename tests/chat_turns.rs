//! Turns end to end: the worker, the model (a fake speaking the OpenAI streaming format), the
//! bundled plugins, streaming to clients, queueing and interrupting; on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm::{self, Script};
use support::read_stream;
use support::{Backend, TestServer};

fn text(t: &str) -> Value {
    json!({"content": [{"type": "text", "text": t}]})
}

async fn create_chat(server: &TestServer, token: &str, message: &str) -> String {
    let (status, chat) = server.post(token, "/api/v1/chats", text(message)).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    chat["id"].as_str().unwrap().to_string()
}

async fn messages(server: &TestServer, token: &str, chat: &str) -> Vec<Value> {
    let (_, body) = server.get(token, &format!("/api/v1/chats/{chat}/messages")).await;
    body["messages"].as_array().unwrap().clone()
}

fn texts(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            let text: String = m["content"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect();
            (m["role"].as_str().unwrap().to_string(), text)
        })
        .collect()
}

/// A chat made directly in the store (as a spawning chat or a dead worker's would be).
async fn stored_chat(
    store: &toolhost::store::Store,
    owner_id: String,
    parent: Option<String>,
    text: &str,
) -> toolhost::store::Chat {
    let kind = if parent.is_some() { toolhost::domain::ChatKind::Subagent } else { toolhost::domain::ChatKind::Root };
    let new = toolhost::store::NewChat {
        owner_id,
        root_chat_id: parent.clone(),
        parent_chat_id: parent,
        kind,
        workspace_id: None,
        title: text.into(),
        model: None,
        content: vec![toolhost::domain::parts::MessagePart::text(text)],
    };
    store.create_chat(new).await.unwrap().0
}

async fn a_turn_streams_the_answer_and_ends_waiting(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::slow_text("Hello there, how can I help?", Duration::from_millis(20))]);
    let chat = create_chat(&server, &token, "hi").await;
    let events = read_stream(&server, &token, &chat, None, |events| {
        events.iter().any(|e| e["type"] == "status" && e["status"] == "waiting")
    })
    .await;
    assert_eq!(events[0].1["type"], "status", "the snapshot starts with the status");
    assert!(events[0].0.is_none(), "snapshot state carries no event id");
    let streamed: String = events
        .iter()
        .filter(|(_, e)| e["type"] == "message_part")
        .map(|(_, e)| e["part"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, "Hello there, how can I help?");
    let ids: Vec<i64> = events.iter().filter_map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "event ids increase: {ids:?}");
    let final_message = events
        .iter()
        .find(|(_, e)| e["type"] == "message" && e["message"]["role"] == "assistant")
        .expect("the stored message is published");
    assert_eq!(final_message.1["message"]["content"][0]["text"], "Hello there, how can I help?");
    server.wait_for_status(&token, &chat, "waiting").await;
    assert_eq!(
        texts(&messages(&server, &token, &chat).await),
        vec![("user".into(), "hi".into()), ("assistant".into(), "Hello there, how can I help?".into())]
    );
    server.finish().await;
}
on_both_backends!(a_turn_streams_the_answer_and_ends_waiting);

async fn a_client_that_reconnects_gets_every_later_event_exactly_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::text("one two three")]);
    let chat = create_chat(&server, &token, "count").await;
    server.wait_for_status(&token, &chat, "waiting").await;
    let all = read_stream(&server, &token, &chat, Some(0), |events| {
        events.iter().filter(|e| e["type"] == "message").count() == 2
    })
    .await;
    let message_ids: Vec<i64> = all.iter().filter(|(_, e)| e["type"] == "message").map(|(id, _)| id.unwrap()).collect();
    assert_eq!(message_ids.len(), 2);
    // Reconnect after the user message: only the assistant message comes again, once.
    let later = read_stream(&server, &token, &chat, Some(message_ids[0]), |events| {
        events.iter().any(|e| e["type"] == "message")
    })
    .await;
    let replayed: Vec<&Value> = later.iter().filter(|(_, e)| e["type"] == "message").map(|(_, e)| e).collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["message"]["role"], "assistant");
    // Last-Event-ID works like `after`.
    let response = server
        .http
        .get(server.url(&format!("/api/v1/chats/{chat}/stream")))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("last-event-id", message_ids[1].to_string())
        .send()
        .await
        .unwrap();
    let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.event, "status");
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(
        next.is_err() || next.unwrap().map(|e| e.map(|e| e.event == "ping").unwrap_or(true)).unwrap_or(true),
        "nothing after the last event is replayed"
    );
    server.finish().await;
}
on_both_backends!(a_client_that_reconnects_gets_every_later_event_exactly_once);

async fn the_model_uses_the_files_plugin_in_parallel_tool_calls(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([
        fake_llm::tool_calls(&[
            ("call_w", "write_file", r#"{"path": "notes/todo.txt", "content": "ship it\n"}"#),
            ("call_r", "read_file", r#"{"path": "missing.txt"}"#),
            ("call_x", "no_such_tool", r#"{}"#),
            ("call_j", "read_file", r#"{"path": "#),
        ]),
        fake_llm::text("Wrote the note."),
    ]);
    server.require_sandbox();
    let workspace = server.ready_workspace(&token, "blank", json!({})).await;
    let (status, created) = server
        .post(
            &token,
            "/api/v1/chats",
            json!({"content": [{"type": "text", "text": "write a note"}], "workspace_id": workspace["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let chat = created["id"].as_str().unwrap().to_string();
    server.wait_for_status(&token, &chat, "waiting").await;
    let written = server.workspace_files(workspace["id"].as_str().unwrap()).join("notes/todo.txt");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "ship it\n");

    let all = messages(&server, &token, &chat).await;
    let roles: Vec<&str> = all.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    let calls = all[1]["content"].as_array().unwrap();
    assert_eq!(
        calls[0]["args"],
        json!({"path": "notes/todo.txt", "content": "ship it\n"}),
        "arguments split across chunks are joined"
    );
    let results = all[2]["content"].as_array().unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["tool_call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["call_w", "call_r", "call_x", "call_j"], "results are kept in call order");
    assert_eq!(results[0]["is_error"], false);
    assert!(results[1]["is_error"] == true && results[1]["result"].as_str().unwrap().contains("missing.txt"));
    assert!(
        results[2]["is_error"] == true
            && results[2]["result"].as_str().unwrap().contains("no tool named `no_such_tool`")
    );
    assert!(results[3]["is_error"] == true && results[3]["result"].as_str().unwrap().contains("not valid JSON"));

    let requests = server.llm.requests();
    assert_eq!(requests.len(), 2);
    let tools: Vec<&str> =
        requests[0]["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(tools.contains(&"read_file") && tools.contains(&"edit_files"), "{tools:?}");
    let tool_messages: Vec<&Value> =
        requests[1]["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_messages.len(), 4, "the model sees every result, errors included");
    assert_eq!(tool_messages[2]["tool_call_id"], "call_x");
    server.finish().await;
}
on_both_backends!(the_model_uses_the_files_plugin_in_parallel_tool_calls);

async fn a_failing_provider_leaves_an_error_that_the_next_message_clears(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([
        Script::Status(401, json!({"error": {"message": "Incorrect API key provided"}})),
        Script::Dropped(fake_llm::text_chunks("half an ans")[..2].to_vec()),
        fake_llm::text("Better now."),
    ]);
    let chat = create_chat(&server, &token, "hello").await;
    let failed = server.wait_for_status(&token, &chat, "error").await;
    let last_error = failed["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("provider `fake`")
            && last_error.contains("Incorrect API key")
            && last_error.contains("api_key"),
        "{failed}"
    );
    assert_eq!(server.llm.requests().len(), 1, "a refused key is not retried");

    let (status, sent) = server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("again")).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["queued"], false);
    let dropped = server.wait_for_status(&token, &chat, "error").await;
    assert!(dropped["last_error"].as_str().unwrap().contains("ended before"), "{dropped}");
    let kept = texts(&messages(&server, &token, &chat).await);
    assert_eq!(
        kept.last().unwrap(),
        &("assistant".to_string(), "half an ".to_string()),
        "streamed text is kept, once: {kept:?}"
    );
    assert_eq!(server.llm.requests().len(), 2, "a connection cut after output is not retried");

    server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("once more")).await;
    let recovered = server.wait_for_status(&token, &chat, "waiting").await;
    assert!(recovered["last_error"].is_null(), "{recovered}");
    server.finish().await;
}
on_both_backends!(a_failing_provider_leaves_an_error_that_the_next_message_clears);

async fn messages_sent_during_a_turn_are_queued_and_run_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([
        fake_llm::slow_text("first answer is slow", Duration::from_millis(300)),
        fake_llm::text("second answer"),
    ]);
    let chat = create_chat(&server, &token, "first").await;
    server.wait_for_status(&token, &chat, "running").await;
    let (status, sent) = server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("second")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sent["queued"], true);
    let (_, body) = server.get(&token, &format!("/api/v1/chats/{chat}/messages")).await;
    assert_eq!(body["queued_messages"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.wait_for_status(&token, &chat, "waiting").await;
    let order = texts(&messages(&server, &token, &chat).await);
    let expected: Vec<(String, String)> =
        [("user", "first"), ("assistant", "first answer is slow"), ("user", "second"), ("assistant", "second answer")]
            .iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect();
    if order != expected {
        // The queued message may start its turn between polls; wait for it to end.
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.wait_for_status(&token, &chat, "waiting").await;
        assert_eq!(texts(&messages(&server, &token, &chat).await), expected);
    }
    server.finish().await;
}
on_both_backends!(messages_sent_during_a_turn_are_queued_and_run_in_order);

async fn an_interrupt_keeps_what_was_streamed_and_leaves_the_chat_waiting(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::slow_text("a b c d e f g h i j k l m n o p", Duration::from_millis(100))]);
    let chat = create_chat(&server, &token, "talk slowly").await;
    read_stream(&server, &token, &chat, None, |events| {
        events.iter().filter(|e| e["type"] == "message_part").count() >= 3
    })
    .await;
    let (status, after) = server.post(&token, &format!("/api/v1/chats/{chat}/interrupt"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["status"], "waiting");
    // The worker stores the partial step.
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = texts(&messages(&server, &token, &chat).await);
        if kept.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[1].1.starts_with("a b c") && kept[1].1.len() < "a b c d e f g h i j k l m n o p".len(), "{kept:?}");
    server.finish().await;
}
on_both_backends!(an_interrupt_keeps_what_was_streamed_and_leaves_the_chat_waiting);

async fn sending_with_interrupt_stops_the_turn_and_runs_the_new_message_next(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([
        fake_llm::slow_text("a b c d e f g h i j k l m n o p", Duration::from_millis(100)),
        fake_llm::text("changed course"),
    ]);
    let chat = create_chat(&server, &token, "go").await;
    read_stream(&server, &token, &chat, None, |events| {
        events.iter().filter(|e| e["type"] == "message_part").count() >= 2
    })
    .await;
    let (_, sent) = server
        .post(
            &token,
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"content": [{"type": "text", "text": "stop, do this"}], "busy_behavior": "interrupt"}),
        )
        .await;
    assert_eq!(sent["queued"], true);
    let mut order = Vec::new();
    for _ in 0..200 {
        order = texts(&messages(&server, &token, &chat).await);
        if order.last().is_some_and(|(_, t)| t == "changed course") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let roles: Vec<&str> = order.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"], "{order:?}");
    assert_eq!(order[2].1, "stop, do this");
    server.wait_for_status(&token, &chat, "waiting").await;
    server.finish().await;
}
on_both_backends!(sending_with_interrupt_stops_the_turn_and_runs_the_new_message_next);

async fn a_full_queue_answers_429(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::slow_text("x y z", Duration::from_secs(2))]);
    let chat = create_chat(&server, &token, "busy").await;
    for _ in 0..20 {
        let (status, _) = server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("more")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("one too many")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "queue_full");
    server.finish().await;
}
on_both_backends!(a_full_queue_answers_429);

async fn a_chat_whose_worker_died_is_recovered_and_completed(backend: Backend) {
    // Before the server starts, a worker took the chat and died: it stays running, and its
    // heartbeat goes stale.
    let database = support::TestDatabase::create(backend).await;
    let store = toolhost::store::Store::open(&database.url).await.unwrap();
    let alice = store.create_user("alice", false).await.unwrap();
    let token = store.create_token(&alice, "test").await.unwrap();
    let chat = stored_chat(&store, alice.id.clone(), None, "still there?").await;
    assert!(store.acquire_chat("dead-worker", "node-1").await.unwrap().is_some());
    store.close().await;

    let settings =
        toolhost::chat::worker::WorkerSettings { stale_after: Duration::from_millis(400), ..support::test_settings() };
    let server = TestServer::start_on(database, settings).await;
    // The worker may recover it before a script could be queued: any answer will do.
    server.wait_for_status(&token, &chat.id, "waiting").await;
    let order = texts(&messages(&server, &token, &chat.id).await);
    assert_eq!(order.len(), 2, "{order:?}");
    assert_eq!(order[0], ("user".to_string(), "still there?".to_string()));
    assert_eq!(order[1].0, "assistant", "the recovered turn ran to its end: {order:?}");
    server.finish().await;
}
on_both_backends!(a_chat_whose_worker_died_is_recovered_and_completed);

async fn editing_a_user_message_drops_what_followed_and_runs_again(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::text("answer one"), fake_llm::text("answer two")]);
    let chat = create_chat(&server, &token, "first").await;
    server.wait_for_status(&token, &chat, "waiting").await;
    server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text("second")).await;
    let mut all = Vec::new();
    for _ in 0..200 {
        all = messages(&server, &token, &chat).await;
        if all.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all.len(), 4, "{all:?}; the chat: {:?}", server.get(&token, &format!("/api/v1/chats/{chat}")).await);
    server.wait_for_status(&token, &chat, "waiting").await;
    let first_id = all[0]["id"].as_i64().unwrap();
    let assistant_id = all[1]["id"].as_i64().unwrap();

    let patch = |id: i64, body: Value| {
        server
            .http
            .patch(server.url(&format!("/api/v1/chats/{chat}/messages/{id}")))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let not_user = patch(assistant_id, text("no")).await.unwrap();
    assert_eq!(not_user.status(), StatusCode::BAD_REQUEST);
    let unknown = patch(999_999, text("no")).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    server.llm.script([fake_llm::text("answer to the edit")]);
    let edited = patch(first_id, text("first, edited")).await.unwrap();
    assert_eq!(edited.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.wait_for_status(&token, &chat, "waiting").await;
    let expected: Vec<(String, String)> =
        vec![("user".into(), "first, edited".into()), ("assistant".into(), "answer to the edit".into())];
    assert_eq!(texts(&messages(&server, &token, &chat).await), expected);
    server.finish().await;
}
on_both_backends!(editing_a_user_message_drops_what_followed_and_runs_again);

async fn queued_messages_can_be_deleted_and_promoted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([
        fake_llm::slow_text("a b c d e f g h i j k l m n o p q r s t", Duration::from_millis(100)),
        fake_llm::text("for three"),
        fake_llm::text("for one"),
    ]);
    let chat = create_chat(&server, &token, "start").await;
    server.wait_for_status(&token, &chat, "running").await;
    let mut ids = Vec::new();
    for t in ["one", "two", "three"] {
        let (_, sent) = server.post(&token, &format!("/api/v1/chats/{chat}/messages"), text(t)).await;
        ids.push(sent["queued_message"]["id"].as_i64().unwrap());
    }
    let deleted = server
        .http
        .delete(server.url(&format!("/api/v1/chats/{chat}/queue/{}", ids[1])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = server
        .http
        .delete(server.url(&format!("/api/v1/chats/{chat}/queue/{}", ids[1])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let (status, _) = server.post(&token, &format!("/api/v1/chats/{chat}/queue/{}/promote", ids[2]), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let mut order = Vec::new();
    for _ in 0..200 {
        order = texts(&messages(&server, &token, &chat).await);
        if order.last().is_some_and(|(_, t)| t == "for one") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users: Vec<&str> = order.iter().filter(|(r, _)| r == "user").map(|(_, t)| t.as_str()).collect();
    assert_eq!(users, ["start", "three", "one"], "{order:?}");
    server.finish().await;
}
on_both_backends!(queued_messages_can_be_deleted_and_promoted);

async fn archiving_a_chat_archives_its_descendants(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::text("ok"), fake_llm::text("ok")]);
    let root = create_chat(&server, &token, "root").await;
    server.wait_for_status(&token, &root, "waiting").await;
    let owner = server.store.find_user("alice").await.unwrap().unwrap();
    let child = stored_chat(&server.store, owner.id, Some(root.clone()), "help").await;
    server.wait_for_status(&token, &child.id, "waiting").await;
    let archived = server
        .http
        .post(server.url(&format!("/api/v1/chats/{root}/archive")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(archived.status(), StatusCode::NO_CONTENT);
    let (_, active) = server.get(&token, "/api/v1/chats").await;
    assert_eq!(active["chats"], json!([]));
    let (_, shelved) = server.get(&token, "/api/v1/chats?archived=true").await;
    assert_eq!(shelved["chats"].as_array().unwrap().len(), 2, "the child is archived with its root");
    let restored = server
        .http
        .post(server.url(&format!("/api/v1/chats/{root}/unarchive")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::NO_CONTENT);
    let (_, active) = server.get(&token, "/api/v1/chats").await;
    assert_eq!(active["chats"].as_array().unwrap().len(), 2);
    server.finish().await;
}
on_both_backends!(archiving_a_chat_archives_its_descendants);

async fn only_the_owning_worker_can_heartbeat(backend: Backend) {
    let database = support::TestDatabase::create(backend).await;
    let store = toolhost::store::Store::open(&database.url).await.unwrap();
    let user = store.create_user("alice", false).await.unwrap();
    let chat = stored_chat(&store, user.id, None, "x").await;
    let taken = store.acquire_chat("w1", "node-1").await.unwrap().unwrap();
    assert_eq!(taken.id, chat.id);
    assert!(store.acquire_chat("w2", "node-1").await.unwrap().is_none(), "a running chat is not taken twice");
    assert!(!store.heartbeat(&chat.id, "w2").await.unwrap());
    assert!(store.heartbeat(&chat.id, "w1").await.unwrap());
    store.close().await;
    database.drop_database().await;
}
on_both_backends!(only_the_owning_worker_can_heartbeat);

async fn the_chat_stream_is_also_a_websocket(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::slow_text("over the socket", Duration::from_millis(30))]);
    let chat = create_chat(&server, &token, "ws").await;
    let url = format!("{}/api/v1/chats/{chat}/stream?after=0", server.base.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut events: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let event: Value = serde_json::from_str(&text).unwrap();
            let done = event["type"] == "message" && event["message"]["role"] == "assistant";
            events.push(event);
            if done {
                break;
            }
        }
    }
    assert_eq!(events[0]["type"], "status");
    let streamed: String = events
        .iter()
        .filter(|e| e["type"] == "message_part")
        .map(|e| e["part"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, "over the socket");
    let seqs: Vec<i64> = events.iter().skip(1).map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    server.finish().await;
}
on_both_backends!(the_chat_stream_is_also_a_websocket);

async fn the_watch_stream_tells_a_user_about_their_chats_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", false).await;
    server.llm.script([fake_llm::text("hi bob"), fake_llm::text("hi alice")]);
    let response = server
        .http
        .get(server.url("/api/v1/chats/watch"))
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut watch = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    create_chat(&server, &bob, "bob's chat").await;
    let chat = create_chat(&server, &alice, "alice's chat").await;
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, watch.next()).await {
        if event.event == "ping" || event.data == "ping" {
            continue;
        }
        let value: Value = serde_json::from_str(&event.data).unwrap();
        let done = value["type"] == "status_change" && value["chat"]["status"] == "waiting";
        seen.push(value);
        if done {
            break;
        }
    }
    assert!(seen.iter().all(|e| e["chat"]["id"] == chat.as_str()), "only alice's chat: {seen:?}");
    assert_eq!(seen[0]["type"], "created");
    assert!(seen.iter().any(|e| e["type"] == "status_change" && e["chat"]["status"] == "running"));
    assert_eq!(seen.last().unwrap()["chat"]["status"], "waiting");
    server.finish().await;
}
on_both_backends!(the_watch_stream_tells_a_user_about_their_chats_only);

async fn a_shutdown_gives_running_chats_back_to_pending_without_an_error(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    server.llm.script([fake_llm::slow_text("a b c d e f g h i j k l m n o p", Duration::from_millis(200))]);
    let chat = create_chat(&server, &token, "long task").await;
    server.wait_for_status(&token, &chat, "running").await;
    server.stop_worker().await;
    let (_, after) = server.get(&token, &format!("/api/v1/chats/{chat}")).await;
    assert_eq!(after["status"], "pending", "another worker (or the next start) resumes it: {after}");
    assert!(after["last_error"].is_null());
    let kept = messages(&server, &token, &chat).await;
    assert_eq!(kept.len(), 1, "the unfinished step is not stored; the turn runs again from the last stored step");
    server.finish().await;
}
on_both_backends!(a_shutdown_gives_running_chats_back_to_pending_without_an_error);

async fn a_provider_that_goes_silent_is_given_up_on_and_retried(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.user("alice", false).await;
    // The test provider gives up after 2 s of silence; this one pauses 5 s before its first word.
    server.llm.script([fake_llm::slow_text("too slow", Duration::from_secs(5)), fake_llm::text("fine")]);
    let chat = create_chat(&server, &token, "hello?").await;
    let done = server.wait_for_status(&token, &chat, "waiting").await;
    assert!(done["last_error"].is_null(), "{done}");
    let kept = texts(&messages(&server, &token, &chat).await);
    assert_eq!(kept.last().unwrap(), &("assistant".to_string(), "fine".to_string()), "{kept:?}");
    assert_eq!(server.llm.requests().len(), 2);
    server.finish().await;
}
on_both_backends!(a_provider_that_goes_silent_is_given_up_on_and_retried);
