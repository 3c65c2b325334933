//! Several real `toolhost serve` processes on one PostgreSQL database, each with its own data
//! directory (as on separate machines) and the deployment's shared secret key, driven through
//! HTTP with the fake model: a person sees and does everything through any replica as on one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "support/client.rs"]
mod client;
#[path = "support/process.rs"]
mod process;
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use client::{Collector, Received, assert_exactly_once, assistant_message, create_chat, messages, parts, shown};
use serde_json::json;
use support::fake_llm::{self, FakeLlm};
use support::rfb::Viewer;
use support::{Backend, TestDatabase};
use tempfile::TempDir;
use toolhost::store::{ChatStatus, Store};

/// The key every replica of a test deployment shares (base64 of 32 bytes).
const SECRET_KEY: &str = "dGhlIHJlcGxpY2FzIG9mIG9uZSBkZXBsb3ltZW50ISE=";

/// Replicas of one deployment: one database, a data directory each.
struct Cluster {
    database: TestDatabase,
    dirs: Vec<TempDir>,
    deployments: Vec<process::Deployment>,
    store: Store,
    token: String,
}

impl Cluster {
    async fn new(replicas: usize) -> Cluster {
        let database = TestDatabase::create(Backend::Postgres).await;
        let dirs: Vec<TempDir> = (0..replicas).map(|_| tempfile::tempdir().unwrap()).collect();
        let deployments: Vec<process::Deployment> = dirs
            .iter()
            .map(|dir| {
                let config = dir.path().join("toolhost.toml");
                std::fs::write(&config, "[replicas]\nstale_after_secs = 20\nheartbeat_secs = 2\n").unwrap();
                process::Deployment {
                    data_dir: dir.path().to_path_buf(),
                    database_url: Some(database.url.clone()),
                    config_file: Some(config),
                }
            })
            .collect();
        let token = deployments[0].user_token("alice");
        let store = Store::open(&database.url).await.unwrap();
        Cluster { database, dirs, deployments, store, token }
    }

    fn serve(&self, replica: usize, llm: &FakeLlm) -> process::Served {
        self.deployments[replica].serve(&llm.base_url, &[("TOOLHOST_SECRET_KEY", SECRET_KEY)])
    }

    /// Starts replica A, a chat with `text` that A runs (it is alone), then replica B: A's id
    /// and the chat's.
    async fn run_on_a_then_start_b(
        &self,
        llm: &FakeLlm,
        text: &str,
    ) -> (process::Served, String, process::Served, String) {
        let a = self.serve(0, llm);
        let a_id = self.only_replica().await;
        let chat = create_chat(&a.base, &self.token, text).await;
        assert_eq!(self.running(&chat, Duration::from_secs(20)).await, a_id);
        let b = self.serve(1, llm);
        (a, a_id, b, chat)
    }

    /// The worker id of the only replica registered now.
    async fn only_replica(&self) -> String {
        let replicas = self.store.replicas().await.unwrap();
        assert_eq!(replicas.len(), 1, "{replicas:?}");
        replicas[0].id.clone()
    }

    /// Waits until the chat runs (on any replica); returns the worker running it.
    async fn running(&self, chat: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.store.chat(chat).await.unwrap().unwrap();
            if state.status == ChatStatus::Running
                && let Some(worker) = state.worker_id
            {
                return worker;
            }
            assert!(Instant::now() < deadline, "the chat never ran: {state:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) {
        self.store.close().await;
        drop(self.dirs);
        self.database.drop_database().await;
    }
}

/// `count` words, each its own streamed part.
fn words(count: usize) -> String {
    (0..count).map(|i| format!("word{i} ")).collect()
}

/// The text of the message parts received, in order.
fn streamed_text(events: &[Received]) -> String {
    events
        .iter()
        .filter(|e| e.kind() == "message_part")
        .map(|e| e.event["part"]["text"].as_str().unwrap_or_default())
        .collect()
}

fn last_status(events: &[Received]) -> Option<String> {
    events.iter().rev().find(|e| e.kind() == "status").map(|e| e.event["status"].as_str().unwrap().to_string())
}

fn ended_waiting(events: &[Received]) -> bool {
    assistant_message(events) && last_status(events).as_deref() == Some("waiting")
}

async fn post(base: &str, token: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response =
        reqwest::Client::new().post(format!("{base}{path}")).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// A chat A runs, streamed through B from the first part to the last: B's subscribers (SSE
/// and WebSocket) get every part exactly once and in order, the first snapshot holds what A had
/// streamed before they came, and what they assemble is exactly what A stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_parts_of_a_chat_run_on_one_replica_reach_another_replicas_subscribers_exactly() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    let answer = words(80);
    llm.script([fake_llm::slow_text(&answer, Duration::from_millis(40))]);
    let (a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "stream a long answer").await;

    let over_sse = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    let over_websocket = Collector::websocket(&b.base, &cluster.token, &chat).await;
    let sse_events = over_sse.until(Duration::from_secs(60), ended_waiting).await;
    let websocket_events = over_websocket.until(Duration::from_secs(60), ended_waiting).await;

    let stored = messages(&a.base, &cluster.token, &chat).await;
    let stored_text = stored[1]["content"][0]["text"].as_str().unwrap();
    assert_eq!(stored_text, answer, "the fake model's answer was stored whole");
    for (transport, events) in [("SSE", &sse_events), ("WebSocket", &websocket_events)] {
        assert_exactly_once(&[], events, 0);
        assert!(parts(events) >= 40, "{transport}: B's subscriber saw A's live parts: {}", parts(events));
        assert_eq!(streamed_text(events), stored_text, "{transport}: the parts are the stored text");
        assert_eq!(shown(events), ["stream a long answer", stored_text], "{transport}");
    }
    drop((a, b));
    cluster.finish().await;
}

/// A client cut off from B resumes on A with the last `seq` it saw, and the other way round:
/// numbers are the chat's, not a replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_on_one_replica_resumes_on_another_exactly_once() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    let answer = words(60);
    llm.script([fake_llm::slow_text(&answer, Duration::from_millis(60))]);
    let (a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "resume me elsewhere").await;

    let first = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    let before = first.until(Duration::from_secs(30), |events| parts(events) >= 10).await;
    first.cut();
    let cursor = before.iter().filter_map(|e| e.id).max().unwrap();
    let resumed = Collector::sse(&a.base, &cluster.token, &chat, Some(cursor)).await;
    let after = resumed.until(Duration::from_secs(60), ended_waiting).await;
    assert_exactly_once(&before, &after, cursor);
    let mut all = before.clone();
    all.extend(after);
    assert_eq!(shown(&all), ["resume me elsewhere", answer.as_str()]);
    drop((a, b));
    cluster.finish().await;
}

/// An interrupt sent to B stops the turn A runs at once (not at A's next heartbeat): A stores
/// what it streamed, and subscribers on both replicas see the chat waiting with that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_through_another_replica_stops_the_turn_at_once() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    llm.script([fake_llm::slow_text(&words(200), Duration::from_millis(100))]);
    let (a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "go on for a while").await;
    let on_a = Collector::sse(&a.base, &cluster.token, &chat, None).await;
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), |events| parts(events) >= 5).await;

    let sent = Instant::now();
    let (status, body) = post(&b.base, &cluster.token, &format!("/api/v1/chats/{chat}/interrupt"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    for (replica, stream) in [("A", &on_a), ("B", &on_b)] {
        stream.until(Duration::from_secs(10), ended_waiting).await;
        eprintln!("interrupt through B: the partial answer reached {replica}'s subscriber after {:?}", sent.elapsed());
    }
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the turn stopped without waiting for A's heartbeat (10 s): {:?}",
        sent.elapsed()
    );
    let stored = messages(&b.base, &cluster.token, &chat).await;
    assert_eq!(stored.len(), 2, "the partial answer is stored once: {stored:#?}");
    let state = cluster.store.chat(&chat).await.unwrap().unwrap();
    assert_eq!((state.status, state.worker_id), (ChatStatus::Waiting, None));
    // Nothing streams after the interrupt.
    let parts_then = parts(&on_b.events());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(parts(&on_b.events()), parts_then);
    drop((a, b));
    cluster.finish().await;
}

/// A message queued through B while A runs the turn: B's subscriber keeps seeing A's parts
/// after the queue changed, and A runs the queued message next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_through_another_replica_runs_next_and_the_parts_keep_flowing() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    let first_answer = words(50);
    llm.script([fake_llm::slow_text(&first_answer, Duration::from_millis(60)), fake_llm::text("The second answer.")]);
    let (a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "first question").await;
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), |events| parts(events) >= 5).await;

    let body = json!({"content": [{"type": "text", "text": "second question"}]});
    let (status, sent) = post(&b.base, &cluster.token, &format!("/api/v1/chats/{chat}/messages"), body).await;
    assert_eq!((status, sent["queued"].as_bool()), (200, Some(true)), "{sent}");
    let events = on_b
        .until(Duration::from_secs(60), |events| {
            events.iter().filter(|e| e.kind() == "message" && e.event["message"]["role"] == "assistant").count() == 2
                && last_status(events).as_deref() == Some("waiting")
        })
        .await;
    assert_exactly_once(&[], &events, 0);
    let queued_at = events
        .iter()
        .position(|e| e.kind() == "queue_update" && !e.event["queued_messages"].as_array().unwrap().is_empty())
        .unwrap_or_else(|| panic!("B's subscriber saw the queue change: {events:#?}"));
    let first_stored = events.iter().position(|e| e.kind() == "message" && e.event["message"]["role"] == "assistant");
    assert!(
        events[queued_at..first_stored.unwrap()].iter().any(|e| e.kind() == "message_part"),
        "A's parts kept reaching B's subscriber after the queue changed"
    );
    assert_eq!(shown(&events), ["first question", first_answer.as_str(), "second question", "The second answer."]);
    drop((a, b));
    cluster.finish().await;
}

/// SIGKILL of the replica running a turn: the other replica takes the chat once the dead
/// one's database session is gone, its subscribers see the cut-off parts dropped and the turn
/// run again on the same connection, and nothing stored is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_running_replica_resumes_the_chat_on_another_within_the_stale_window() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    llm.script([
        fake_llm::slow_text(&words(200), Duration::from_millis(100)),
        fake_llm::text("Resumed on the other replica."),
    ]);
    let (mut a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "survive a crash").await;
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), |events| parts(events) >= 5).await;

    a.kill();
    let killed = Instant::now();
    let events = on_b.until(Duration::from_secs(40), ended_waiting).await;
    let took = killed.elapsed();
    eprintln!("SIGKILL: the chat was finished by the other replica {took:?} after the kill");
    assert!(took < Duration::from_secs(20), "taken over within the stale window (20 s here): {took:?}");
    assert!(events.iter().any(|e| e.kind() == "discard"), "the cut-off parts were dropped");
    assert_eq!(shown(&events), ["survive a crash", "Resumed on the other replica."]);
    assert_exactly_once(&[], &events, 0);
    let stored = messages(&b.base, &cluster.token, &chat).await;
    assert_eq!(stored.len(), 2, "{stored:#?}");
    drop(b);
    cluster.finish().await;
}

/// SIGTERM of the replica running a turn: the chat goes back to pending at once and the other
/// replica takes it straight away (told by a notice, not at its next poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_running_replica_hands_the_chat_to_another_at_once() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    llm.script([
        fake_llm::slow_text(&words(200), Duration::from_millis(100)),
        fake_llm::text("Finished by the other replica."),
    ]);
    let (mut a, a_id, b, chat) = cluster.run_on_a_then_start_b(&llm, "hand me over").await;
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), |events| parts(events) >= 3).await;

    a.terminate();
    let terminated = Instant::now();
    let deadline = terminated + Duration::from_secs(10);
    let taken_by = loop {
        let state = cluster.store.chat(&chat).await.unwrap().unwrap();
        if let Some(worker) = state.worker_id.clone().filter(|w| *w != a_id) {
            break worker;
        }
        assert!(Instant::now() < deadline, "nobody took the chat: {state:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = terminated.elapsed();
    eprintln!("SIGTERM: the other replica took the chat {took:?} after the signal");
    assert_ne!(taken_by, a_id);
    assert!(took < Duration::from_secs(3), "taken at once, not at the next poll or stale check: {took:?}");
    let events = on_b.until(Duration::from_secs(30), ended_waiting).await;
    assert_eq!(shown(&events), ["hand me over", "Finished by the other replica."]);
    a.wait_exit(Duration::from_secs(30)).expect("A exits");
    drop(b);
    cluster.finish().await;
}

/// The connections that carry notices are cut (`pg_terminate_backend`) mid-turn and again
/// just before the next message: the replicas reconnect and catch up from the tables, so B's
/// subscriber, on one connection throughout, misses nothing of either turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_notice_connections_loses_nothing() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    // Long enough to be under way once B has started (it compiles the bundled plugins first).
    let answer = words(150);
    llm.script([fake_llm::slow_text(&answer, Duration::from_millis(60)), fake_llm::text("The second answer.")]);
    let (a, _, b, chat) = cluster.run_on_a_then_start_b(&llm, "first question").await;
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), |events| parts(events) >= 3).await;

    let admin = sqlx::PgPool::connect(&cluster.database.url).await.unwrap();
    let cut = || async {
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name IN ('toolhost-listen', 'toolhost-notify') AND datname = current_database()",
        )
        .fetch_all(&admin)
        .await
        .unwrap();
        rows.len()
    };
    assert!(cut().await >= 2, "both replicas listen on a connection of their own");
    on_b.until(Duration::from_secs(30), ended_waiting).await;
    cut().await;
    let body = json!({"content": [{"type": "text", "text": "second question"}]});
    let (status, sent) = post(&a.base, &cluster.token, &format!("/api/v1/chats/{chat}/messages"), body).await;
    assert_eq!(status, 200, "{sent}");
    let events = on_b
        .until(Duration::from_secs(30), |events| {
            events.iter().filter(|e| e.kind() == "message" && e.event["message"]["role"] == "assistant").count() == 2
        })
        .await;
    assert_exactly_once(&[], &events, 0);
    assert_eq!(shown(&events), ["first question", answer.as_str(), "second question", "The second answer."]);
    admin.close().await;
    drop((a, b));
    cluster.finish().await;
}

/// Three replicas racing for forty chats created through all of them: each chat runs exactly
/// once (one model call, one answer), whoever takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_pending_chats_never_run_one_twice() {
    let cluster = Cluster::new(3).await;
    let llm = FakeLlm::start().await;
    let servers: Vec<process::Served> = (0..3).map(|i| cluster.serve(i, &llm)).collect();
    let mut chats = Vec::new();
    for i in 0..40 {
        chats.push(create_chat(&servers[i % 3].base, &cluster.token, &format!("race {i}")).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for chat in &chats {
        loop {
            let state = cluster.store.chat(chat).await.unwrap().unwrap();
            if state.status == ChatStatus::Waiting {
                break;
            }
            assert!(Instant::now() < deadline, "chat {chat} never finished: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for chat in &chats {
        let stored = cluster.store.messages(chat, 0).await.unwrap();
        assert_eq!(stored.len(), 2, "one answer per chat: {stored:#?}");
    }
    let prompts: Vec<String> = llm
        .requests()
        .iter()
        .map(|request| request["messages"].as_array().unwrap().last().unwrap()["content"].to_string())
        .collect();
    assert_eq!(prompts.len(), 40, "one model call per chat");
    assert_eq!(prompts.iter().collect::<HashSet<_>>().len(), 40, "no chat was run twice");
    drop(servers);
    cluster.finish().await;
}

/// A relay call must carry a fresh signature of its own path by the deployment's relay secret:
/// without one, with a user's token, with a forged, replayed-elsewhere or stale one, it is
/// refused; the secret itself never travels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_endpoints_refuse_callers_without_a_fresh_signature_of_the_deployment() {
    let cluster = Cluster::new(1).await;
    let llm = FakeLlm::start().await;
    let a = cluster.serve(0, &llm);
    let chat = create_chat(&a.base, &cluster.token, "hello").await;
    let other = create_chat(&a.base, &cluster.token, "another").await;
    let path = format!("/internal/v1/chats/{chat}/stream");
    let url = a.url(&path);
    let client = reqwest::Client::new();
    let header = toolhost::relay::RELAY_SIGNATURE_HEADER;
    let secret = toolhost::secrets::SecretBox::from_key(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, SECRET_KEY).unwrap().try_into().unwrap(),
    )
    .relay_token()
    .to_string();
    let now = toolhost::store::now_ms();

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(header), "{body}");
    let refused = [
        ("a user's token", client.get(&url).bearer_auth(&cluster.token)),
        ("a forged signature", client.get(&url).header(header, format!("{now}.{}", "0".repeat(64)))),
        ("the secret itself", client.get(&url).header(header, secret.clone())),
        (
            "another path's",
            client
                .get(&url)
                .header(header, toolhost::relay::sign(&secret, &format!("/internal/v1/chats/{other}/stream"), now)),
        ),
        ("a stale one", client.get(&url).header(header, toolhost::relay::sign(&secret, &path, now - 120_000))),
        ("another deployment's", client.get(&url).header(header, toolhost::relay::sign("not the key", &path, now))),
    ];
    for (what, request) in refused {
        assert_eq!(request.send().await.unwrap().status(), 401, "{what} is refused");
    }
    // The desktop's relay endpoint too; a signature for watching does not open control.
    let watch = toolhost::relay::desktop::desktop_path("w1", false);
    let control = a.url(&toolhost::relay::desktop::desktop_path("w1", true));
    assert_eq!(client.get(a.url(&watch)).send().await.unwrap().status(), 401);
    let watch_signature = toolhost::relay::sign(&secret, &watch, now);
    assert_eq!(client.get(&control).header(header, watch_signature).send().await.unwrap().status(), 401);
    let replica = client.get(&url).header(header, toolhost::relay::sign(&secret, &path, now)).send().await.unwrap();
    assert_eq!(replica.status(), 200);
    assert_eq!(replica.headers()["content-type"], "text/event-stream");
    drop(a);
    cluster.finish().await;
}

/// A chat whose workspace lives on A's disk, started through B: only A's replicas run it, so
/// its tool reads A's files; B refuses to manage a workspace it does not hold, but carries a
/// viewer of its desktop to A; and once A is gone for good, its workspace is stopped with the
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_whose_workspace_lives_on_one_node_runs_there_whichever_replica_it_came_through() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    let mut a = cluster.serve(0, &llm);
    let body = json!({"template_id": "blank", "parameters": {}});
    let (status, workspace) = post(&a.base, &cluster.token, "/api/v1/workspaces", body).await;
    assert_eq!(status, 201, "{workspace}");
    let workspace_id = workspace["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.store.workspace(&workspace_id).await.unwrap().unwrap().status.is_building() {
        assert!(Instant::now() < deadline, "the workspace never finished starting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = cluster.serve(1, &llm);

    // B has no such workspace on its disk: the tools succeed only where the workspace lives.
    llm.script([
        fake_llm::tool_calls(&[("c1", "write_file", r#"{"path": "hello.txt", "content": "only on A's disk\n"}"#)]),
        fake_llm::tool_calls(&[("c2", "read_file", r#"{"path": "hello.txt"}"#)]),
        fake_llm::text("It says hello."),
    ]);
    let body = json!({"content": [{"type": "text", "text": "read the file"}], "workspace_id": workspace_id});
    let (status, chat) = post(&b.base, &cluster.token, "/api/v1/chats", body).await;
    assert_eq!(status, 201, "{chat}");
    let chat = chat["id"].as_str().unwrap().to_string();
    let on_b = Collector::sse(&b.base, &cluster.token, &chat, None).await;
    on_b.until(Duration::from_secs(30), ended_waiting).await;
    let stored = cluster.store.messages(&chat, 0).await.unwrap();
    let results = support::tool_results(&stored);
    assert_eq!(results.len(), 2, "{stored:#?}");
    assert!(results.iter().all(|r| !r.2), "the tools ran where the workspace lives: {results:?}");
    assert!(results[1].1.contains("only on A's disk"), "{results:?}");
    assert!(
        !cluster.dirs[1].path().join("workspaces").join(&workspace_id).exists(),
        "nothing of the workspace is on B's disk"
    );

    let (status, refused) =
        post(&b.base, &cluster.token, &format!("/api/v1/workspaces/{workspace_id}/stop"), json!({})).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("lives on another host"), "{refused}");

    // The chat's desktop, asked of B, is carried to A, which starts and serves it.
    let mut viewer = Viewer::connect(&b.base, &cluster.token, &chat, false).await.unwrap();
    assert_eq!((viewer.width, viewer.height), (1280, 800), "ServerInit of the desktop on A");
    assert_eq!(viewer.framebuffer_update().await, 0, "a FramebufferUpdate arrives through B");
    drop(viewer);

    a.kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    let stopped = loop {
        let workspace = cluster.store.workspace(&workspace_id).await.unwrap().unwrap();
        if workspace.status == toolhost::store::WorkspaceStatus::Stopped {
            break workspace;
        }
        assert!(Instant::now() < deadline, "A's workspace was never stopped: {workspace:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stopped.detail.as_deref().unwrap_or_default().contains("stopped answering"), "{stopped:?}");
    drop(b);
    cluster.finish().await;
}

/// A watch stream on B hears of a chat created through A, and of its turn ending, whichever
/// replica ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_on_one_replica_sees_chats_created_through_another() {
    let cluster = Cluster::new(2).await;
    let llm = FakeLlm::start().await;
    let a = cluster.serve(0, &llm);
    let b = cluster.serve(1, &llm);
    let response =
        reqwest::Client::new().get(b.url("/api/v1/chats/watch")).bearer_auth(&cluster.token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = events.clone();
    let reader = tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
        while let Some(Ok(event)) = stream.next().await {
            if let Ok(value) = serde_json::from_str(&event.data) {
                sink.lock().unwrap().push(value);
            }
        }
    });
    let chat = create_chat(&a.base, &cluster.token, "watch me").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = events.lock().unwrap().clone();
        let of_chat = |kind: &str, status: Option<&str>| {
            seen.iter().any(|e| {
                e["type"] == kind && e["chat"]["id"] == chat.as_str() && status.is_none_or(|s| e["chat"]["status"] == s)
            })
        };
        if of_chat("created", None) && of_chat("status_change", Some("waiting")) {
            break;
        }
        assert!(Instant::now() < deadline, "B's watcher missed the chat: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    drop((a, b));
    cluster.finish().await;
}
