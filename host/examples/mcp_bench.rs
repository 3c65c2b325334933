//! MCP `tools/call` of a trivial Rust tool (`echo` of the `hostile` test fixture, loaded as a
//! third-party plugin) through the gateway, by a raw JSON-RPC client, one call at a time: over
//! HTTP (keep-alive `POST /mcp`) and over stdio (`toolhost mcp`, which forwards each message to
//! the server). The server is the real binary (`toolhost serve`) in a process of its own, so its
//! CPU time per call is its own (read from /proc before and after).
//!
//! ```sh
//! cargo build --release && cargo run --release -p toolhost --example mcp_bench -- [--calls 5000]
//! ```
//! The last line is JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{arg, percentile};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PROTOCOL: &str = "2025-11-25";

/// The `toolhost` binary beside this example's folder (`cargo build --release` makes it).
fn toolhost() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("toolhost");
    assert!(binary.is_file(), "build the server first: cargo build --release ({} is missing)", binary.display());
    binary
}

/// CPU time (user + system) process `pid` has used, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let (user, system) = cpu_split_ms(pid);
    user + system
}

/// CPU time process `pid` has used in its own code (user) and in the kernel for it (system), in ms.
fn cpu_split_ms(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ms = |ticks: &str| ticks.parse::<f64>().unwrap() * 1000.0 / per_second;
    (ms(fields[11]), ms(fields[12]))
}

fn call_message(id: usize) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"path": "ping"}}})
        .to_string()
}

fn check_answer(answer: &Value) {
    assert_eq!(answer["result"]["content"][0]["text"], "ping", "{answer}");
}

/// Latencies (µs) and figures of one transport's run.
fn summary(name: &str, mut latencies: Vec<f64>, elapsed: Duration, cpu_ms: f64) -> Value {
    latencies.sort_by(f64::total_cmp);
    let calls = latencies.len() as f64;
    let figures = json!({
        "p50_us": percentile(&latencies, 0.5),
        "p99_us": percentile(&latencies, 0.99),
        "calls_per_s": (calls / elapsed.as_secs_f64()).round(),
        "server_cpu_us_per_call": (cpu_ms * 1000.0 / calls).round(),
    });
    println!("{name}: {figures}");
    figures
}

async fn over_http(url: &str, token: &str, calls: usize, server: u32) -> Value {
    let client = reqwest::Client::new();
    let call = |id: usize| {
        client
            .post(url)
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", PROTOCOL)
            .body(call_message(id))
            .send()
    };
    for id in 0..calls / 10 {
        check_answer(&call(id).await.unwrap().json().await.unwrap());
    }
    let cpu = cpu_ms(server);
    let user = cpu_split_ms(server).0;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(calls);
    for id in 0..calls {
        let sent = Instant::now();
        let answer: Value = call(id).await.unwrap().json().await.unwrap();
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        check_answer(&answer);
    }
    let calls = latencies.len() as f64;
    let mut figures = summary("http", latencies, started.elapsed(), cpu_ms(server) - cpu);
    // The server's own code, without the kernel's work for it (loopback TCP, waking threads).
    figures["server_user_cpu_us_per_call"] = json!(((cpu_split_ms(server).0 - user) * 1000.0 / calls).round());
    println!("http, user CPU: {}", figures["server_user_cpu_us_per_call"]);
    figures
}

async fn over_stdio(base: &str, token: &str, calls: usize, server: u32) -> Value {
    let mut bridge = tokio::process::Command::new(toolhost())
        .args(["mcp", "--url", base])
        .env("TOOLHOST_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let bridge_pid = bridge.id().unwrap();
    let mut stdin = bridge.stdin.take().unwrap();
    let mut lines = BufReader::new(bridge.stdout.take().unwrap()).lines();
    let initialize = json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "mcp_bench", "version": "1"}}});
    stdin.write_all(format!("{initialize}\n").as_bytes()).await.unwrap();
    let answer: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(answer["result"]["protocolVersion"].is_string(), "{answer}");
    stdin.write_all(b"{\"jsonrpc\": \"2.0\", \"method\": \"notifications/initialized\"}\n").await.unwrap();
    let mut exchange = async |id: usize| {
        stdin.write_all(format!("{}\n", call_message(id)).as_bytes()).await.unwrap();
        let answer: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        answer
    };
    for id in 0..calls / 10 {
        check_answer(&exchange(id).await);
    }
    let cpu = cpu_ms(server) + cpu_ms(bridge_pid);
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(calls);
    for id in 0..calls {
        let sent = Instant::now();
        let answer = exchange(id).await;
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        check_answer(&answer);
    }
    let used = cpu_ms(server) + cpu_ms(bridge_pid) - cpu;
    summary("stdio (server and bridge)", latencies, started.elapsed(), used)
}

/// Runs the CLI with the data directory; returns its standard output.
fn cli(data: &Path, args: &[&str]) -> String {
    let done = std::process::Command::new(toolhost()).args(args).env("TOOLHOST_DATA_DIR", data).output().unwrap();
    assert!(done.status.success(), "toolhost {args:?}: {}", String::from_utf8_lossy(&done.stderr));
    String::from_utf8_lossy(&done.stdout).trim().to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls: usize = arg("--calls", "5000").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("TOOLHOST_WASM_DIR")).join("fixture_hostile.wasm"),
        plugins.path().join("hostile.wasm"),
    )
    .unwrap();
    cli(data.path(), &["users", "create", "bench"]);
    let token = cli(data.path(), &["tokens", "create", "bench"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(toolhost())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("TOOLHOST_DATA_DIR", data.path())
        .env("TOOLHOST_PLUGINS_DIR", plugins.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = server.id().unwrap();
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = over_http(&format!("{base}/mcp"), &token, calls, pid).await;
    let stdio = over_stdio(&base, &token, calls, pid).await;
    let _ = server.kill().await;
    println!("{}", json!({"benchmark": "mcp_tools_call", "calls": calls, "http": http, "stdio": stdio}));
}
