//! The desktop's costs: its start (X server and window manager, until the host is connected),
//! a screenshot of a 1280x800 display to an encoded PNG (and JPEG), one input action through
//! the desktop (an XTEST pointer move, synced), and the memory of an idle desktop.
//!
//! `cargo run --release -p toolhost --example desktop_bench -- --starts 10 --shots 50 --actions 500`
//! The last line is JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails by panicking

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{arg, percentile};
use serde_json::json;
use toolhost::store::Store;
use toolhost::workspace::desktop::picture::Format;
use toolhost::workspace::{CreateRequest, WorkspaceService, WorkspacesConfig};

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(|a, b| a.total_cmp(b));
    values
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Resident memory (KiB) of the desktop's own processes: its X server and window manager.
fn desktop_rss_kib() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = cmdline.contains("-desktop\0workspace") || cmdline.contains("/tmp/twmrc");
        if !ours {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[tokio::main]
async fn main() {
    let starts: usize = arg("--starts", "10").parse().unwrap();
    let shots: usize = arg("--shots", "50").parse().unwrap();
    let actions: usize = arg("--actions", "500").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(&Store::sqlite_url(data.path())).await.unwrap();
    let owner = store.create_user("bench", false).await.unwrap();
    let service = WorkspaceService::start(store, data.path(), &WorkspacesConfig::default()).await.unwrap();
    if let Some(problem) = service.sandbox_problem() {
        panic!("{problem}; run `bash .ci/system-deps`");
    }
    let created = service
        .create(&owner.id, false, CreateRequest { template_id: "blank".into(), ..CreateRequest::default() })
        .await
        .unwrap();
    let workspace = service.wait_settled(&created.id, Duration::from_secs(30)).await.unwrap();

    let mut start_ms = Vec::new();
    for _ in 0..starts {
        service.desktops().end(&workspace.id);
        // The ended X server's process goes in the background; let it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let desktop = service.desktop(&workspace).await.unwrap();
        start_ms.push(ms(started.elapsed()));
        assert!(desktop.alive());
    }
    let desktop = service.desktop(&workspace).await.unwrap();
    // Idle: the window manager has drawn, nothing runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = desktop_rss_kib();

    // Something on screen besides the background: a terminal-like window of text.
    let spec = toolhost::workspace::sandbox::CommandSpec {
        command: "xsetroot -solid '#336699'; xterm -geometry 100x40+50+50 -e 'ls -la /usr/bin; sleep 600' &".into(),
        ..Default::default()
    };
    service.run(&workspace, spec, Duration::from_secs(10), false).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (mut png_ms, mut capture_ms, mut jpeg_ms, mut png_bytes) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..shots {
        let started = Instant::now();
        let shot = desktop.screenshot(Format::Png, None).await.unwrap();
        png_ms.push(ms(started.elapsed()));
        capture_ms.push(ms(shot.capture));
        png_bytes = shot.bytes.len();
        let started = Instant::now();
        desktop.screenshot(Format::Jpeg, None).await.unwrap();
        jpeg_ms.push(ms(started.elapsed()));
    }
    let mut action_ms = Vec::new();
    for i in 0..actions {
        let started = Instant::now();
        desktop.move_mouse(((i % 1200) as i64, (i % 700) as i64)).await.unwrap();
        action_ms.push(ms(started.elapsed()));
    }
    service.stop(&workspace.id).await.unwrap();

    let (start_ms, png_ms, capture_ms, jpeg_ms, action_ms) =
        (sorted(start_ms), sorted(png_ms), sorted(capture_ms), sorted(jpeg_ms), sorted(action_ms));
    println!(
        "desktop start p50 {} ms; 1280x800 PNG screenshot p50 {} ms (X capture {} ms, {} KiB); JPEG p50 {} ms; input action p50 {} ms; idle desktop {} MiB",
        percentile(&start_ms, 0.5),
        percentile(&png_ms, 0.5),
        percentile(&capture_ms, 0.5),
        png_bytes / 1024,
        percentile(&jpeg_ms, 0.5),
        percentile(&action_ms, 0.5),
        idle_kib / 1024
    );
    println!(
        "{}",
        json!({
            "desktop_start_ms": {"p50": percentile(&start_ms, 0.5), "p99": percentile(&start_ms, 0.99)},
            "screenshot_png_1280x800_ms": {"p50": percentile(&png_ms, 0.5), "p99": percentile(&png_ms, 0.99)},
            "screenshot_capture_ms": {"p50": percentile(&capture_ms, 0.5)},
            "screenshot_jpeg_1280x800_ms": {"p50": percentile(&jpeg_ms, 0.5)},
            "screenshot_png_bytes": png_bytes,
            "input_action_ms": {"p50": percentile(&action_ms, 0.5), "p99": percentile(&action_ms, 0.99)},
            "idle_desktop_rss_mib": idle_kib as f64 / 1024.0,
        })
    );
}
