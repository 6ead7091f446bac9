//! `larder push`: the command line, and running it (progress, summaries).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;

use super::retry::RetryPolicy;
use super::{push, PushError, PushOptions, PushSummary};

/// Upload store paths and their closures to a Larder (or niks3) cache
///
/// Every path's NAR is read from the local store, checked against the NarHash Nix
/// recorded, compressed with zstd and uploaded with its `.ls` listing and, when the
/// local store has one, its build log. The worker signs the narinfos; this command never
/// holds a signing key. Paths the cache already has are skipped after one request, but
/// every path is still read and compressed first (the upload request declares the
/// compressed hash so storage can verify the bytes).
///
/// Examples:
///
///   larder push --server https://cache.example.org --token-file /run/secrets/push ./result
///
///   LARDER_SERVER=http://127.0.0.1:5050 LARDER_TOKEN=$(cat larder-data/push-token) \
///     larder push /nix/store/…-hello-2.12
///
/// Progress bars appear when stderr is a terminal; a one-line summary is always printed
/// on stderr, and with --json also as JSON on stdout.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct PushArgs {
    /// Paths to push with their closures: `./result` symlinks, store paths, or files
    /// inside store paths.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Base URL of the worker (`larder serve` prints it).
    #[arg(long, env = "LARDER_SERVER", value_name = "URL", value_parser = crate::cli::values::http_url)]
    pub server: String,

    /// Push token (a bearer token with the push scope).
    #[arg(
        long,
        env = "LARDER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// File holding the push token (e.g. `larder-data/push-token` of `larder serve`).
    #[arg(long, env = "LARDER_PUSH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Paths read and compressed, and uploads sent, at once.
    #[arg(long, short = 'j', env = "LARDER_PUSH_JOBS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,

    /// zstd compression level of NARs, listings, logs and narinfos (1 fast … 19 small).
    #[arg(long, env = "LARDER_PUSH_COMPRESSION_LEVEL", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,

    /// Size of multipart upload parts (at least 5MiB, S3's minimum).
    #[arg(long, env = "LARDER_PUSH_PART_SIZE", default_value = "10MiB", value_parser = parse_part_size)]
    pub part_size: ByteSize,

    /// Compressed NARs kept in memory between compressing and uploading; the rest wait
    /// in temporary files (TMPDIR).
    #[arg(long, env = "LARDER_PUSH_MEMORY_BUDGET", default_value = "256MiB",
          value_parser = crate::cli::values::size)]
    pub memory_budget: ByteSize,

    /// Attempts per request before giving up (429/503 honour Retry-After).
    #[arg(long, env = "LARDER_PUSH_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,

    /// Timeout of one request without progress (e.g. `30s`, `5m`).
    #[arg(long, env = "LARDER_PUSH_TIMEOUT", default_value = "5m", value_parser = crate::cli::values::duration)]
    pub timeout: Duration,

    /// Do not upload build logs.
    #[arg(long)]
    pub no_build_logs: bool,

    /// Print a one-line JSON summary on stdout: paths_total, paths_uploaded,
    /// objects_uploaded, bytes_uploaded, duration_ms.
    #[arg(long)]
    pub json: bool,

    /// No progress bars, even on a terminal.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// The `nix` program (for `nix path-info`).
    #[arg(long, env = "LARDER_NIX", default_value = "nix", hide = true)]
    pub nix: PathBuf,

    /// The `nix-store` program (for `nix-store --read-log`).
    #[arg(
        long,
        env = "LARDER_NIX_STORE",
        default_value = "nix-store",
        hide = true
    )]
    pub nix_store: PathBuf,
}

fn parse_part_size(raw: &str) -> Result<ByteSize, String> {
    let size = crate::cli::values::size(raw)?;
    if size.as_u64() < super::upload::MIN_PART_SIZE {
        return Err(format!("{raw} is below S3's minimum part size of 5MiB"));
    }
    Ok(size)
}

impl PushArgs {
    /// The options these arguments ask for, with the token read from its file.
    pub fn options(&self) -> Result<PushOptions, PushError> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(file)) => {
                let token = crate::secret_file::read(file, "the push token")
                    .map_err(|e| PushError::Config(e.to_string()))?;
                if token.is_empty() {
                    // Pushing without a token would only earn a 401 from the server.
                    return Err(PushError::Input {
                        path: file.display().to_string(),
                        message: "the token file is empty; it should hold the push token \
                                  (`larder serve` writes one to push-token in its data dir)"
                            .into(),
                    });
                }
                Some(token)
            }
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        let mut options = PushOptions::new(self.server.clone(), self.paths.clone());
        options.token = token;
        options.jobs = usize::from(self.jobs);
        options.compression_level = self.compression_level;
        options.part_size = self.part_size.as_u64();
        options.memory_budget = self.memory_budget.as_u64();
        options.retry = RetryPolicy {
            attempts: self.attempts,
            ..RetryPolicy::default()
        };
        options.timeout = self.timeout;
        options.build_logs = !self.no_build_logs;
        options.nix = self.nix.clone();
        options.nix_store = self.nix_store.clone();
        options.progress = !self.quiet && std::io::stderr().is_terminal();
        Ok(options)
    }
}

/// Runs `larder push`: pushes, then prints the summary (stderr; stdout with `--json`).
pub async fn run(args: PushArgs) -> Result<PushSummary, PushError> {
    let summary = push(args.options()?).await?;
    eprintln!("larder push: {}", summary.human());
    if args.json {
        println!("{}", summary.json());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        push: PushArgs,
    }

    #[test]
    fn defaults_and_sizes() {
        let cli =
            Cli::try_parse_from(["push", "--server", "http://x", "--token", " t ", "./result"])
                .unwrap();
        let o = cli.push.options().unwrap();
        assert_eq!(o.token.as_deref(), Some("t"));
        assert_eq!((o.jobs, o.compression_level), (4, 3));
        assert_eq!(o.part_size, 10 * 1024 * 1024);
        assert_eq!(o.memory_budget, 256 * 1024 * 1024);
        assert_eq!(o.paths, [PathBuf::from("./result")]);
        let cli = Cli::try_parse_from([
            "push",
            "--server",
            "http://x",
            "--part-size",
            "64MiB",
            "--jobs",
            "8",
            "/nix/store/a",
        ])
        .unwrap();
        assert_eq!(cli.push.options().unwrap().part_size, 64 * 1024 * 1024);
        assert!(
            Cli::try_parse_from(["push", "--server", "http://x", "--part-size", "1MiB", "p"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["push", "--server", "http://x", "--jobs", "0", "p"]).is_err());
        assert!(
            Cli::try_parse_from(["push", "--server", "http://x"]).is_err(),
            "a path is required"
        );
    }

    #[test]
    fn token_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "secret\n").unwrap();
        let f = file.to_str().unwrap();
        let cli =
            Cli::try_parse_from(["push", "--server", "http://x", "--token-file", f, "p"]).unwrap();
        assert_eq!(cli.push.options().unwrap().token.as_deref(), Some("secret"));
        let missing = dir.path().join("missing");
        let cli = Cli::try_parse_from([
            "push",
            "--server",
            "http://x",
            "--token-file",
            missing.to_str().unwrap(),
            "p",
        ])
        .unwrap();
        let e = cli.push.options().unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("push token"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let cli = Cli::try_parse_from([
            "push",
            "--server",
            "http://x",
            "--token-file",
            empty.to_str().unwrap(),
            "p",
        ])
        .unwrap();
        let e = cli.push.options().unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("push-token"), "{e}");
        assert!(Cli::try_parse_from([
            "push",
            "--server",
            "http://x",
            "--token",
            "a",
            "--token-file",
            f,
            "p"
        ])
        .is_err());
    }
}
