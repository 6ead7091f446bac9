//! `larder migrate`: bring the database schema up to this version.

use clap::Args;

use super::store::DbArgs;
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
    pub db: DbArgs,
}

/// Applies the embedded migrations.
pub async fn run(args: MigrateArgs) -> Result<(), CliError> {
    // Only the embedded database lives in the data dir; a migration of a named one
    // (a Job, an operator's shell) must not leave a `larder-data/` wherever it ran.
    if args.db.embedded_database() {
        args.db.ensure_writable_data_dir()?;
    }
    let db = crate::db::Db::connect(&args.db.database_url()).await?;
    db.migrate().await?;
    eprintln!("database schema is up to date");
    Ok(())
}
