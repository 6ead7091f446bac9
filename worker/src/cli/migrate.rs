//! `larder migrate`: bring the database schema up to this version.

use clap::Args;

use super::store::StoreArgs;
use super::CliError;

/// Arguments of `larder migrate`.
#[derive(Debug, Args)]
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
