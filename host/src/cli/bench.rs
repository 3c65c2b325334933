//! `toolhost plugin bench`: latency of full tool calls (instantiate, invoke, drop), and for
//! `read_file` the same logic called natively and as a process per call, measured in one run.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{BenchArgs, native, plugin, refuse};
use crate::config::Config;

/// Calls made before measuring, to warm caches and the instance pool.
const WARMUP_CALLS: u32 = 50;
/// Process spawns are slow; this many are enough for stable percentiles.
const MAX_PROCESS_CALLS: u32 = 200;

struct Figures {
    calls: u32,
    p50_us: f64,
    p99_us: f64,
    calls_per_sec: f64,
}

impl Figures {
    fn from(mut samples: Vec<Duration>, total: Duration) -> Figures {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
        Figures {
            calls: samples.len() as u32,
            p50_us: round1(at(0.50)),
            p99_us: round1(at(0.99)),
            calls_per_sec: round1(samples.len() as f64 / total.as_secs_f64()),
        }
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<28} calls={:<6} p50={:>9.1} us  p99={:>9.1} us  {:>10.1} calls/s",
            self.calls, self.p50_us, self.p99_us, self.calls_per_sec
        );
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Times `calls` runs of `f`, each on its own.
fn measure<E>(calls: u32, mut f: impl FnMut() -> Result<(), E>) -> Result<Figures, E> {
    let mut samples = Vec::with_capacity(calls as usize);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(Figures::from(samples, started.elapsed()))
}

pub(super) async fn bench(config: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.calls == 0 {
        return refuse("--calls must be at least 1");
    }
    let request = match plugin::request(&args.call) {
        Ok(request) => request,
        Err(reason) => return refuse(reason),
    };
    let load_started = Instant::now();
    let runtime = crate::app::plugin_runtime(config).await?;
    let load_ms = load_started.elapsed().as_secs_f64() * 1e3;
    let cached = runtime.loaded().plugins().filter(|p| p.from_cache).count();
    let plugins = runtime.loaded().plugins().count();
    println!("loaded {plugins} plugins in {load_ms:.1} ms ({cached} from the compiled-component cache)");

    if let Err(error) = runtime.call(request.clone()).await {
        return refuse(format!("the call fails, so there is nothing to measure: {error}"));
    }
    for _ in 0..WARMUP_CALLS {
        let _ = runtime.call(request.clone()).await;
    }
    let mut samples = Vec::with_capacity(args.calls as usize);
    let started = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        runtime.call(request.clone()).await?;
        samples.push(t.elapsed());
    }
    let sandboxed = Figures::from(samples, started.elapsed());
    sandboxed.print("wasm plugin (full call)");

    let mut summary = json!({
        "tool": args.call.tool,
        "calls": sandboxed.calls,
        "p50_us": sandboxed.p50_us,
        "p99_us": sandboxed.p99_us,
        "calls_per_sec": sandboxed.calls_per_sec,
        "load_ms": round1(load_ms),
        "plugins_loaded": plugins,
        "plugins_from_cache": cached,
    });
    if args.call.tool == "read_file"
        && let Some(workspace) = &args.call.workspace
    {
        let native = measure(args.calls, || native::read_file(workspace, &request.arguments).map(drop))
            .map_err(anyhow::Error::msg)?;
        native.print("native function call");
        let exe = std::env::current_exe()?;
        let spawn = || -> anyhow::Result<()> {
            let status = Command::new(&exe)
                .arg("__native-read-file")
                .arg("--workspace")
                .arg(workspace)
                .arg("--args")
                .arg(&args.call.args)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "the native process failed");
            Ok(())
        };
        let process = measure(args.calls.min(MAX_PROCESS_CALLS), spawn)?;
        process.print("process per call (native)");
        summary["native_p50_us"] = json!(native.p50_us);
        summary["native_calls_per_sec"] = json!(native.calls_per_sec);
        summary["process_p50_us"] = json!(process.p50_us);
        summary["process_calls_per_sec"] = json!(process.calls_per_sec);
    }
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
