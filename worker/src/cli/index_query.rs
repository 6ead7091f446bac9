//! `larder index query`: what a cache's index says about store paths, as a client sees it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ruint::aliases::U160;
use serde::Serialize;

use crate::index::client::IndexClient;
use crate::index::hash::parse_hash;
use crate::index::query::Answer;
use crate::nix::StorePath;

use super::CliError;

/// Ask a cache's index about store paths
///
/// Each answer is absent, probably-present, present, or unknown (the index cannot tell:
/// ask for the narinfo), printed with its argument, one per line. A cache without an
/// index, or an unusable one, answers unknown.
///
/// Example:
///
///   larder index query --cache http://127.0.0.1:5050 ./result /nix/store/…-hello-2.12
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct QueryArgs {
    /// The cache's URL (where `nix-cache-info` is).
    #[arg(long, env = "LARDER_CACHE", value_name = "URL", value_parser = super::values::http_url)]
    pub cache: String,
    /// File holding a token with the read scope, for caches that require one.
    #[arg(long, env = "LARDER_READ_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print one JSON object: every answer, and how many requests they took.
    #[arg(long)]
    pub json: bool,
    /// Store paths (`/nix/store/<hash>-<name>`), their base names, or bare hash parts.
    #[arg(required = true, value_name = "PATH|HASH")]
    pub paths: Vec<String>,
}

/// One answer of the JSON output.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct QueryAnswer {
    /// The argument as given.
    pub path: String,
    /// Its hash part.
    pub hash: String,
    /// `absent`, `probably-present`, `present` or `unknown`.
    pub answer: &'static str,
}

/// The JSON output.
#[derive(Debug, Serialize)]
pub struct QueryOutput {
    /// One per argument, in order.
    pub answers: Vec<QueryAnswer>,
    /// HTTP requests made (manifest, journal segments, shards).
    pub requests: u64,
}

/// The hash part an argument names: a store path, a base name, or a bare hash part.
pub fn hash_part(arg: &str) -> Result<String, String> {
    let trimmed = arg.trim_end_matches('/');
    let hash = if trimmed.starts_with('/') {
        // A file inside a store path names that path too.
        crate::push::closure::store_path_of(std::path::Path::new(trimmed))
            .map(|p| p.hash_part().to_owned())
            .ok_or_else(|| format!("not inside {}", crate::nix::store_path::STORE_DIR))
    } else if trimmed.len() == 32 {
        Ok(trimmed.to_owned())
    } else {
        StorePath::from_basename(trimmed)
            .map(|p| p.hash_part().to_owned())
            .map_err(|e| e.to_string())
    }
    .map_err(|e| format!("{arg}: {e}"))?;
    parse_hash(&hash).map_err(|e| format!("{arg}: {e}"))?;
    Ok(hash)
}

/// The word for an answer.
pub fn word(answer: Answer) -> &'static str {
    match answer {
        Answer::Absent => "absent",
        Answer::ProbablyPresent => "probably-present",
        Answer::Present => "present",
        Answer::Unknown => "unknown",
    }
}

/// Asks the cache's index about every argument and prints the answers.
pub async fn run(args: QueryArgs) -> Result<(), CliError> {
    let hashes: Vec<String> = args
        .paths
        .iter()
        .map(|p| hash_part(p))
        .collect::<Result<_, _>>()
        .map_err(CliError::Message)?;
    let values: Vec<U160> = hashes.iter().filter_map(|h| parse_hash(h).ok()).collect();
    let token = match &args.token_file {
        Some(path) => {
            let token = crate::secret_file::read(path, "the read token")
                .map_err(|e| CliError::Message(e.to_string()))?;
            if token.is_empty() {
                return Err(CliError::Message(format!(
                    "{}: the token file is empty; it should hold a token with the read scope",
                    path.display()
                )));
            }
            Some(token)
        }
        None => None,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("larder-index-query/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::Message(format!("cannot set up HTTP: {e}")))?;
    let client =
        IndexClient::new(http, &args.cache, token).map_err(|e| CliError::Message(e.to_string()))?;
    let answers = match client.manifest().await {
        Ok(Some(manifest)) => client.query(&manifest, &values).await,
        Ok(None) => {
            eprintln!("{} publishes no binary cache index", args.cache);
            vec![Answer::Unknown; values.len()]
        }
        Err(e) => {
            eprintln!("the index of {} is unusable: {e}", args.cache);
            vec![Answer::Unknown; values.len()]
        }
    };
    let answers: Vec<QueryAnswer> = args
        .paths
        .into_iter()
        .zip(hashes)
        .zip(answers)
        .map(|((path, hash), a)| QueryAnswer {
            path,
            hash,
            answer: word(a),
        })
        .collect();
    if args.json {
        let out = QueryOutput {
            answers,
            requests: client.requests(),
        };
        println!("{}", serde_json::to_string(&out).unwrap_or_default());
    } else {
        for a in &answers {
            println!("{}\t{}", a.answer, a.path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";

    #[test]
    fn arguments_name_hash_parts() {
        for arg in [
            format!("/nix/store/{H}-hello-2.12"),
            format!("/nix/store/{H}-hello-2.12/"),
            format!("/nix/store/{H}-hello-2.12/bin/hello"),
            format!("{H}-hello-2.12"),
            H.to_string(),
        ] {
            assert_eq!(hash_part(&arg).unwrap_or_default(), H, "{arg}");
        }
        for bad in [
            "",
            "hello",
            "/nix/store/x-y",
            "/etc/passwd",
            &format!("{}e", &H[..31]),
        ] {
            assert!(hash_part(bad).is_err(), "{bad}");
        }
        assert_eq!(word(Answer::ProbablyPresent), "probably-present");
    }
}
