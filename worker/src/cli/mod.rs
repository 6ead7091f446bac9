//! The `larder` command line: one file per subcommand.

pub mod fsck;
pub mod gc;
pub mod index;
pub mod index_query;
pub mod keygen;
pub mod migrate;
pub mod serve;
pub mod store;
pub mod values;

use clap::{Parser, Subcommand};

/// Larder: a Nix binary cache on S3 with closure-aware garbage collection.
///
/// Start with `larder serve`: with no flags it runs a complete cache in ./larder-data
/// (SQLite and a local folder) and prints how to push to it and substitute from it.
#[derive(Debug, Parser)]
#[command(name = "larder", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text, or one JSON object per line for a log collector. Which lines:
    /// `LARDER_LOG` (e.g. `info`, `debug`, `larder_worker=debug`).
    #[arg(long, global = true, env = "LARDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured at a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands; each one's help (examples included) is the doc of its arguments.
#[derive(Debug, Subcommand)]
pub enum Command {
    Serve(serve::ServeArgs),
    Push(crate::push::args::PushArgs),
    Gc(gc::GcArgs),
    Fsck(fsck::FsckArgs),
    /// The binary cache index (RFC 0195): build and publish it, or query a cache's.
    Index(index::IndexArgs),
    Migrate(migrate::MigrateArgs),
    Keygen(keygen::KeygenArgs),
}

/// Errors of a subcommand, printed once by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Push(#[from] crate::push::PushError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let context = context.into();
        move |source| CliError::Io { context, source }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.log_format).await,
        Command::Push(args) => Ok(crate::push::args::run(args).await.map(drop)?),
        Command::Gc(args) => gc::run(args).await,
        Command::Fsck(args) => fsck::run(args).await,
        Command::Index(args) => index::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Keygen(args) => keygen::run(args),
    }
}
