//! Where the S3 backend finds its bucket and credentials.

use serde::{Deserialize, Serialize};

/// S3 bucket settings; usable as `clap` arguments (`--s3-…`, `LARDER_S3_…`) and from serde.
///
/// Credentials: `access_key_id` and `secret_access_key` together, or neither, in which
/// case aws-config's default chain applies (environment, profile, web identity/IRSA,
/// ECS, instance metadata).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct S3Config {
    /// S3 endpoint URL the worker talks to; unset for AWS.
    #[arg(long = "s3-endpoint", env = "LARDER_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Endpoint written into presigned URLs when clients reach S3 at another address.
    #[arg(long = "s3-public-endpoint", env = "LARDER_S3_PUBLIC_ENDPOINT")]
    pub public_endpoint: Option<String>,
    /// Region to sign for; unset: from the AWS environment or profile, else `us-east-1`.
    #[arg(long = "s3-region", env = "LARDER_S3_REGION")]
    pub region: Option<String>,
    /// Bucket name.
    #[arg(
        long = "s3-bucket",
        env = "LARDER_S3_BUCKET",
        default_value = "",
        hide_default_value = true
    )]
    pub bucket: String,
    /// Key prefix applied to every object (`cache/` and `/cache` mean the same).
    #[arg(
        long = "s3-prefix",
        env = "LARDER_S3_PREFIX",
        default_value = "",
        hide_default_value = true
    )]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), as Garage and MinIO want.
    #[arg(long = "s3-path-style", env = "LARDER_S3_PATH_STYLE")]
    pub path_style: bool,
    /// Static access key id (tests, non-AWS stores); unset: the default chain.
    #[arg(long = "s3-access-key-id", env = "LARDER_S3_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Static secret access key, with `access_key_id`.
    #[arg(
        long = "s3-secret-access-key",
        env = "LARDER_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("public_endpoint", &self.public_endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s3: S3Config,
    }

    #[test]
    fn parses_flags_and_hides_the_secret() {
        let cli = Cli::parse_from([
            "larder",
            "--s3-bucket=cache",
            "--s3-endpoint=http://127.0.0.1:3900",
            "--s3-path-style",
            "--s3-secret-access-key=hunter2",
        ]);
        assert_eq!(cli.s3.bucket, "cache");
        assert!(cli.s3.path_style);
        assert!(!format!("{:?}", cli.s3).contains("hunter2"));
        let json = serde_json::to_string(&cli.s3).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        let back: S3Config = serde_json::from_str(r#"{"bucket":"b","prefix":"p"}"#).unwrap();
        assert_eq!((back.bucket.as_str(), back.prefix.as_str()), ("b", "p"));
    }
}
