//! Chat server benchmarks against a fake model that answers instantly (the one the tests use).
//!
//! ```sh
//! cargo run --release -p toolhost --example chat_bench -- turn [--backend sqlite|postgres] [--turns 200]
//! cargo run --release -p toolhost --example chat_bench -- fanout [--subscribers 1000] [--parts 2000] [--rate 100]
//! cargo run --release -p toolhost --example chat_bench -- concurrent [--chats 200]
//! ```
//! Each prints its figures, the last line as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{arg, message, percentile, timed_subscriber};
use futures::StreamExt;
use serde_json::{Value, json};
use support::fake_llm::Fallback;
use support::{Backend, TestServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let backend = match arg("--backend", "sqlite").as_str() {
        "postgres" => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let which = std::env::args().nth(1).unwrap_or_else(|| "turn".into());
    let mut server = TestServer::start(backend).await;
    server.llm.stop_recording();
    let token = server.user("bench", false).await;
    let summary = match which.as_str() {
        "turn" => {
            let turns = arg("--turns", "200").parse().unwrap();
            let mut summary = turn(&server, &token, turns).await;
            // The floor, in the same run: with the worker stopped, so that nothing else writes.
            server.stop_worker().await;
            let floor = store_floor(&server.store, turns).await;
            let overhead = summary["server_overhead_p50_ms"].as_f64().unwrap();
            println!(
                "the store alone writing a turn's rows: p50 {floor} ms; server overhead is {:.1}x that",
                overhead / floor
            );
            summary["store_floor_p50_ms"] = json!(floor);
            summary["overhead_over_floor"] = json!((overhead / floor * 10.0).round() / 10.0);
            summary
        }
        "fanout" => {
            let rate = arg("--rate", "100").parse().unwrap();
            fanout(
                &server,
                &token,
                arg("--subscribers", "1000").parse().unwrap(),
                arg("--parts", "2000").parse().unwrap(),
                rate,
            )
            .await
        }
        "concurrent" => concurrent(&server, &token, arg("--chats", "200").parse().unwrap()).await,
        other => panic!("unknown benchmark `{other}`: use turn, fanout or concurrent"),
    };
    server.finish().await;
    let mut summary = summary;
    summary["backend"] = json!(format!("{backend:?}").to_lowercase());
    println!("{summary}");
}

/// (a) One turn with one tool call, end to end through HTTP: create the chat, and wait for the
/// watch stream to say it is waiting again. Server overhead = that time minus the two model calls.
async fn turn(server: &TestServer, token: &str, turns: usize) -> Value {
    server.llm.fallback(Fallback::ToolThenText);
    // The model's own share: two streamed calls to the fake, measured directly.
    let mut model_ms = Vec::new();
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    for _ in 0..50 {
        let started = Instant::now();
        let response =
            server.http.post(format!("{}/chat/completions", server.llm.base_url)).json(&body).send().await.unwrap();
        response.bytes().await.unwrap();
        model_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    model_ms.sort_by(f64::total_cmp);
    let model_call_ms = percentile(&model_ms, 0.5);

    let response = server.http.get(server.url("/api/v1/chats/watch")).bearer_auth(token).send().await.unwrap();
    let mut watch = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut end_to_end = Vec::with_capacity(turns);
    for i in 0..turns {
        let started = Instant::now();
        let (_, chat) = server.post(token, "/api/v1/chats", message(&format!("turn {i}"))).await;
        let id = chat["id"].as_str().unwrap().to_string();
        while let Some(Ok(event)) = watch.next().await {
            if event.event == "status_change" {
                let value: Value = serde_json::from_str(&event.data).unwrap();
                if value["chat"]["id"] == id.as_str()
                    && (value["chat"]["status"] == "waiting" || value["chat"]["status"] == "error")
                {
                    assert_eq!(value["chat"]["status"], "waiting", "{value}");
                    break;
                }
            }
        }
        end_to_end.push(started.elapsed().as_secs_f64() * 1e3);
    }
    end_to_end.sort_by(f64::total_cmp);
    let e2e = percentile(&end_to_end, 0.5);
    let overhead = ((e2e - 2.0 * model_call_ms) * 100.0).round() / 100.0;
    println!(
        "turn with one tool call: p50 {e2e} ms end to end, p99 {} ms; model calls {model_call_ms} ms each; server overhead p50 {overhead} ms",
        percentile(&end_to_end, 0.99)
    );
    json!({"benchmark": "turn", "turns": turns, "e2e_p50_ms": e2e, "e2e_p99_ms": percentile(&end_to_end, 0.99), "model_call_p50_ms": model_call_ms, "server_overhead_p50_ms": overhead})
}

/// What a turn with one tool call writes, through the store alone: the chat and its first
/// message, the worker taking it, the three messages of the turn (the call, its result, the
/// answer) and the chat going back to waiting. The least a turn can cost on this database.
async fn store_floor(store: &toolhost::store::Store, turns: usize) -> f64 {
    use toolhost::domain::{ChatStatus, MessagePart, Role};
    use toolhost::store::NewChat;
    let owner = store.create_user("floor", false).await.unwrap();
    let call = MessagePart::ToolCall {
        tool_call_id: "call-1".into(),
        tool_name: "read_file".into(),
        args: json!({"path": "README.md"}),
        provider_metadata: None,
    };
    let result = MessagePart::ToolResult {
        tool_call_id: "call-1".into(),
        tool_name: "read_file".into(),
        result: json!("hello"),
        is_error: false,
        images: Vec::new(),
    };
    let mut times = Vec::with_capacity(turns);
    for i in 0..turns {
        let started = Instant::now();
        let new =
            NewChat::root(&owner.id, vec![MessagePart::text(format!("turn {i}"))], Some("test-model".into()), None);
        let (chat, _) = store.create_chat(new).await.unwrap();
        let taken = store.acquire_chat("floor-worker", "floor-node").await.unwrap().unwrap();
        assert_eq!(taken.id, chat.id);
        let worker = Some("floor-worker");
        store
            .insert_message(&chat.id, worker, Role::Assistant, std::slice::from_ref(&call), None, None)
            .await
            .unwrap()
            .unwrap();
        store
            .insert_message(&chat.id, worker, Role::Tool, std::slice::from_ref(&result), None, None)
            .await
            .unwrap()
            .unwrap();
        let answer = [MessagePart::text("done")];
        store.insert_message(&chat.id, worker, Role::Assistant, &answer, None, None).await.unwrap().unwrap();
        store.set_status(&chat.id, ChatStatus::Waiting, None).await.unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    percentile(&times, 0.5)
}

/// (b) Many stream subscribers on one chat receive a long streamed answer; latency is the time
/// from the fake model sending a part to a subscriber reading it.
async fn fanout(server: &TestServer, token: &str, subscribers: usize, parts: usize, rate: u32) -> Value {
    let (_, chat) = server.post(token, "/api/v1/chats", message("warm up")).await;
    let id = chat["id"].as_str().unwrap().to_string();
    server.wait_for_status(token, &id, "waiting").await;
    let (_, meta) = server.get(token, &format!("/api/v1/chats/{id}")).await;
    let after = meta["last_seq"].as_i64().unwrap();

    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let url = server.url(&format!("/api/v1/chats/{id}/stream?after={after}"));
        let (client, token, ready) = (client.clone(), token.to_string(), ready_tx.clone());
        tasks.push(tokio::spawn(timed_subscriber(client, url, token, parts, ready)));
    }
    for _ in 0..subscribers {
        ready_rx.recv().await.unwrap();
    }
    server.llm.fallback(Fallback::TimedParts(parts, rate));
    let started = Instant::now();
    server.post(token, &format!("/api/v1/chats/{id}/messages"), message("go")).await;
    let mut all = Vec::with_capacity(subscribers * parts);
    let mut complete = 0;
    for task in tasks {
        let latencies = task.await.unwrap().latencies;
        if latencies.len() == parts {
            complete += 1;
        }
        all.extend(latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let (p50, p99, max) = (percentile(&all, 0.5), percentile(&all, 0.99), percentile(&all, 1.0));
    println!(
        "{subscribers} subscribers x {parts} parts at {rate}/s: {complete} got every part; delivery p50 {p50} ms, p99 {p99} ms, max {max} ms; {elapsed:.2} s in all"
    );
    json!({"benchmark": "fanout", "subscribers": subscribers, "parts": parts, "parts_per_sec": rate, "subscribers_complete": complete, "delivery_p50_ms": p50, "delivery_p99_ms": p99, "delivery_max_ms": max, "seconds": (elapsed * 100.0).round() / 100.0})
}

/// (c) Many chats running a turn (with one tool call) at once.
async fn concurrent(server: &TestServer, token: &str, chats: usize) -> Value {
    server.llm.fallback(Fallback::ToolThenText);
    let started = Instant::now();
    let creates = (0..chats).map(|i| server.post(token, "/api/v1/chats", message(&format!("chat {i}"))));
    let created = futures::future::join_all(creates).await;
    let create_errors = created.iter().filter(|(status, _)| !status.is_success()).count();
    let (waiting, errors) = loop {
        let (_, list) = server.get(token, "/api/v1/chats?limit=200&offset=0").await;
        let mut all = list["chats"].as_array().unwrap().clone();
        let mut offset = 200;
        while all.len() < chats && offset < chats {
            let (_, more) = server.get(token, &format!("/api/v1/chats?limit=200&offset={offset}")).await;
            all.extend(more["chats"].as_array().unwrap().iter().cloned());
            offset += 200;
        }
        let waiting = all.iter().filter(|c| c["status"] == "waiting").count();
        let errors = all.iter().filter(|c| c["status"] == "error").count();
        if waiting + errors >= chats || started.elapsed() > Duration::from_secs(120) {
            break (waiting, errors);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{chats} chats at once: {waiting} finished, {errors} in error, {create_errors} refused; {seconds:.2} s ({:.1} turns/s)",
        chats as f64 / seconds
    );
    json!({"benchmark": "concurrent", "chats": chats, "finished": waiting, "errors": errors + create_errors, "seconds": (seconds * 100.0).round() / 100.0, "turns_per_sec": ((chats as f64 / seconds) * 10.0).round() / 10.0})
}
