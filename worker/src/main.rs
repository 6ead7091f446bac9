//! The `larder` command.

use std::io::IsTerminal;

use clap::Parser;
use larder_worker::cli::LogFormat;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = larder_worker::cli::Cli::parse();
    init_tracing(cli.log_format);
    match larder_worker::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LARDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal: log files and `kubectl logs` would
        // show the escape codes.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
