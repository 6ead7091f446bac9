//! `larder serve`: run a worker. With no flags, a whole single-node cache in ./larder-data.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::auth::{Scope, Tokens};
use crate::nix::SecretKey;
use crate::server::state::{AppState, ReadOptions};

use super::store::StoreArgs;
use super::CliError;

/// Arguments of `larder serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LARDER_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// URL clients reach this worker at (default: http://<listen address>).
    #[arg(long, env = "LARDER_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Signing key file(s) in Nix's `name:base64` format; repeat for key rotation
    /// (default: `signing-key` in the data dir, generated on first start).
    #[arg(
        long = "signing-key-file",
        env = "LARDER_SIGNING_KEY_FILE",
        value_delimiter = ','
    )]
    pub signing_key_files: Vec<PathBuf>,
    /// Token file: lines of `<token> <scopes> [name]` (default: a generated push token
    /// in `push-token` in the data dir, with push and admin scopes).
    #[arg(long, env = "LARDER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Require a token with the `read` scope to read the cache (Nix sends it from netrc).
    #[arg(long, env = "LARDER_READ_AUTH")]
    pub read_auth: bool,
    /// Answer NAR reads with a 307 redirect to a presigned S3 URL instead of streaming.
    #[arg(long, env = "LARDER_REDIRECT_NARS")]
    pub redirect_nars: bool,
    /// `Priority` advertised in nix-cache-info (lower wins; cache.nixos.org is 40).
    #[arg(long, env = "LARDER_PRIORITY", default_value_t = 30)]
    pub priority: u32,
    /// Memory for narinfos read recently through the proxy, answered without asking the
    /// bucket again (0 turns it off). Misses are never remembered.
    #[arg(long, env = "LARDER_NARINFO_CACHE_SIZE", default_value = "32MiB")]
    pub narinfo_cache_size: bytesize::ByteSize,
    /// How long a cached narinfo is served: a narinfo deleted by a collection on another
    /// worker, or rewritten, may be served this much longer (the proxy tells HTTP caches
    /// they may keep narinfos for 5 minutes).
    #[arg(long, env = "LARDER_NARINFO_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub narinfo_cache_ttl: std::time::Duration,
    /// Apply database migrations before serving (always done for the embedded SQLite).
    #[arg(long, env = "LARDER_MIGRATE")]
    pub migrate: bool,
}

/// Runs the worker until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        let addr = args.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}", addr.port())
    });
    let store = &args.store;
    let db = store.connect_db().await?;
    if args.migrate || store.embedded_database() {
        db.migrate().await?;
    } else {
        db.check_schema().await?;
    }
    let storage = store.open_storage(&public_url).await?;
    if args.signing_key_files.is_empty() || args.token_file.is_none() {
        // Generated defaults (key, token) live in the data dir even when the database
        // and objects are elsewhere.
        std::fs::create_dir_all(&store.data_dir)
            .map_err(CliError::io(format!("create {}", store.data_dir.display())))?;
    }
    let keys = signing_keys(&args)?;
    let (tokens, token_file) = tokens(&args)?;
    tokio::spawn(crate::index::publish::run(
        db.clone(),
        storage.clone(),
        crate::index::publish::PublisherConfig {
            public_url: public_url.clone(),
            timing: crate::index::plan::JournalTiming::default(),
            interval: std::time::Duration::from_secs(1),
        },
    ));
    let state = AppState::new(
        db,
        storage,
        keys.clone(),
        tokens,
        public_url.clone(),
        ReadOptions {
            require_auth: args.read_auth,
            redirect_nars: args.redirect_nars,
            priority: args.priority,
            narinfo_cache_bytes: args.narinfo_cache_size.as_u64(),
            narinfo_cache_ttl: args.narinfo_cache_ttl,
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(CliError::io(format!("listen on {}", args.listen)))?;
    print_welcome(&public_url, &keys, token_file.as_deref());
    crate::server::serve(listener, crate::server::router(state))
        .await
        .map_err(CliError::io("serve HTTP"))
}

fn read_secret(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(CliError::io(format!("read {}", path.display())))
}

/// Writes a file readable by its owner only, refusing to replace an existing one.
fn write_private(path: &Path, contents: &str) -> Result<(), CliError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(CliError::io(format!("create {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(CliError::io(format!("write {}", path.display())))
}

fn signing_keys(args: &ServeArgs) -> Result<Vec<SecretKey>, CliError> {
    let mut files = args.signing_key_files.clone();
    if files.is_empty() {
        let default = args.store.data_dir.join("signing-key");
        if !default.exists() {
            let key = super::keygen::generate("larder-local-1")?;
            write_private(&default, &format!("{}\n", key.to_nix_string()))?;
        }
        files.push(default);
    }
    files
        .iter()
        .map(|path| {
            SecretKey::parse(&read_secret(path)?)
                .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// The accepted tokens, and the generated push token's file when there is one.
fn tokens(args: &ServeArgs) -> Result<(Tokens, Option<PathBuf>), CliError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(CliError::io(format!("read {}", path.display())))?;
        let tokens = Tokens::parse(&text)
            .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
        return Ok((tokens, None));
    }
    let path = args.store.data_dir.join("push-token");
    if !path.exists() {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| CliError::Message(format!("no system randomness: {e}")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &format!("{token}\n"))?;
    }
    let token = read_secret(&path)?;
    // The embedded default has one user: the one who started it.
    Ok((
        Tokens::single(&token, &[Scope::Push, Scope::Admin], "local"),
        Some(path),
    ))
}

fn print_welcome(url: &str, keys: &[SecretKey], token_file: Option<&Path>) {
    let public: Vec<String> = keys.iter().map(|k| k.public_key().to_string()).collect();
    eprintln!("larder is serving {url}");
    eprintln!();
    eprintln!("Use it from Nix (nix.conf, or --option on the command line):");
    eprintln!("  extra-substituters = {url}");
    eprintln!("  extra-trusted-public-keys = {}", public.join(" "));
    eprintln!();
    let token = token_file.map_or_else(
        || "--token-file <your token file>".to_string(),
        |p| format!("--token-file {}", p.display()),
    );
    eprintln!("Push a closure to it:");
    eprintln!("  larder push --server {url} {token} ./result");
    eprintln!();
    eprintln!("Substitute from it:");
    eprintln!(
        "  nix copy --from {url} --option trusted-public-keys '{}' /nix/store/<path>",
        public.join(" ")
    );
}
