//! The web app's benchmarks, in Debian's Chromium (headless, driven by Playwright through
//! `web/bench/web.bench.mjs`) against the real server with the fake model:
//!
//! - first paint of a chat with 1,000 messages (a fresh page load, and a switch from another
//!   chat in the sidebar): from the navigation to the frame that shows them all;
//! - a 2,000-part answer streamed at 100 parts/s: long tasks (over 50 ms) and frames that took
//!   longer than 50 ms while it streams;
//! - the bundle: gzip size of what the chat screens load, and of the chunks loaded on demand.
//!
//! ```sh
//! cargo run --release -p toolhost --example web_bench     # --messages 1000 --parts 2000 --rate 100 --loads 5
//! ```
//! It prints its figures, the last line as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use common::{arg, message};
use support::{Backend, TestServer, fake_llm};

const PASSWORD: &str = "benchmark passphrase";

/// An answer as agents write them: prose, a list and a highlighted code block.
fn answer(i: usize) -> String {
    format!(
        "Answer {i}: the change is in **two places**.\n\n- the parser keeps its cursor\n- the writer flushes once\n\n```rust\nfn step_{i}(input: &str) -> usize {{\n    input.lines().filter(|l| !l.is_empty()).count()\n}}\n```\n\nThat is all for step {i}. "
    )
}

async fn history_chat(server: &TestServer, token: &str, messages: usize) -> String {
    let turns = messages / 2;
    server.llm.script_for("HISTORY:", (0..turns).map(|i| fake_llm::text(&answer(i))));
    let (_, chat) = server.post(token, "/api/v1/chats", message("HISTORY: a long conversation")).await;
    let id = chat["id"].as_str().unwrap().to_string();
    server.wait_for_status(token, &id, "waiting").await;
    for turn in 1..turns {
        let (status, sent) =
            server.post(token, &format!("/api/v1/chats/{id}/messages"), message(&format!("next step {turn}"))).await;
        assert!(status.is_success(), "{sent}");
        server.wait_for_status(token, &id, "waiting").await;
    }
    id
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages: usize = arg("--messages", "1000").parse().unwrap();
    let parts: usize = arg("--parts", "2000").parse().unwrap();
    let rate: u64 = arg("--rate", "100").parse().unwrap();
    let server = TestServer::start(Backend::Sqlite).await;
    server.llm.stop_recording();
    let token = server.user("bench", false).await;
    let user = server.store.find_user("bench").await.unwrap().unwrap();
    let hash = toolhost::accounts::hash_password(PASSWORD).unwrap();
    server.store.set_password_hash(&user.id, Some(&hash)).await.unwrap();

    let started = std::time::Instant::now();
    let history = history_chat(&server, &token, messages).await;
    println!("made a chat of {messages} messages in {:.1} s", started.elapsed().as_secs_f64());
    let streamed = "word ".repeat(parts);
    server.llm.script_for("STREAM:", [fake_llm::slow_text(&streamed, Duration::from_millis(1000 / rate))]);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let output = tokio::process::Command::new("node")
        .arg(root.join("web/bench/web.bench.mjs"))
        .env("BASE_URL", &server.base)
        .env("NAME", "bench")
        .env("PASSWORD", PASSWORD)
        .env("HISTORY_CHAT", &history)
        .env("MESSAGES", messages.to_string())
        .env("PARTS", parts.to_string())
        .env("LOADS", arg("--loads", "5"))
        .output()
        .await
        .expect("run `bash .ci/system-deps` to install Node.js and Chromium");
    let said = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser run failed:\n{said}");
    print!("{said}");
    server.finish().await;
}
