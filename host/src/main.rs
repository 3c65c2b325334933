use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = toolhost::cli::Cli::parse();
    // Before the async runtime: the trace exporter's HTTP client blocks, and must be made and
    // dropped outside it.
    let telemetry = match toolhost::telemetry::start() {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("toolhost: {message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("toolhost: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(cli));
    // Work still blocking a thread (a file read in a workspace, say) does not hold the exit up:
    // a shutdown's bound is kept by `serve` and this.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    telemetry.shutdown();
    code
}

async fn run(cli: toolhost::cli::Cli) -> ExitCode {
    match toolhost::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("toolhost: {error:#}");
            ExitCode::FAILURE
        }
    }
}
