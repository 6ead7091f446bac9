//! Benchmark: how fast the operator brings 100 BinaryCaches applied at once to their
//! reconciled state, and how much memory it needs for it. Prints numbers; it asserts
//! nothing (the targets, < 10 s and < 50 MB peak RSS, are judged by whoever reads them).
//!
//! It runs the real `larder-operator` binary (release build) against the harness's
//! kube-apiserver, etcd and kube-controller-manager, watching one namespace:
//!
//! ```sh
//! cargo build --release -p larder-operator
//! . e2e/tools/install-all.sh
//! cargo bench --profile dev -p larder-e2e --bench operator_scale
//! ```
//!
//! `--profile dev` builds only this driver unoptimised (it just polls the API server); the
//! operator measured is the release binary (`LARDER_OPERATOR_BIN` overrides it).
//!
//! "Reconciled" is the state of a first install without a kubelet: every child applied
//! (ServiceAccount, ConfigMap, Service, PodDisruptionBudget, migration Job), the signing key
//! generated, and status written for the current generation (`Ready=False`, `NoWorkers`:
//! workers wait for the migration).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark driver: failures panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use larder_e2e::k8s::ControlPlane;
use larder_e2e::metrics::sample;
use larder_e2e::process::{free_port, temp_dir, Service};
use larder_operator::crd::{BinaryCache, BinaryCacheSpec};

/// Caches applied at once.
const CACHES: usize = 100;
/// Longest the measurement may take before the driver gives up.
const LIMIT: Duration = Duration::from_secs(120);

fn operator_bin() -> PathBuf {
    larder_e2e::tools::workspace_bin(
        "LARDER_OPERATOR_BIN",
        "release",
        "larder-operator",
        "cargo build --release -p larder-operator",
    )
}

fn cache(name: &str) -> BinaryCache {
    let spec: BinaryCacheSpec = serde_json::from_value(serde_json::json!({
        "storage": {"bucket": "nix-cache", "prefix": name},
        "database": {"urlSecret": {"name": "larder-db", "key": "url"}},
    }))
    .unwrap();
    let mut cache = BinaryCache::new(name, spec);
    cache.metadata.namespace = None;
    cache
}

/// How many caches have status for their current generation with `Ready` reason `NoWorkers`.
fn reconciled(caches: &[BinaryCache]) -> usize {
    caches
        .iter()
        .filter(|c| {
            let Some(status) = &c.status else {
                return false;
            };
            status.observed_generation == c.metadata.generation
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "NoWorkers")
        })
        .count()
}

/// `(VmHWM, VmRSS)` of `pid` in KiB: peak and current resident memory.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn count<K>(client: &Client, ns: &str) -> usize
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

async fn wait_reconciled(api: &Api<BinaryCache>, want: usize, started: Instant) -> Duration {
    loop {
        let caches = api.list(&ListParams::default()).await.unwrap().items;
        if reconciled(&caches) >= want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < LIMIT,
            "only {} of {want} caches reconciled after {LIMIT:?}",
            reconciled(&caches)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_operator(ns: &str, dir: &Path, addr: &str) -> Service {
    let mut cmd = Command::new(operator_bin());
    cmd.arg("run")
        .arg(format!("--namespace={ns}"))
        .arg("--leader-election=false")
        .arg(format!("--http-addr={addr}"))
        .arg("--worker-image=larder:bench")
        .env("KUBECONFIG", ControlPlane::kubeconfig_path())
        .env("RUST_LOG", "warn");
    Service::start("larder-operator", cmd, &dir.join("larder-operator.log"))
}

#[tokio::main]
async fn main() {
    let (client, ns) = ControlPlane::namespace("operator-scale").await;
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/larder.yaml");
    larder_e2e::k8s::install_crds(&client, &crds, Duration::from_secs(60)).await;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("larder-db".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(
            [(
                "url".to_string(),
                "postgres://db.invalid/larder".to_string(),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let dir = temp_dir("operator-scale");
    let addr = format!("127.0.0.1:{}", free_port());
    let operator = start_operator(&ns, &dir, &addr);
    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    // Warm-up: one cache, so the measurement starts with the operator's watches running.
    let warm = Instant::now();
    caches
        .create(&PostParams::default(), &cache("warm-up"))
        .await
        .unwrap();
    let warm = wait_reconciled(&caches, 1, warm).await;
    let (peak_idle, _) = memory_kib(operator.pid());

    let started = Instant::now();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..CACHES {
        let caches = caches.clone();
        creates.spawn(async move {
            caches
                .create(&PostParams::default(), &cache(&format!("cache-{i:03}")))
                .await
                .unwrap();
        });
    }
    creates.join_all().await;
    let applied = started.elapsed();
    let all = wait_reconciled(&caches, CACHES + 1, started).await;
    // Let follow-up reconciles (status and child events) settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (peak, now) = memory_kib(operator.pid());
    let kind = r#"{kind="BinaryCache"}"#;
    let base = format!("http://{addr}");
    let reconciles = sample(&base, &format!("larder_operator_reconciles_total{kind}")).await;
    let seconds = sample(
        &base,
        &format!("larder_operator_reconcile_duration_seconds_sum{kind}"),
    )
    .await;

    let config_maps = count::<ConfigMap>(&client, &ns).await;
    let jobs = count::<Job>(&client, &ns).await;
    let secrets = count::<Secret>(&client, &ns).await;
    println!("operator_scale: {CACHES} BinaryCaches applied at once (plus 1 warm-up)");
    println!("  operator binary          {}", operator_bin().display());
    println!(
        "  warm-up cache reconciled {:>8.2} s (includes watch start)",
        warm.as_secs_f64()
    );
    println!(
        "  all {CACHES} created         {:>8.2} s",
        applied.as_secs_f64()
    );
    println!(
        "  all {CACHES} reconciled      {:>8.2} s  (target < 10 s)",
        all.as_secs_f64()
    );
    println!(
        "  peak RSS                 {:>8.1} MB (target < 50 MB; {:.1} MB after warm-up, {:.1} MB now)",
        peak as f64 / 1024.0,
        peak_idle as f64 / 1024.0,
        now as f64 / 1024.0
    );
    println!(
        "  reconciles               {reconciles:>8} ({:.0} ms on average)",
        1000.0 * seconds / reconciles.max(1.0)
    );
    println!("  children: {config_maps} ConfigMaps, {jobs} migration Jobs, {secrets} Secrets");
    println!("  operator log: {}", operator.log().display());
}
