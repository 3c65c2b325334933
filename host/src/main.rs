use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
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
