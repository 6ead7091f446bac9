//! The `larder` command.

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LARDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: log files and `kubectl logs` would
        // show the escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = larder_worker::cli::Cli::parse();
    match larder_worker::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
