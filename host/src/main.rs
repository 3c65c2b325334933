use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("toolhost: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // Work still blocking a thread (a file read in a workspace, say) does not hold the exit up:
    // a shutdown's bound is kept by `serve` and this.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn run() -> ExitCode {
    let cli = toolhost::cli::Cli::parse();
    if let Err(message) = start_logging() {
        eprintln!("toolhost: {message}");
        return ExitCode::FAILURE;
    }
    match toolhost::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toolhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, so that command output on stdout stays machine-readable: as text, or as
/// one JSON object per line (`TOOLHOST_LOG_FORMAT=json`) with the fields of the spans each
/// line happened in (`chat_id`, `tool`, `plugin`, ...), for a log collector.
fn start_logging() -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("TOOLHOST_LOG_FORMAT").unwrap_or_default().as_str() {
        "" | "text" => logs.init(),
        "json" => logs.json().with_current_span(true).with_span_list(true).init(),
        other => return Err(format!("TOOLHOST_LOG_FORMAT is `{other}`: use `text` (the default) or `json`")),
    }
    Ok(())
}
