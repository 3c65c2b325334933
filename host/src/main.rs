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
    // Logs go to stderr so that command output on stdout stays machine-readable.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match toolhost::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toolhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}
