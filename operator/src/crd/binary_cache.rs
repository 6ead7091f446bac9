//! `BinaryCache`: one Nix binary cache on S3 and the workers serving it.
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// Desired state of a binary cache.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "larder.dev",
    version = "v1alpha1",
    kind = "BinaryCache",
    namespaced,
    shortname = "bc",
    category = "larder",
    status = "BinaryCacheStatus",
    derive = "PartialEq",
    doc = "A Nix binary cache on S3 served by Larder workers.",
    validation = Rule::new("size(self.metadata.name) <= 40").message("name must be at most 40 characters: child names add suffixes"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Public Key", type_ = "string", json_path = ".status.publicKey"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BinaryCacheSpec {
    /// Where the cache's objects live.
    pub storage: StorageSpec,
    /// The PostgreSQL database holding what the bucket contains.
    pub database: DatabaseSpec,
    /// The Ed25519 key the workers sign narinfos with.
    #[serde(default)]
    pub signing_key: SigningKeySpec,
    /// Bearer tokens the workers accept (push, read, admin); without it the cache takes no pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_tokens: Option<PushTokensSpec>,
    /// OIDC issuers whose tokens may push (CI systems such as GitHub Actions). Reserved: the
    /// worker does not verify OIDC tokens yet, so the operator passes nothing on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_providers: Vec<OidcProviderSpec>,
    /// How workers serve reads.
    #[serde(default)]
    pub read_proxy: ReadProxySpec,
    /// `Priority` in `nix-cache-info`: lower is preferred by clients.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: u32,
    /// Public URL of the cache (substituter URL); defaults to the ingress host or the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub url: Option<String>,
    /// The worker Deployment.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// The Service in front of the workers.
    #[serde(default)]
    pub service: ServiceSpec,
    /// An Ingress for the workers; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// The binary cache index CronJob.
    #[serde(default)]
    pub index: IndexSpec,
    /// Stop changing the cache's children; workers keep serving as they are. Scheduled work
    /// stops too: the index CronJob and the CronJobs of GCPolicies naming this cache are
    /// suspended until it resumes; runs already started finish (docs/operator.md).
    #[serde(default)]
    pub suspend: bool,
}

fn default_priority() -> u32 {
    40
}

/// The S3 bucket and how to reach it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Bucket name; cannot change, since the database describes this bucket's content.
    #[x_kube(validation = Rule::new("self == oldSelf").message("bucket is immutable"))]
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1))]
    pub region: String,
    /// S3 endpoint for non-AWS storage (R2, Garage, MinIO); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub endpoint: Option<String>,
    /// Address the bucket as `endpoint/bucket` rather than `bucket.endpoint`.
    #[serde(default)]
    pub force_path_style: bool,
    /// Key prefix inside the bucket, for sharing one bucket between caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()/-]*[A-Za-z0-9!_.*'()-]$"))]
    pub prefix: Option<String>,
    /// Credentials for the bucket; the default AWS chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<StorageCredentials>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Exactly one way to get bucket credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.roleArn) != has(self.secret)").message("set exactly one of roleArn and secret"))]
pub struct StorageCredentials {
    /// IAM role for the workers' ServiceAccount (EKS IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,
    /// A Secret with static keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<S3SecretRef>,
}

/// A Secret holding an S3 access key pair.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Where the database URL comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding a `postgres://` URL.
    pub url_secret: SecretKeyRef,
}

/// The signing key Secret; generated when it does not exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeySpec {
    /// Secret name; `<cache>-signing-key` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Key inside the Secret holding `name:base64` as `nix key generate-secret` writes it.
    #[serde(default = "default_signing_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Key name written into a generated key (`name:…`); the URL's host plus `-1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^:\s]+$"))]
    pub key_name: Option<String>,
    /// Delete a generated key with the cache; by default it is kept, since losing it breaks
    /// every client's trust in the cache.
    #[serde(default)]
    pub delete_with_cache: bool,
}

impl Default for SigningKeySpec {
    fn default() -> Self {
        Self {
            secret_name: None,
            key: default_signing_key_key(),
            key_name: None,
            delete_with_cache: false,
        }
    }
}

fn default_signing_key_key() -> String {
    "secret-key".into()
}

/// The Secret holding the workers' token file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushTokensSpec {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key inside the Secret holding the token file `larder serve --token-file` reads: one
    /// token a line, `<token> <scopes> [name]`, scopes a comma-separated subset of `push`,
    /// `read` and `admin`, tokens at least 16 characters.
    #[serde(default = "default_tokens_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_tokens_key() -> String {
    "tokens".into()
}

/// One trusted OIDC issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProviderSpec {
    /// Issuer URL, e.g. the GitHub Actions token issuer.
    #[schemars(url)]
    pub issuer: String,
    /// Audience the tokens must carry.
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Glob patterns of allowed `sub` claims; any subject of the issuer when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
}

/// Read proxy behaviour; workers always serve reads, so private buckets work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReadProxySpec {
    /// Answer NAR reads with a 307 to a presigned bucket URL instead of streaming them.
    #[serde(default)]
    pub redirect_nars: bool,
    /// Require a token with the `read` scope for reads (Nix sends it from netrc).
    #[serde(default)]
    pub require_auth: bool,
}

fn default_true() -> bool {
    true
}

/// The worker pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// Number of workers (ignored when autoscaling is set).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Worker image; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Compute resources of a worker, and of the cache's migration, index and GC pods. CPU
    /// and memory each get a default request (cpu 100m, memory 256Mi) unless set here as a
    /// request or a limit; there are no default limits (docs/operator.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra annotations on worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// A HorizontalPodAutoscaler for the workers, aiming at a share of their CPU request; none
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            pod_annotations: BTreeMap::new(),
            autoscaling: None,
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// Horizontal autoscaling of workers on CPU.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest workers.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most workers.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation to aim for, in percent of requests.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    2
}

fn default_cpu_target() -> i32 {
    75
}

/// The Service in front of the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port the Service listens on.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Extra annotations on the Service (load balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_service_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_port() -> i32 {
    80
}

/// Kubernetes Service types the operator renders.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// An Ingress routing a host to the workers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name clients use.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub host: String,
    /// IngressClass to use; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret holding the TLS certificate for the host; plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations (cert-manager, body size limits, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The CronJob that rebuilds the binary cache index.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    /// Build the index at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Cron schedule of `larder index build`.
    #[serde(default = "default_index_schedule")]
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
    ))]
    pub schedule: String,
}

impl Default for IndexSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_index_schedule(),
        }
    }
}

fn default_index_schedule() -> String {
    "*/15 * * * *".into()
}

/// Observed state of a binary cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BinaryCacheStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Workers ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Substituter URL of the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Public key clients put in `trusted-public-keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Image whose database migration has succeeded, so workers may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_image: Option<String>,
    /// Identity of the database that migration ran against (a checksum of its URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_database: Option<String>,
}
