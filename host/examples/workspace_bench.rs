//! What the sandbox costs: the time to create a workspace from a small template until it is
//! ready (its startup script, `git init`, included), and the time to run `true` in it through
//! bubblewrap (with its control group and limits) against running `bash -c true` directly, and
//! with a network of its own (slirp4netns) for templates that allow one.
//!
//! `cargo run --release -p toolhost --example workspace_bench -- [--runs N]`
//! The last line is JSON: {"create_ready_ms_p50": ..., "sandboxed_true_ms_p50": ..., ...}.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

use std::time::{Duration, Instant};

use toolhost::store::Store;
use toolhost::workspace::sandbox::CommandSpec;
use toolhost::workspace::{CreateRequest, WorkspaceService, WorkspacesConfig};

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize =
        std::env::args().skip_while(|a| a != "--runs").nth(1).map(|n| n.parse()).transpose()?.unwrap_or(50);
    let data = tempfile::tempdir()?;
    let store = Store::open(&Store::sqlite_url(data.path())).await?;
    let owner = store.create_user("bench", false).await?;
    // The bundled templates, and one whose commands may reach the network.
    std::fs::create_dir_all(data.path().join("templates/online"))?;
    std::fs::write(data.path().join("templates/online/template.toml"), "name = 'Online'\nnetwork = true\n")?;
    let service =
        WorkspaceService::start(store, data.path(), &WorkspacesConfig::default()).await.map_err(anyhow::Error::msg)?;
    if let Some(problem) = service.sandbox_problem() {
        anyhow::bail!("{problem}");
    }

    let mut create = Vec::new();
    let mut workspace = None;
    for _ in 0..runs.clamp(1, 20) {
        let started = Instant::now();
        let created = service
            .create(&owner.id, false, CreateRequest { template_id: "blank".into(), ..CreateRequest::default() })
            .await?;
        let ready = service.wait_settled(&created.id, Duration::from_secs(60)).await?;
        create.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(ready.status.as_str() == "ready", "{:?}", ready.detail);
        workspace = Some(ready);
    }
    let workspace = workspace.expect("at least one run");

    let mut sandboxed = Vec::new();
    for _ in 0..runs {
        let spec = CommandSpec { command: "true".into(), ..CommandSpec::default() };
        let started = Instant::now();
        let done = service.run(&workspace, spec, Duration::from_secs(10), false).await?;
        sandboxed.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(done.exit_code == Some(0), "{done:?}");
    }
    let online = service
        .create(&owner.id, false, CreateRequest { template_id: "online".into(), ..CreateRequest::default() })
        .await?;
    let online = service.wait_settled(&online.id, Duration::from_secs(60)).await?;
    let mut networked = Vec::new();
    for _ in 0..runs {
        let spec = CommandSpec { command: "true".into(), ..CommandSpec::default() };
        let started = Instant::now();
        let done = service.run(&online, spec, Duration::from_secs(10), true).await?;
        networked.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(done.exit_code == Some(0) && done.output.text.is_empty(), "{done:?}");
    }
    let mut direct = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let status = tokio::process::Command::new("bash").args(["-c", "true"]).status().await?;
        direct.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.success());
    }

    let (create_p50, sandboxed_p50, sandboxed_p95, direct_p50) = (
        percentile(&mut create, 0.5),
        percentile(&mut sandboxed, 0.5),
        percentile(&mut sandboxed, 0.95),
        percentile(&mut direct, 0.5),
    );
    println!("create a workspace from `blank` until ready: {create_p50:.1} ms p50 ({} runs)", create.len());
    println!("`true` in the sandbox: {sandboxed_p50:.2} ms p50, {sandboxed_p95:.2} ms p95 ({runs} runs)");
    let networked_p50 = percentile(&mut networked, 0.5);
    println!("`true` in the sandbox with a network of its own: {networked_p50:.2} ms p50");
    println!(
        "`bash -c true` without a sandbox: {direct_p50:.2} ms p50; sandbox overhead {:.2} ms per command",
        sandboxed_p50 - direct_p50
    );
    println!(
        "{}",
        serde_json::json!({
            "runs": runs,
            "create_ready_ms_p50": (create_p50 * 10.0).round() / 10.0,
            "sandboxed_true_ms_p50": (sandboxed_p50 * 100.0).round() / 100.0,
            "sandboxed_true_ms_p95": (sandboxed_p95 * 100.0).round() / 100.0,
            "networked_true_ms_p50": (networked_p50 * 100.0).round() / 100.0,
            "direct_true_ms_p50": (direct_p50 * 100.0).round() / 100.0,
            "overhead_ms_p50": ((sandboxed_p50 - direct_p50) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
