//! A single-node Garage (the S3 server) per test binary, one bucket and key per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::process::{free_port, run, temp_dir, unique_name, Service};
use crate::tools::binary;

const HINT: &str = "run e2e/tools/install-garage.sh and export LARDER_GARAGE=<its output>";

/// The region Garage answers to; S3 clients must sign for it.
pub const REGION: &str = "garage";

/// The running Garage node.
#[derive(Debug)]
pub struct Garage {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    _service: Mutex<Service>,
}

/// A bucket and a key that may read and write it, for one test.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// S3 endpoint URL (path-style addressing).
    pub endpoint: String,
    /// Region to sign requests for.
    pub region: String,
    /// Bucket name.
    pub name: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// The log of the Garage node holding the bucket.
    pub log: PathBuf,
}

impl Bucket {
    /// An S3 client signed with this bucket's key (path-style, as Garage wants).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "larder-e2e",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The `larder` flags that point a worker or subcommand at this bucket.
    pub fn larder_args(&self) -> [&str; 11] {
        [
            "--s3-bucket",
            &self.name,
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            &self.region,
            "--s3-path-style",
            "--s3-access-key-id",
            &self.access_key,
            "--s3-secret-access-key",
            &self.secret_key,
        ]
    }

    /// How many `method` requests for `key` in this bucket Garage has logged so far. Garage
    /// logs each S3 request as it arrives (`… GET /bucket/key?query`), so this counts what a
    /// worker asked of storage, whichever client sent it.
    pub fn requests(&self, method: &str, key: &str) -> usize {
        let log = std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.log.display()));
        let target = format!(" {method} /{}/{key}", self.name);
        log.lines()
            // An error is logged again "in response to" the request: count requests once.
            .filter(|line| !line.contains(" in response to "))
            .filter_map(|line| line.split_once(&target).map(|(_, rest)| rest))
            .filter(|rest| rest.is_empty() || rest.starts_with('?'))
            .count()
    }

    /// Every object in the bucket, in key order, all pages read.
    pub async fn list(&self) -> Vec<aws_sdk_s3::types::Object> {
        let s3 = self.client();
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&self.name)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("list bucket {}: {e:?}", self.name));
            found.extend(page.contents().iter().cloned());
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return found,
            }
        }
    }

    /// Deletes one object behind any worker's back (as a collection elsewhere would).
    pub async fn delete(&self, key: &str) {
        self.client()
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {key} from {}: {e:?}", self.name));
    }

    /// The keys of every object in the bucket, in key order.
    pub async fn keys(&self) -> Vec<String> {
        self.list()
            .await
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

impl Garage {
    /// The node shared by every test in this binary, started on first use.
    pub fn shared() -> &'static Garage {
        static NODE: OnceLock<Garage> = OnceLock::new();
        NODE.get_or_init(Garage::start)
    }

    fn start() -> Garage {
        let bin = binary("LARDER_GARAGE", Some("garage"), HINT);
        let dir = temp_dir("garage");
        let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(&config, config_toml(&dir, rpc_port, s3_port, admin_port))
            .expect("write garage.toml");
        let mut cmd = Command::new(&bin);
        cmd.arg("-c").arg(&config).arg("server");
        let log = dir.join("garage.log");
        let mut service = Service::start("garage", cmd, &log);
        service.wait_for_port(rpc_port, Duration::from_secs(60));
        service.wait_for_port(s3_port, Duration::from_secs(60));
        let garage = Garage {
            bin,
            config,
            log,
            s3_port,
            _service: Mutex::new(service),
        };
        garage.apply_single_node_layout();
        garage
    }

    fn cli(&self, what: &str, args: &[&str]) -> String {
        run(
            &format!("garage {what}"),
            Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args),
        )
    }

    fn apply_single_node_layout(&self) {
        let node = self.cli("node id", &["node", "id", "-q"]);
        let id = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(!id.is_empty(), "garage node id printed nothing");
        self.cli(
            "layout assign",
            &["layout", "assign", "-z", "dc1", "-c", "10G", &id],
        );
        self.cli("layout apply", &["layout", "apply", "--version", "1"]);
    }

    /// S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Creates a fresh bucket and a key owning it, for `test`.
    pub fn bucket(&self, test: &str) -> Bucket {
        let name = unique_name(test);
        // Importing a key we generate spares parsing the CLI's human-oriented output.
        let access_key = format!("GK{}", random_hex(12));
        let secret_key = random_hex(32);
        self.cli("bucket create", &["bucket", "create", &name]);
        self.cli(
            "key import",
            &[
                "key",
                "import",
                "--yes",
                "-n",
                &name,
                &access_key,
                &secret_key,
            ],
        );
        self.cli(
            "bucket allow",
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                &name,
                "--key",
                &access_key,
            ],
        );
        Bucket {
            endpoint: self.endpoint(),
            region: REGION.to_string(),
            name,
            access_key,
            secret_key,
            log: self.log.clone(),
        }
    }
}

/// A fresh bucket for `test` on the shared node.
pub fn bucket(test: &str) -> Bucket {
    Garage::shared().bucket(test)
}

/// Garage's block compression: `"none"` unless `LARDER_GARAGE_COMPRESSION` gives a TOML
/// value (`1` is Garage's default). What a Nix cache stores is compressed already (NARs
/// by the client, index shards with zstd), so zstd in Garage spends CPU on every block
/// for nothing (docs/index.md, "Storage settings").
fn compression_level() -> String {
    std::env::var("LARDER_GARAGE_COMPRESSION").unwrap_or_else(|_| r#""none""#.to_string())
}

/// Garage's metadata engine: `lmdb` (Garage's default, what a deployment runs) unless
/// `LARDER_GARAGE_DB_ENGINE` says `sqlite` (also built by `install-garage.sh`; Garage
/// spends more CPU per small PUT with it, docs/benchmarks.md "Index").
fn db_engine() -> String {
    std::env::var("LARDER_GARAGE_DB_ENGINE").unwrap_or_else(|_| "lmdb".to_string())
}

fn config_toml(dir: &Path, rpc_port: u16, s3_port: u16, admin_port: u16) -> String {
    format!(
        r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "{engine}"
metadata_fsync = false
data_fsync = false
compression_level = {compression}
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{admin}"
"#,
        meta = dir.join("meta").display(),
        data = dir.join("data").display(),
        engine = db_engine(),
        compression = compression_level(),
        secret = random_hex(32),
        admin = random_hex(16),
    )
}

/// `n` random bytes as lower-case hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
