//! What a waiting `wait_agent` costs: N calls of the bundled subagents plugin wait at once on a
//! child that never finishes (no worker runs it), and the process's resident memory is read
//! before and during the waits. A wait is a suspended future on the call's fiber: no thread.
//!
//! `cargo run --release -p toolhost --example agent_wait_bench -- [--waits N]`
//! The last line is JSON: {"waits": N, "rss_kib_per_wait": ..., "threads_during": ...}.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::time::Duration;

use toolhost::agents::AgentsConfig;
use toolhost::app::{App, Setup};
use toolhost::config::{Config, Overrides};
use toolhost::domain::ChatKind;
use toolhost::domain::parts::MessagePart;
use toolhost::plugins::CallContext;
use toolhost::plugins::CallRequest;
use toolhost::plugins::capabilities::ChatServices;
use toolhost::store::NewChat;
use toolhost::workspace::ChatScope;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let waits: usize =
        std::env::args().skip_while(|a| a != "--waits").nth(1).map(|n| n.parse()).transpose()?.unwrap_or(100);
    let data = tempfile::tempdir()?;
    let overrides = Overrides { data_dir: Some(data.path().to_path_buf()), ..Overrides::default() };
    let mut config = Config::load(&overrides)?;
    config.plugins.max_waiting_calls = (waits as u32).max(256);
    config.agents =
        AgentsConfig { max_concurrent_per_root: 1000, max_spawns_per_turn: 1000, ..AgentsConfig::default() };
    let setup = Setup { environment: |_| None, ..Setup::from_env() };
    // No worker is started: the child never runs, so every wait lasts its whole timeout.
    let app = App::build(&config, setup).await?;
    app.runtime.wait_started().await;
    let owner = app.store.create_user("bench", false).await?;
    let root = app.chats.create(NewChat::root(&owner.id, vec![MessagePart::text("bench")], None, None)).await?;
    let child = app.agents.spawn(&root.id, "never runs: no worker here", None, ChatKind::Subagent).await?;
    let runtime = app.runtime.clone();
    let services = ChatServices {
        workspaces: app.workspaces.clone(),
        agents: app.agents.clone(),
        secrets: app.vault.clone(),
        scope: ChatScope {
            chat_id: root.id.clone(),
            root_chat_id: root.id.clone(),
            owner_id: owner.id.clone(),
            owner_is_admin: false,
            workspace_id: None,
        },
    };

    // One call first, so that the plugin's code and the runtime's pools are warm.
    let call = |n: usize, seconds: u64| {
        let runtime = runtime.clone();
        let request = CallRequest {
            tool: "wait_agent".into(),
            arguments: serde_json::json!({"chat_ids": [child.id], "timeout_seconds": seconds}),
            context: CallContext {
                chat_id: root.id.clone(),
                root_chat_id: root.id.clone(),
                parent_chat_id: None,
                kind: ChatKind::Root,
                user_id: owner.id.clone(),
                call_id: format!("wait-{n}"),
            },
            workspace: None,
            chat: Some(services.clone()),
            grants: None,
            progress: None,
        };
        async move { runtime.call(request).await }
    };
    call(0, 1).await?;
    let (before, threads_before) = (rss_kib(), threads());
    let running: Vec<_> = (1..=waits).map(|n| tokio::spawn(call(n, 6))).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (during, threads_during, in_waiting_slots) = (rss_kib(), threads(), runtime.waiting_calls());
    for handle in running {
        let output = handle.await??;
        anyhow::ensure!(!output.is_error, "a wait failed: {output:?}");
    }
    let per_wait = during.saturating_sub(before) as f64 / waits as f64;
    println!(
        "{waits} waits at once: resident memory {before} KiB before, {during} KiB during: {per_wait:.0} KiB per wait"
    );
    println!(
        "threads: {threads_before} before, {threads_during} during; {in_waiting_slots} of the waits in waiting slots, not running ones"
    );
    println!(
        "{}",
        serde_json::json!({"waits": waits, "rss_kib_before": before, "rss_kib_during": during, "rss_kib_per_wait": per_wait.round(), "threads_before": threads_before, "threads_during": threads_during, "in_waiting_slots": in_waiting_slots})
    );
    Ok(())
}
