//! What the operator tests share: the CRDs, an operator running in this process, fixtures,
//! waiting, and the kubelet's part.
//!
//! The operator is the library's real controller (`larder_operator::controller::run`), started
//! per test on the test's own namespace, so tests running side by side never see each
//! other's objects. No kubelet runs here: where a test needs a pod to have run, it writes the
//! pod's status the way a kubelet would (`kubelet.rs`), and the real Job controller in
//! kube-controller-manager takes it from there.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use larder_operator::controller::{self, Context, Options};
use larder_operator::crd::BinaryCache;
use larder_operator::leader::Elector;
use larder_operator::metrics::Metrics;
use larder_operator::validate::Defaults;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;

mod kubelet;
pub use kubelet::{finish_pods_of_job, migrate, migration_job};

/// How long anything the operator or a controller does may take here.
pub const WAIT: Duration = Duration::from_secs(30);

/// The worker image operators in these tests default to.
pub const IMAGE: &str = "larder:e2e-1";

/// Label every child carries, naming its cache.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Applies `crds/larder.yaml` (the committed file, not the generator), waits until the API
/// server serves both kinds, and returns them as served.
pub async fn install_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/larder.yaml");
    let crds = larder_e2e::k8s::install_crds(client, Path::new(path), WAIT).await;
    assert_eq!(
        crds.len(),
        2,
        "crds/larder.yaml holds BinaryCache and GCPolicy"
    );
    crds
}

/// An operator running in this process on one namespace; stopped when dropped.
pub struct Operator {
    task: JoinHandle<()>,
    /// Its metrics, to count reconciles.
    pub metrics: Arc<Metrics>,
}

impl Operator {
    /// Runs the controllers on `namespace`, without leader election.
    pub fn start(client: &Client, namespace: &str) -> Operator {
        let (ctx, options, metrics) = context(client, namespace, "e2e");
        let task = tokio::spawn(controller::run(ctx, options));
        Operator { task, metrics }
    }

    /// Runs the controllers on `namespace` once `identity` holds the Lease `larder-operator`
    /// there, as `larder-operator run` does.
    pub fn start_elected(
        client: &Client,
        namespace: &str,
        identity: &str,
        lease: Duration,
    ) -> Operator {
        Self::start_elected_on(client, namespace, "larder-operator", identity, lease)
    }

    /// As [`Operator::start_elected`], with the Lease named `lease_name` (the chart names it
    /// after the release).
    pub fn start_elected_on(
        client: &Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        lease: Duration,
    ) -> Operator {
        let (ctx, options, metrics) = context(client, namespace, identity);
        let elector = Elector::new(client.clone(), namespace, lease_name, identity, lease);
        let task = tokio::spawn(async move {
            let _ = elector.lead(controller::run(ctx, options)).await;
        });
        Operator { task, metrics }
    }

    /// Reconciles of `kind` so far.
    pub fn reconciles(&self, kind: &str) -> u64 {
        self.metrics.reconcile_count(kind)
    }

    /// Stops it the way a crash would: no goodbye, the Lease is left to expire.
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn context(
    client: &Client,
    namespace: &str,
    identity: &str,
) -> (Arc<Context>, Options, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let defaults = Defaults {
        worker_image: IMAGE.to_string(),
    };
    let ctx = Context::new(
        client.clone(),
        defaults,
        metrics.clone(),
        Some(identity.to_string()),
    );
    let options = Options {
        namespace: Some(namespace.to_string()),
    };
    (Arc::new(ctx), options, metrics)
}

/// Polls `check` every 100 ms until it returns `Ok`; panics after `timeout` with what it saw last.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not so after {timeout:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A value parsed from YAML (fixtures read like the manifests users write).
pub fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("fixture: {e}\n{text}"))
}

/// Creates `obj` in `namespace`.
pub async fn create<K>(client: &Client, namespace: &str, obj: &K) -> K
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("create {} {}: {e}", K::kind(&()), obj.name_any()))
}

/// Reads `name` in `namespace`, if it exists.
pub async fn get<K>(client: &Client, namespace: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("read {} {name}: {e}", K::kind(&())))
}

/// Waits until `name` exists and returns it.
pub async fn appears<K>(client: &Client, namespace: &str, name: &str) -> K
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let what = format!("{} {name} exists", K::kind(&()));
    eventually(&what, WAIT, async || {
        get::<K>(client, namespace, name)
            .await
            .ok_or_else(|| "absent".to_string())
    })
    .await
}

/// Names of the objects of kind `K` labelled as children of `cache`.
pub async fn children<K>(client: &Client, namespace: &str, cache: &str) -> Vec<String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let selector = format!("{INSTANCE_LABEL}={cache}");
    let mut names: Vec<String> = Api::<K>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("list {}: {e}", K::kind(&())))
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// An Opaque Secret with string values.
pub async fn secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    };
    create(client, namespace, &secret).await;
}

/// The database Secret every fixture cache names (`larder-db`, key `url`).
pub async fn database_secret(client: &Client, namespace: &str) {
    let url = "postgres://larder@db.invalid/larder";
    secret(client, namespace, "larder-db", &[("url", url)]).await;
}

/// A cache that needs only the database Secret.
pub fn minimal_cache(name: &str) -> BinaryCache {
    yaml(&format!(
        r#"
apiVersion: larder.dev/v1alpha1
kind: BinaryCache
metadata:
  name: {name}
spec:
  storage:
    bucket: nix-cache
  database:
    urlSecret: {{name: larder-db, key: url}}
"#
    ))
}

/// `(status, reason, message)` of the cache's condition `type_`, when it has one.
pub fn condition(cache: &BinaryCache, type_: &str) -> Option<(String, String, String)> {
    cache
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the cache's `Ready` condition has `reason` for its current generation.
pub async fn ready_reason(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> BinaryCache {
    eventually(&format!("{name} Ready reason {reason}"), WAIT, async || {
        let cache = get::<BinaryCache>(client, namespace, name)
            .await
            .ok_or("no cache")?;
        let status = cache.status.as_ref().ok_or("no status")?;
        let current = status.observed_generation == cache.metadata.generation;
        match condition(&cache, "Ready") {
            Some((_, r, _)) if r == reason && current => Ok(cache),
            other => Err(format!("{other:?}, observed generation current: {current}")),
        }
    })
    .await
}

/// Events about the BinaryCache or GCPolicy `name`, oldest first.
pub async fn events_about(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            // Only the operator's Events about its own resources: the cluster's controllers
            // post Events about children that share the name (e.g. ClusterIPNotAllocated
            // about a Service whose allocation its repair loop has not seen yet).
            e.regarding.as_ref().is_some_and(|r| {
                r.name.as_deref() == Some(name)
                    && r.api_version
                        .as_deref()
                        .is_some_and(|v| v.starts_with("larder.dev/"))
            })
        })
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    events
}

/// What `kubectl get` asks for: the server renders the CRD's printer columns into a Table.
pub async fn table(client: &Client, ns: &str, plural: &str) -> serde_json::Value {
    let request = http::Request::get(format!(
        "/apis/larder.dev/v1alpha1/namespaces/{ns}/{plural}"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .body(Vec::new())
    .unwrap();
    client.request(request).await.unwrap()
}

/// The cells of the row for `name`, keyed by column name.
pub fn row(table: &serde_json::Value, name: &str) -> std::collections::BTreeMap<String, String> {
    assert_eq!(table["kind"], "Table", "{table}");
    let columns: Vec<String> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == name)
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    columns
        .into_iter()
        .zip(row["cells"].as_array().unwrap())
        .map(|(c, v)| (c, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect()
}
