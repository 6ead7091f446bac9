//! `larder serve`: run a worker. With no flags, a whole single-node cache in ./larder-data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::auth::{Scope, Tokens};
use crate::nix::SecretKey;
use crate::server::state::{AppState, ReadOptions};

use super::store::StoreArgs;
use super::CliError;

/// Run a worker: upload API, read proxy, metrics
///
/// With no flags, a whole cache on this machine: SQLite and objects in ./larder-data,
/// and a signing key and a push token generated there on first start. It prints the
/// lines to add to nix.conf and the command to push with. With --database and
/// --storage s3://… it is one stateless worker of a shared cache (run `larder migrate`
/// first, or pass --migrate). Every flag can also be set by the variable shown as env.
///
/// Examples:
///
///   larder serve
///
///   larder serve --listen 0.0.0.0:5050 --public-url https://cache.example.org \
///     --database postgres://larder@db/larder --storage s3://my-cache \
///     --signing-key-file /run/secrets/signing-key --token-file /run/secrets/tokens
///
/// Stops on SIGINT or SIGTERM, after finishing the requests in flight.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LARDER_LISTEN", default_value = "127.0.0.1:5050",
          value_parser = super::values::listen)]
    pub listen: SocketAddr,
    /// URL clients reach this worker at (default: http://<listen address>).
    #[arg(long, env = "LARDER_PUBLIC_URL", value_name = "URL", value_parser = super::values::http_url)]
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
    #[arg(long, env = "LARDER_NARINFO_CACHE_SIZE", default_value = "32MiB",
          value_parser = super::values::size)]
    pub narinfo_cache_size: bytesize::ByteSize,
    /// How long a cached narinfo is served: a narinfo deleted by a collection on another
    /// worker, or rewritten, may be served this much longer (the proxy tells HTTP caches
    /// they may keep narinfos for 5 minutes).
    #[arg(long, env = "LARDER_NARINFO_CACHE_TTL", default_value = "30s", value_parser = super::values::duration)]
    pub narinfo_cache_ttl: std::time::Duration,
    /// How long a client may take to send a request's headers; an idle keep-alive
    /// connection is closed after as long. Bounds the connections a slow or idle client
    /// can hold open.
    #[arg(long, env = "LARDER_HEADER_TIMEOUT", default_value = "30s", value_parser = super::values::duration)]
    pub header_timeout: std::time::Duration,
    /// Apply database migrations before serving (always done for the embedded SQLite).
    #[arg(long, env = "LARDER_MIGRATE")]
    pub migrate: bool,
}

/// Runs the worker until SIGINT/SIGTERM.
///
/// Everything the flags name is checked, and the port taken, before anything is
/// created: a refused start leaves no data dir, database or generated key behind.
pub async fn run(args: ServeArgs, log_format: super::LogFormat) -> Result<(), CliError> {
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        let addr = args.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}", addr.port())
    });
    let given_keys = read_signing_keys(&args.signing_key_files)?;
    let given_tokens = args.token_file.as_deref().map(read_tokens).transpose()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| listen_error(args.listen, e))?;
    let store = &args.store;
    // A database named by --database is only created when asked to migrate it.
    let db = if args.migrate || store.db.embedded_database() {
        store.connect_db().await?
    } else {
        store.db.connect_existing_db().await?
    };
    if args.migrate || store.db.embedded_database() {
        db.migrate().await?;
    } else {
        db.check_schema().await?;
    }
    let storage = store.open_storage(&public_url).await?;
    if given_keys.is_none() || given_tokens.is_none() {
        // Generated defaults (key, token) live in the data dir even when the database
        // and objects are elsewhere.
        store.db.ensure_writable_data_dir()?;
    }
    let keys = match given_keys {
        Some(keys) => keys,
        None => default_signing_key(&store.db.data_dir)?,
    };
    let (tokens, token_file) = match given_tokens {
        Some(tokens) => (tokens, None),
        None => default_token(&store.db.data_dir)?,
    };
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
    if log_format == super::LogFormat::Json {
        // A log collector wants one event, not a banner for a person.
        let public: Vec<String> = keys.iter().map(|k| k.public_key().to_string()).collect();
        tracing::info!(url = %public_url, public_keys = %public.join(" "), "serving");
    } else {
        print_welcome(&public_url, &keys, token_file.as_deref());
    }
    crate::server::serve(listener, crate::server::router(state), args.header_timeout)
        .await
        .map_err(CliError::io("serve HTTP"))
}

/// Why the port cannot be had, and what to do about it.
fn listen_error(addr: SocketAddr, e: std::io::Error) -> CliError {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there (another larder serve?): stop it, or pick \
             another address with --listen"
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: pick another with --listen"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface of this machine has that address: use 127.0.0.1 or 0.0.0.0"
        }
        _ => "",
    };
    CliError::Message(format!("cannot listen on {addr}: {e}{hint}"))
}

/// The keys of `--signing-key-file`, or None when none was given.
fn read_signing_keys(files: &[PathBuf]) -> Result<Option<Vec<SecretKey>>, CliError> {
    if files.is_empty() {
        return Ok(None);
    }
    files
        .iter()
        .map(|path| read_signing_key(path))
        .collect::<Result<_, _>>()
        .map(Some)
}

fn read_signing_key(path: &Path) -> Result<SecretKey, CliError> {
    let text = crate::secret_file::read(path, "the signing key")
        .map_err(|e| CliError::Message(e.to_string()))?;
    if text.is_empty() {
        return Err(CliError::Message(format!(
            "{}: the signing key file is empty; `larder keygen NAME > FILE` makes one",
            path.display()
        )));
    }
    SecretKey::parse(&text).map_err(|e| CliError::Message(format!("{}: {e}", path.display())))
}

/// Writes a file readable by its owner only, refusing to replace an existing one; it
/// appears whole or not at all ([`crate::secret_file::create_whole`]).
fn write_private(path: &Path, contents: &str) -> Result<(), CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = format!(".tmp-{}-{nanos}", std::process::id());
    crate::secret_file::create_whole(path, &temp, contents.as_bytes())
        .map_err(CliError::io(format!("create {}", path.display())))
}

/// Whether a generated file must be made: it is absent, or was empty (removed here, see
/// [`crate::secret_file::remove_if_blank`]).
fn needs_generating(path: &Path) -> Result<bool, CliError> {
    crate::secret_file::remove_if_blank(path)
        .map_err(CliError::io(format!("remove {}", path.display())))?;
    Ok(!path.exists())
}

/// `signing-key` in the data dir, generated on first start.
fn default_signing_key(data_dir: &Path) -> Result<Vec<SecretKey>, CliError> {
    let path = data_dir.join("signing-key");
    if needs_generating(&path)? {
        let key = super::keygen::generate("larder-local-1")?;
        write_private(&path, &format!("{}\n", key.to_nix_string()))?;
    }
    Ok(vec![read_signing_key(&path)?])
}

/// The tokens of `--token-file` (empty, e.g. /dev/null: nobody may push).
fn read_tokens(path: &Path) -> Result<Tokens, CliError> {
    let text = crate::secret_file::read(path, "the tokens")
        .map_err(|e| CliError::Message(e.to_string()))?;
    Tokens::parse(&text).map_err(|e| CliError::Message(format!("{}: {e}", path.display())))
}

/// The generated push token (`push-token` in the data dir, made on first start), and
/// its file.
fn default_token(data_dir: &Path) -> Result<(Tokens, Option<PathBuf>), CliError> {
    let path = data_dir.join("push-token");
    if needs_generating(&path)? {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| CliError::Message(format!("no system randomness: {e}")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, &format!("{token}\n"))?;
    }
    let token = crate::secret_file::read(&path, "the push token")
        .map_err(|e| CliError::Message(e.to_string()))?;
    if token.is_empty() {
        return Err(CliError::Message(format!(
            "{} is empty: delete it and a new push token is generated",
            path.display()
        )));
    }
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
