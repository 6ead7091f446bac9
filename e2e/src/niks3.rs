//! The niks3 client and server, from `e2e/tools/install-niks3.sh`.
//!
//! The client is an outside client the Larder worker must keep serving; the
//! server is what the benchmarks compare Larder against.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, temp_dir, Service};
use crate::tools;

const INSTALL_HINT: &str = "run e2e/tools/install-niks3.sh and export LARDER_NIKS3 and \
     LARDER_NIKS3_SERVER (e2e/run-tests.sh does both)";

/// The niks3 command line client.
pub fn client_binary() -> PathBuf {
    tools::binary("LARDER_NIKS3", None, INSTALL_HINT)
}

/// The niks3 server.
pub fn server_binary() -> PathBuf {
    tools::binary("LARDER_NIKS3_SERVER", None, INSTALL_HINT)
}

/// A `niks3` client command aimed at `server_url`, authenticating with the token in `token_file`.
pub fn client_command(server_url: &str, token_file: &Path) -> Command {
    let mut cmd = Command::new(client_binary());
    cmd.env("NIKS3_SERVER_URL", server_url)
        .env("NIKS3_AUTH_TOKEN_FILE", token_file)
        // Keep a developer's own ~/.config/niks3 out of the test.
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", temp_dir("niks3-home"));
    cmd
}

/// Where a niks3 server keeps its objects: an S3 bucket and a key allowed to use it.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900`.
    pub endpoint: String,
    /// Region the S3 server expects in signatures.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

/// A running niks3 server on 127.0.0.1, killed on drop or with the test binary.
#[derive(Debug)]
pub struct Niks3Server {
    url: String,
    token_file: PathBuf,
    _service: Service,
}

impl Niks3Server {
    /// Starts niks3-server on `database_url` (PostgreSQL) and `s3`, signing narinfos
    /// with `signing_key` (a Nix secret key file) when given.
    pub fn start(database_url: &str, s3: &S3Bucket, signing_key: Option<&Path>) -> Niks3Server {
        let dir = temp_dir("niks3");
        let (endpoint, use_ssl) = minio_endpoint(&s3.endpoint)
            .unwrap_or_else(|| panic!("niks3-server: unusable S3 endpoint {:?}", s3.endpoint));
        let token_file = dir.join("api-token");
        write_secret(&token_file, &api_token());
        let access_key_file = dir.join("s3-access-key");
        write_secret(&access_key_file, &s3.access_key);
        let secret_key_file = dir.join("s3-secret-key");
        write_secret(&secret_key_file, &s3.secret_key);

        let port = free_port();
        let mut cmd = Command::new(server_binary());
        // Secrets go by file so they stay out of the process list.
        cmd.arg(format!("--db={database_url}"))
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .arg(format!("--s3-endpoint={endpoint}"))
            .arg(format!("--s3-use-ssl={use_ssl}"))
            .arg(format!("--s3-region={}", s3.region))
            .arg(format!("--s3-bucket={}", s3.bucket))
            .arg("--s3-bucket-lookup=path")
            .arg(format!(
                "--s3-access-key-path={}",
                access_key_file.display()
            ))
            .arg(format!(
                "--s3-secret-key-path={}",
                secret_key_file.display()
            ))
            .arg(format!("--api-token-path={}", token_file.display()))
            .arg(format!("--cache-url=http://127.0.0.1:{port}"));
        if let Some(key) = signing_key {
            cmd.arg(format!("--sign-key-path={}", key.display()));
        }
        // Its configuration comes from flags only, never from a stray NIKS3_* variable.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NIKS3_") {
                cmd.env_remove(name);
            }
        }
        let mut service = Service::start("niks3-server", cmd, &dir.join("niks3-server.log"));
        // It listens only after migrating the database and initialising the bucket.
        service.wait_for_port(port, Duration::from_secs(60));
        Niks3Server {
            url: format!("http://127.0.0.1:{port}"),
            token_file,
            _service: service,
        }
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// File holding the API token clients authenticate with.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// A `niks3` client command aimed at this server.
    pub fn client(&self) -> Command {
        client_command(&self.url, &self.token_file)
    }
}

/// The `host:port` and TLS flag niks3-server wants for an S3 endpoint URL.
///
/// Its S3 client takes a bare host, so the scheme becomes `--s3-use-ssl`.
pub fn minio_endpoint(url: &str) -> Option<(String, bool)> {
    let (use_ssl, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return None;
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((host.to_string(), use_ssl))
}

/// A random API token; niks3-server wants at least 36 characters.
fn api_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, secret)
        .unwrap_or_else(|e| panic!("niks3-server: cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_scheme_becomes_the_tls_flag() {
        assert_eq!(
            minio_endpoint("http://127.0.0.1:3900"),
            Some(("127.0.0.1:3900".to_string(), false))
        );
        assert_eq!(
            minio_endpoint("https://s3.example:443/"),
            Some(("s3.example:443".to_string(), true))
        );
    }

    #[test]
    fn endpoint_without_scheme_or_with_path_is_refused() {
        assert_eq!(minio_endpoint("127.0.0.1:3900"), None);
        assert_eq!(minio_endpoint("http://127.0.0.1:3900/bucket"), None);
        assert_eq!(minio_endpoint("http://"), None);
    }

    #[test]
    fn api_token_is_long_enough_for_niks3() {
        let token = api_token();
        assert!(token.len() >= 36, "{token}");
        assert_ne!(token, api_token());
    }
}
