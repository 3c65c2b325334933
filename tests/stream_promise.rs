//! The stream's promise kept through crashes, shutdowns and database outages: a `seq` is never
//! handed out twice, a client resuming from any `seq` it saw gets every later event once, it is
//! told to drop parts that will not be stored before their replacement streams, a SIGTERM ends
//! in bounded time with the chats handed back, and no chat stays `running` with nobody running it.
//! Real processes and signals, real databases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "support/client.rs"]
mod client;
#[path = "support/process.rs"]
mod process;
mod support;

use std::time::{Duration, Instant};

use client::{
    Collector, Received, assert_exactly_once, assistant_message, chat_state, create_chat, messages, parts, shown,
};
use support::fake_llm::{self, FakeLlm, Script};
use support::{Backend, TestServer};

const LONG: &str = "this answer streams slowly and is cut off before the server can store any of it at all";

/// A server killed during a turn's first model call, before it stored anything: the restarted
/// server takes the chat back at once (PostgreSQL too: the dead process's lock is free), and a
/// client resuming from the last `seq` it saw is told to drop what it holds before the re-run
/// streams, under numbers it never saw.
async fn a_server_killed_in_the_first_step_is_resumed_from_the_last_seen_seq_exactly_once(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let (deployment, database) = process::deployment(backend, data.path()).await;
    let token = deployment.user_token("alice");
    let llm = FakeLlm::start().await;
    llm.script([fake_llm::slow_text(LONG, Duration::from_millis(150))]);
    let mut server = deployment.serve(&llm.base_url, &[]);
    let chat = create_chat(&server.base, &token, "tell me something long").await;
    let first = Collector::sse(&server.base, &token, &chat, None).await;
    let before = first.until(Duration::from_secs(20), |events| parts(events) >= 3).await;
    let cursor = before.iter().filter_map(|e| e.id).max().unwrap();
    server.kill();

    llm.script([fake_llm::slow_text("Resumed after the crash.", Duration::from_millis(100))]);
    let restarted = Instant::now();
    let server = deployment.serve(&llm.base_url, &[]);
    let resumed = Collector::sse(&server.base, &token, &chat, Some(cursor)).await;
    let after = resumed.until(Duration::from_secs(30), assistant_message).await;
    let took = restarted.elapsed();

    assert_exactly_once(&before, &after, cursor);
    let discard = after.iter().position(|e| e.kind() == "discard").unwrap_or_else(|| panic!("no discard: {after:#?}"));
    assert_eq!(after[discard].event["reason"], "cut_off");
    let first_part = after.iter().position(|e| e.kind() == "message_part").unwrap();
    assert!(discard < first_part, "the discard comes before the re-run's parts: {after:#?}");
    let mut all = before.clone();
    all.extend(after);
    assert_eq!(
        shown(&all),
        ["tell me something long", "Resumed after the crash."],
        "a client following the rules shows nothing twice"
    );
    // The stale timeout (60 s, checked every 30 s) is only for replicas that vanished.
    assert!(
        took < Duration::from_secs(20),
        "the restarted server took the chat back at once, not after the stale timeout: {took:?}"
    );
    let stored = messages(&server.base, &token, &chat).await;
    assert_eq!(stored.len(), 2, "{stored:#?}");
    drop(server);
    database.drop_database().await;
}
on_both_backends!(a_server_killed_in_the_first_step_is_resumed_from_the_last_seen_seq_exactly_once);

/// SIGTERM with an SSE and a WebSocket stream open on a streaming turn: the worker stops at
/// once, the streams are told to drop the step's parts, see the chat go back to pending and get
/// a final `shutdown` event saying where to resume, and the process exits within its bound.
/// The next server runs the turn, and the client resumes where the notice said.
async fn sigterm_hands_the_chat_back_and_ends_open_streams_in_time(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let (deployment, database) = process::deployment(backend, data.path()).await;
    let token = deployment.user_token("alice");
    let llm = FakeLlm::start().await;
    llm.script([fake_llm::slow_text(LONG, Duration::from_millis(200))]);
    let mut server = deployment.serve(&llm.base_url, &[]);
    let chat = create_chat(&server.base, &token, "tell me something long").await;
    let sse = Collector::sse(&server.base, &token, &chat, None).await;
    let websocket = Collector::websocket(&server.base, &token, &chat).await;
    sse.until(Duration::from_secs(20), |events| parts(events) >= 2).await;
    websocket.until(Duration::from_secs(20), |events| parts(events) >= 2).await;

    server.terminate();
    let (status, took) = server.wait_exit(Duration::from_secs(30)).expect("the server exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        took <= Duration::from_secs(10),
        "SIGTERM ends the process within the default shutdown timeout (10 s): {took:?}"
    );
    let before = sse.ended(Duration::from_secs(5)).await;
    let over_websocket = websocket.ended(Duration::from_secs(5)).await;
    for (transport, events) in [("SSE", &before), ("WebSocket", &over_websocket)] {
        let last = events.last().unwrap();
        assert_eq!(last.kind(), "shutdown", "{transport}: {:?}", events.iter().map(Received::kind).collect::<Vec<_>>());
        let kinds: Vec<&str> = events.iter().map(Received::kind).collect();
        let discard = kinds.iter().position(|k| *k == "discard").unwrap_or_else(|| panic!("{kinds:?}"));
        let handed_back = events[discard..].iter().any(|e| e.kind() == "status" && e.event["status"] == "pending");
        assert!(handed_back, "the stream sees the chat handed back after the discard: {kinds:?}");
        assert!(!assistant_message(events), "the turn did not run to its end on the dying server: {kinds:?}");
    }
    let resume_after = before.last().unwrap().event["resume_after"].as_i64().unwrap();
    assert_eq!(resume_after, before.iter().filter_map(|e| e.id).max().unwrap(), "the notice names the last event sent");

    let store = toolhost::store::Store::open(
        &deployment.database_url.clone().unwrap_or_else(|| toolhost::store::Store::sqlite_url(data.path())),
    )
    .await
    .unwrap();
    let left = store.chat(&chat).await.unwrap().unwrap();
    assert_eq!(left.status, toolhost::store::ChatStatus::Pending, "handed back for the next server");
    store.close().await;

    llm.script([fake_llm::slow_text("Finished by the next server.", Duration::from_millis(50))]);
    let mut server = deployment.serve(&llm.base_url, &[]);
    let resumed = Collector::sse(&server.base, &token, &chat, Some(resume_after)).await;
    let after = resumed.until(Duration::from_secs(30), assistant_message).await;
    assert_exactly_once(&before, &after, resume_after);
    let mut all = before.clone();
    all.extend(after);
    assert_eq!(shown(&all), ["tell me something long", "Finished by the next server."]);
    server.stop();
    database.drop_database().await;
}
on_both_backends!(sigterm_hands_the_chat_back_and_ends_open_streams_in_time);

/// A turn that streams `words` words of `size` bytes each, slowly, then a short answer for every
/// re-run.
fn long_then_short(llm: &FakeLlm, words: usize, size: usize, short: &str) {
    let word = format!("{} ", "x".repeat(size));
    llm.script([fake_llm::slow_text(&word.repeat(words), Duration::from_millis(100))]);
    llm.script(std::iter::repeat_n(fake_llm::text(short), 8).collect::<Vec<Script>>());
}

/// After the database comes back: the chat is no longer `running` within seconds, the turn ran
/// again and its answer is stored once, and the stream said to drop what was not stored.
async fn settled_after_the_outage(
    server: &TestServer,
    token: &str,
    chat: &str,
    stream: &Collector,
    back: Instant,
    short: &str,
) {
    let deadline = back + Duration::from_secs(15);
    let status = loop {
        let state = chat_state(&server.base, token, chat).await;
        if state["status"] == "waiting" || state["status"] == "error" {
            break state;
        }
        assert!(Instant::now() < deadline, "still {state} {:?} after the database came back", back.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "waiting", "the turn went back to pending and ran again: {status}");
    let events = stream.until(Duration::from_secs(10), assistant_message).await;
    let discard = events
        .iter()
        .find(|e| e.kind() == "discard")
        .unwrap_or_else(|| panic!("no discard: {:?}", events.iter().map(Received::kind).collect::<Vec<_>>()));
    assert_eq!(discard.event["reason"], "not_stored", "{discard:?}");
    let stored = messages(&server.base, token, chat).await;
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"], "{stored:#?}");
    assert_eq!(stored[1]["content"][0]["text"], short);
    assert_eq!(
        shown(&events).last().map(String::as_str),
        Some(short),
        "a client following the rules shows the stored answer only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_mid_turn_ends_with_the_chat_resumed_within_seconds_of_its_return() {
    let server = TestServer::start(Backend::Postgres).await;
    let token = server.user("alice", false).await;
    let short = "Stored once the database was back.";
    long_then_short(&server.llm, 30, 10, short);
    let chat = create_chat(&server.base, &token, "tell me something long").await;
    let stream = Collector::sse(&server.base, &token, &chat, None).await;
    stream.until(Duration::from_secs(20), |events| parts(events) >= 2).await;

    // The database refuses connections and drops the open ones while the answer streams.
    let name = server.database_name().unwrap();
    let admin = server.postgres_admin().await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
    sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        .execute(&admin)
        .await
        .unwrap();
    stream.until(Duration::from_secs(20), |events| events.iter().any(|e| e.kind() == "discard")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.store.chat(&chat).await.is_err(), "the database is still out");
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&admin).await.unwrap();
    let back = Instant::now();
    settled_after_the_outage(&server, &token, &chat, &stream, back, short).await;
    admin.close().await;
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_on_a_full_disk_mid_turn_ends_with_the_chat_resumed_within_seconds_of_room() {
    let disk = support::SmallDisk::mount(32);
    let server = TestServer::start_on(support::TestDatabase::sqlite_in(disk.path()), support::test_settings()).await;
    let token = server.user("alice", false).await;
    let short = "Stored once there was room.";
    // Eight megabytes of answer: more than the write-ahead log has room for.
    long_then_short(&server.llm, 16, 512 * 1024, short);
    let chat = create_chat(&server.base, &token, "tell me something long").await;
    let stream = Collector::sse(&server.base, &token, &chat, None).await;
    stream.until(Duration::from_secs(20), |events| parts(events) >= 1).await;

    let filler = disk.fill();
    stream.until(Duration::from_secs(30), |events| events.iter().any(|e| e.kind() == "discard")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(filler).unwrap();
    let back = Instant::now();
    settled_after_the_outage(&server, &token, &chat, &stream, back, short).await;
    server.finish().await;
}

/// A provider that accepts the request and then sends nothing: each call ends at the first-byte
/// timeout, and after the silent attempts the turn ends with an error that says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_ends_the_turn_after_its_silent_attempts() {
    let server = TestServer::start(Backend::Sqlite).await;
    let token = server.user("alice", false).await;
    server.llm.script([Script::Silent, Script::Silent, Script::Silent]);
    let chat = create_chat(&server.base, &token, "hello?").await;
    let stream = Collector::sse(&server.base, &token, &chat, None).await;
    let state = server.wait_for_status(&token, &chat, "error").await;
    let error = state["last_error"].as_str().unwrap();
    assert!(error.contains("sent nothing within 2 s") && error.contains("gave up after 2 attempts"), "{error}");
    assert_eq!(server.llm.requests().len(), 2, "the test server makes 2 silent attempts");
    let events = stream.until(Duration::from_secs(5), |events| events.iter().any(|e| e.kind() == "error")).await;
    let retry = events.iter().find(|e| e.kind() == "retry").unwrap();
    assert_eq!(retry.event["error_kind"], "timeout");
    server.finish().await;
}
