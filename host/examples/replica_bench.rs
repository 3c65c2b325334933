//! Replica benchmarks: three replicas on one PostgreSQL database, each a whole server as
//! `serve` builds it (its own API listener, worker, pool and relay: LISTEN/NOTIFY and the HTTP
//! relay stream between them), in one process, against the fake model the tests use.
//!
//! ```sh
//! cargo run --release -p toolhost --example replica_bench -- fanout [--subscribers 1000] [--parts 2000] [--rate 100]
//! cargo run --release -p toolhost --example replica_bench -- turns [--chats 600] [--turns 10]
//! cargo run --release -p toolhost --example replica_bench -- interrupt [--samples 40]
//! ```
//! Each prints its figures, the last line as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{arg, message, percentile, timed_subscriber};
use futures::StreamExt;
use serde_json::{Value, json};
use support::TestServer;
use support::fake_llm::Fallback;
use toolhost::store::ChatStatus;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let first = TestServer::builder().relayed().start().await;
    first.llm.stop_recording();
    let second = TestServer::builder().replica_of(&first).start().await;
    let third = TestServer::builder().replica_of(&first).start().await;
    let token = first.user("bench", false).await;
    let replicas = [&first, &second, &third];
    let which = std::env::args().nth(1).unwrap_or_else(|| "fanout".into());
    let summary = match which.as_str() {
        "fanout" => {
            let subscribers = arg("--subscribers", "1000").parse().unwrap();
            let parts = arg("--parts", "2000").parse().unwrap();
            fanout(&replicas, &token, subscribers, parts, arg("--rate", "100").parse().unwrap()).await
        }
        "turns" => {
            turns(&replicas, &token, arg("--chats", "600").parse().unwrap(), arg("--turns", "10").parse().unwrap())
                .await
        }
        "interrupt" => interrupt(&replicas, &token, arg("--samples", "40").parse().unwrap()).await,
        other => panic!("unknown benchmark `{other}`: use fanout, turns or interrupt"),
    };
    second.finish().await;
    third.finish().await;
    first.finish().await;
    println!("{summary}");
}

/// Which of the replicas runs the chat (waits until one does).
async fn runner(replicas: &[&TestServer; 3], chat: &str) -> usize {
    loop {
        let state = replicas[0].store.chat(chat).await.unwrap().unwrap();
        if state.status == ChatStatus::Running
            && let Some(worker) = state.worker_id
        {
            return replicas.iter().position(|r| r.worker_id == worker).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One chat streaming `parts` parts at `rate` a second to subscribers spread evenly over the
/// three replicas: those on the replica running it get them from its channel, the others through
/// the relay. Every subscriber must get every part once; the relay's cost is the difference.
async fn fanout(replicas: &[&TestServer; 3], token: &str, subscribers: usize, parts: usize, rate: u32) -> Value {
    let first = replicas[0];
    let (_, chat) = first.post(token, "/api/v1/chats", message("warm up")).await;
    let id = chat["id"].as_str().unwrap().to_string();
    first.wait_for_status(token, &id, "waiting").await;
    let (_, meta) = first.get(token, &format!("/api/v1/chats/{id}")).await;
    let after = meta["last_seq"].as_i64().unwrap();

    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let replica = i % 3;
        let url = replicas[replica].url(&format!("/api/v1/chats/{id}/stream?after={after}"));
        let (client, token, ready) = (client.clone(), token.to_string(), ready_tx.clone());
        tasks.push(tokio::spawn(async move { (replica, timed_subscriber(client, url, token, parts, ready).await) }));
    }
    for _ in 0..subscribers {
        ready_rx.recv().await.unwrap();
    }
    first.llm.fallback(Fallback::TimedParts(parts, rate));
    let started = Instant::now();
    first.post(token, &format!("/api/v1/chats/{id}/messages"), message("go")).await;
    let running_on = runner(replicas, &id).await;
    let (mut same, mut relayed) = (Vec::new(), Vec::new());
    let mut complete = 0;
    for task in tasks {
        let (replica, common::Timed { latencies, seqs }) = task.await.unwrap();
        let once = seqs.windows(2).all(|w| w[0] < w[1]);
        if latencies.len() == parts && once {
            complete += 1;
        }
        if replica == running_on { same.extend(latencies) } else { relayed.extend(latencies) }
    }
    let elapsed = started.elapsed().as_secs_f64();
    same.sort_by(f64::total_cmp);
    relayed.sort_by(f64::total_cmp);
    let (same_p50, same_p99) = (percentile(&same, 0.5), percentile(&same, 0.99));
    let (relayed_p50, relayed_p99) = (percentile(&relayed, 0.5), percentile(&relayed, 0.99));
    let added = ((relayed_p99 - same_p99) * 100.0).round() / 100.0;
    println!(
        "{subscribers} subscribers on 3 replicas x {parts} parts at {rate}/s: {complete} got every part once; \
         on the running replica p50 {same_p50} ms p99 {same_p99} ms; relayed p50 {relayed_p50} ms p99 {relayed_p99} ms \
         (the relay adds {added} ms at p99); {elapsed:.1} s in all"
    );
    json!({"benchmark": "replica_fanout", "replicas": 3, "subscribers": subscribers, "parts": parts, "parts_per_sec": rate,
        "subscribers_complete": complete, "same_replica_p50_ms": same_p50, "same_replica_p99_ms": same_p99,
        "relayed_p50_ms": relayed_p50, "relayed_p99_ms": relayed_p99, "relay_added_p99_ms": added})
}

/// Database transactions so far (each statement outside a transaction is one).
async fn transactions(server: &TestServer) -> i64 {
    let admin = server.postgres_admin().await;
    // Statistics reach the view when a backend reports them; give the last ones time.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let row = sqlx::query(&format!(
        "SELECT (xact_commit + xact_rollback)::BIGINT AS n FROM pg_stat_database WHERE datname = '{}'",
        server.database_name().unwrap()
    ))
    .fetch_one(&admin)
    .await
    .unwrap();
    admin.close().await;
    sqlx::Row::get::<i64, _>(&row, "n")
}

/// `chats` chats of `turns` turns each, their messages sent through the three replicas in
/// turn: database transactions per turn (API, workers, relay and watchers together) and the
/// peak of each replica's connection pool.
async fn turns(replicas: &[&TestServer; 3], token: &str, chats: usize, turns: usize) -> Value {
    let first = replicas[0];
    first.llm.fallback(Fallback::Text);
    let peak: Arc<[AtomicU32; 3]> = Arc::new(Default::default());
    let sampler = {
        let (peak, stores) = (peak.clone(), replicas.map(|r| r.store.clone()));
        tokio::spawn(async move {
            loop {
                for (i, store) in stores.iter().enumerate() {
                    peak[i].fetch_max(store.connections().0, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Every replica's watchers see every chat's changes: the next message is sent on `waiting`.
    let watch = first.http.get(first.url("/api/v1/chats/watch")).bearer_auth(token).send().await.unwrap();
    let mut watch = eventsource_stream::Eventsource::eventsource(watch.bytes_stream());
    let before = transactions(first).await;
    let started = Instant::now();
    let mut done: HashMap<String, usize> = HashMap::new();
    for i in 0..chats {
        let (status, chat) = replicas[i % 3].post(token, "/api/v1/chats", message(&format!("chat {i}"))).await;
        assert!(status.is_success(), "{chat}");
        done.insert(chat["id"].as_str().unwrap().to_string(), 0);
    }
    let (mut finished, mut errors) = (0, 0);
    while finished < chats {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(60), watch.next()).await else {
            let mut statuses: HashMap<String, usize> = HashMap::new();
            for id in done.keys() {
                let chat = first.store.chat(id).await.unwrap().unwrap();
                *statuses.entry(format!("{:?} {:?}", chat.status, chat.worker_id.is_some())).or_default() += 1;
            }
            panic!("the turns stopped with {finished} chats finished: {statuses:?}");
        };
        let event = event.unwrap().unwrap();
        let value: Value = serde_json::from_str(&event.data).unwrap();
        if value["type"] != "status_change" {
            continue;
        }
        let id = value["chat"]["id"].as_str().unwrap();
        if value["chat"]["status"] == "error" && done.remove(id).is_some() {
            eprintln!("chat {id} ended in error: {}", value["chat"]["last_error"]);
            errors += 1;
            finished += 1;
            continue;
        }
        if value["chat"]["status"] != "waiting" {
            continue;
        }
        let Some(count) = done.get_mut(id) else { continue };
        // A status change may be seen twice (from the runner and read again): count each turn once.
        let stored = first.store.messages(id, 0).await.unwrap().len();
        if stored / 2 <= *count {
            continue;
        }
        *count = stored / 2;
        if *count == turns {
            finished += 1;
            continue;
        }
        let replica = replicas[*count % 3];
        let (status, body) = replica.post(token, &format!("/api/v1/chats/{id}/messages"), message("next")).await;
        assert!(status.is_success(), "{body}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let total_turns = (chats * turns) as f64;
    // The benchmark's own reads (one per status change, above) are not the server's.
    let transactions_per_turn = ((transactions(first).await - before) as f64 / total_turns - 1.0) * 10.0;
    let transactions_per_turn = transactions_per_turn.round() / 10.0;
    sampler.abort();
    let peaks: Vec<u32> = peak.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let pool_max = first.store.connections().1;
    println!(
        "{chats} chats x {turns} turns over 3 replicas in {seconds:.1} s ({:.0} turns/s): {transactions_per_turn} database \
         transactions per turn; connection pool peaks {peaks:?} of {pool_max} each; {errors} chats ended in error",
        total_turns / seconds
    );
    json!({"benchmark": "replica_turns", "replicas": 3, "chats": chats, "turns_per_chat": turns,
        "turns_per_sec": (total_turns / seconds).round(), "db_transactions_per_turn": transactions_per_turn,
        "pool_peak": peaks, "pool_max": pool_max, "chats_in_error": errors})
}

/// An interrupt sent to a replica other than the one running the turn: how long until the
/// runner has stopped, stored the partial step and given the chat up.
async fn interrupt(replicas: &[&TestServer; 3], token: &str, samples: usize) -> Value {
    let mut latencies = Vec::new();
    for i in 0..samples {
        replicas[0].llm.script([support::fake_llm::slow_text(&"slow ".repeat(400), Duration::from_millis(20))]);
        let (_, chat) = replicas[i % 3].post(token, "/api/v1/chats", message(&format!("interrupt me {i}"))).await;
        let id = chat["id"].as_str().unwrap().to_string();
        let running_on = runner(replicas, &id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let other = replicas[(running_on + 1 + i % 2) % 3];
        let sent = Instant::now();
        let (status, _) = other.post(token, &format!("/api/v1/chats/{id}/interrupt"), json!({})).await;
        assert!(status.is_success());
        loop {
            let state = other.store.chat(&id).await.unwrap().unwrap();
            if state.status == ChatStatus::Waiting && state.worker_id.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
    println!(
        "{samples} interrupts sent to another replica than the runner: the runner stopped, stored and let go after p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );
    json!({"benchmark": "replica_interrupt", "samples": samples, "p50_ms": p50, "p99_ms": p99, "max_ms": max})
}
