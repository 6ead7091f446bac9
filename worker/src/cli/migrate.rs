//! `larder migrate`: bring the database schema up to this version.

use clap::Args;

use super::store::StoreArgs;
use super::CliError;

/// Apply database migrations and exit (run before rolling out a new version)
///
/// Workers on PostgreSQL refuse to start on an older schema unless given --migrate;
/// the embedded SQLite database of `larder serve` is migrated on every start.
///
/// Example:
///
///   larder migrate --database postgres://larder@db/larder
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Applies the embedded migrations.
pub async fn run(args: MigrateArgs) -> Result<(), CliError> {
    let db = args.store.connect_db().await?;
    db.migrate().await?;
    eprintln!("database schema is up to date");
    Ok(())
}
