//! Where the database and the objects are: flags shared by every subcommand that needs them.

use std::path::PathBuf;

use clap::Args;

use crate::db::{sqlite_file, Db};
use crate::storage::{DirStore, S3Config, S3Store, Storage};

use super::CliError;

/// Where the database is. With no `--database`, it is SQLite in `--data-dir`.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Folder of the embedded default: SQLite database, objects, keys, push token.
    #[arg(long, env = "LARDER_DATA_DIR", default_value = "larder-data")]
    pub data_dir: PathBuf,
    /// Database URL: `postgres://user@host/db` or `sqlite:///path/larder.db`
    /// (default: SQLite in the data dir).
    #[arg(long, env = "LARDER_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
}

/// Database and storage location. With neither `--database` nor an S3 bucket, everything
/// lives in `--data-dir` (the embedded default `larder serve` creates).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Object storage: `s3://bucket[/prefix]` (details via the --s3-* flags) or a folder
    /// (default: `objects/` in the data dir).
    #[arg(long, env = "LARDER_STORAGE")]
    pub storage: Option<String>,
    #[command(flatten)]
    pub s3: S3Config,
}

impl DbArgs {
    /// True when the database is the embedded SQLite one (created and migrated freely).
    pub fn embedded_database(&self) -> bool {
        self.database.is_none()
    }

    /// The database URL to use.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("larder.db").display()),
        }
    }

    /// Creates the data dir and checks this user may write into it, so that a bad
    /// `--data-dir` is named as such rather than as SQLite's "unable to open database file".
    pub fn ensure_writable_data_dir(&self) -> Result<(), CliError> {
        let dir = &self.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::Message(format!(
                "cannot create the data dir {}: {e}; pick another with --data-dir",
                dir.display()
            ))
        })?;
        // The probe file is removed when dropped.
        tempfile::Builder::new()
            .prefix(".larder-write-check")
            .tempfile_in(dir)
            .map(drop)
            .map_err(|e| {
                // The kind alone: tempfile's message names its random probe file.
                CliError::Message(format!(
                    "cannot write into the data dir {} ({}); give this user write access \
                     or pick another with --data-dir",
                    dir.display(),
                    e.kind()
                ))
            })
    }

    /// Connects to a database that must already exist: for commands that only work on
    /// a cache (gc, fsck, index build, serve without --migrate), where a mistyped
    /// `--data-dir` or `--database` must not leave an empty database behind.
    pub async fn connect_existing_db(&self) -> Result<Db, CliError> {
        if self.embedded_database() {
            let file = self.data_dir.join("larder.db");
            if !file.is_file() {
                return Err(CliError::Message(format!(
                    "no cache in {}: {} does not exist; is --data-dir right? \
                     (`larder serve --data-dir DIR` creates one)",
                    self.data_dir.display(),
                    file.display()
                )));
            }
        } else if let Some(file) = self.database.as_deref().and_then(sqlite_file) {
            if !file.is_file() {
                return Err(CliError::Message(format!(
                    "there is no database at {}: is --database right? (`larder migrate \
                     --database URL` creates one)",
                    file.display()
                )));
            }
        }
        Ok(Db::connect_existing(&self.database_url()).await?)
    }
}

impl StoreArgs {
    /// Creates the data dir when the embedded default needs it.
    pub fn ensure_data_dir(&self) -> Result<(), CliError> {
        if self.db.database.is_none() || self.storage_dir().is_some() {
            self.db.ensure_writable_data_dir()?;
        }
        Ok(())
    }

    /// Connects to the database, creating the embedded one (and the data dir) when
    /// missing: for `serve`.
    pub async fn connect_db(&self) -> Result<Db, CliError> {
        self.ensure_data_dir()?;
        Ok(Db::connect(&self.db.database_url()).await?)
    }

    /// The S3 settings, when the storage is a bucket.
    pub fn s3_config(&self) -> Option<S3Config> {
        let mut s3 = self.s3.clone();
        if let Some(rest) = self
            .storage
            .as_deref()
            .and_then(|s| s.strip_prefix("s3://"))
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            s3.bucket = bucket.to_string();
            if !prefix.is_empty() {
                s3.prefix = prefix.to_string();
            }
        }
        (!s3.bucket.is_empty()).then_some(s3)
    }

    /// The objects folder, when the storage is a local directory.
    pub fn storage_dir(&self) -> Option<PathBuf> {
        if self.s3_config().is_some() {
            return None;
        }
        Some(match self.storage.as_deref() {
            Some(dir) => PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir)),
            None => self.db.data_dir.join("objects"),
        })
    }

    /// Opens the object store; `public_url` is where the worker is reachable (the local
    /// directory's upload URLs point there).
    pub async fn open_storage(&self, public_url: &str) -> Result<Storage, CliError> {
        match (self.s3_config(), self.storage_dir()) {
            (Some(s3), _) => Ok(Storage::S3(S3Store::new(&s3).await?)),
            (None, Some(dir)) => Ok(Storage::Dir(DirStore::open(dir, public_url).await?)),
            (None, None) => Err(CliError::Message("no storage configured".into())),
        }
    }
}
