//! The Helm chart `charts/larder`: `helm template` renders objects the real API server
//! accepts, and the RBAC it grants is all the controllers need.
//!
//! The RBAC test runs the library's controllers in this process with a client that
//! impersonates the chart's ServiceAccount, so every request is authorized exactly as it
//! would be for the operator's pod; no kubelet runs here to start that pod itself, so
//! another test runs the `larder-operator` binary with the Deployment's arguments and
//! environment, as that ServiceAccount. `helm install`, `upgrade` and `uninstall` run
//! against the API server, and the plain manifests and examples in deploy/ are applied.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{pinned_kind, Scope};
use kube::{Api, Client, ResourceExt};
use larder_e2e::k8s::ControlPlane;
use larder_e2e::process::{free_port, temp_dir, Service as Process};
use larder_operator::crd::{BinaryCache, GCPolicy, GcResult};
use serde::Deserialize;

use crate::cache_children::{full_cache, full_cache_secrets};
use crate::gc_policy::{policy, policy_becomes, start_run, SUMMARY};
use crate::support::{
    appears, children, create, database_secret, events_about, eventually, finish_pods_of_job, get,
    install_crds, migrate, migration_job, ready_reason, secret, Operator, WAIT,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/larder");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// Runs helm with `args`; its stdout, or its stderr as the error.
fn helm(args: &[&str]) -> Result<String, String> {
    let helm = larder_e2e::tools::binary(
        "LARDER_HELM",
        None,
        "run e2e/tools/install-helm.sh and export LARDER_HELM (e2e/run-tests.sh does both)",
    );
    let out = Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", helm.display()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template RELEASE charts/larder --namespace NAMESPACE` with `--set` for each of `set`.
fn try_render(release: &str, namespace: &str, set: &[&str]) -> Result<String, String> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for value in set {
        args.extend(["--set", value]);
    }
    helm(&args)
}

/// The objects [`try_render`] renders; panics with helm's complaint.
fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<DynamicObject> {
    let text = try_render(release, namespace, set).unwrap_or_else(|e| panic!("helm template: {e}"));
    parse(&text)
}

/// The objects in a multi-document YAML text.
fn parse(text: &str) -> Vec<DynamicObject> {
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| {
            // A template that renders nothing leaves an empty document.
            let value = serde_json::Value::deserialize(doc).unwrap();
            (!value.is_null()).then(|| serde_json::from_value(value).unwrap())
        })
        .collect()
}

/// Server-side applies every object as `kubectl apply --server-side` would (resolving each
/// kind through discovery); panics with the API server's refusal.
async fn apply_all(client: &Client, objects: &[DynamicObject]) {
    apply_all_in(client, objects, None).await;
}

/// As [`apply_all`], putting namespaced objects that name no namespace into `namespace`
/// (as `kubectl apply -n`).
async fn apply_all_in(client: &Client, objects: &[DynamicObject], namespace: Option<&str>) {
    let params = PatchParams::apply("larder-e2e").force();
    for obj in objects {
        let types = obj.types.as_ref().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(types).unwrap();
        let (resource, caps) = pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{} is not served: {e}", types.kind));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata
                    .namespace
                    .as_deref()
                    .or(namespace)
                    .expect("a namespace"),
                &resource,
            ),
        };
        api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", types.kind, obj.name_any()));
    }
}

fn kinds(objects: &[DynamicObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect()
}

#[test]
fn chart_lints_and_its_schema_refuses_bad_values() {
    helm(&["lint", "--strict", CHART]).unwrap_or_else(|e| panic!("helm lint: {e}"));
    for (set, complaint) in [
        ("replica=2", "additional properties 'replica' not allowed"),
        ("replicas=-1", "/replicas"),
        ("logFormat=xml", "/logFormat"),
        ("serviceMonitor.enable=true", "'enable' not allowed"),
    ] {
        let refused = try_render("larder", "larder-system", &[set]);
        assert!(
            matches!(&refused, Err(e) if e.contains(complaint)),
            "--set {set}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_objects_are_accepted_by_the_api_server() {
    let (client, ns) = ControlPlane::namespace("operator-chart").await;
    // Helm installs crds/ before the templates; this is that folder.
    let crds = Path::new(CHART).join("crds/larder.yaml");
    larder_e2e::k8s::install_crds(&client, &crds, WAIT).await;

    let objects = render(&ns, &ns, &[]);
    assert_eq!(
        kinds(&objects),
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment"
        ]
    );
    apply_all(&client, &objects).await;
    let deployment: Deployment = get(&client, &ns, &format!("{ns}-larder")).await.unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let context = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(context.read_only_root_filesystem, Some(true));
    assert_eq!(context.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));

    // Limited to one namespace, RBAC becomes a Role there; the ServiceMonitor's CRD is not
    // installed here, so it is only rendered.
    let watched = render(
        &ns,
        &ns,
        &[
            &format!("watchNamespace={ns}"),
            "serviceMonitor.enabled=true",
        ],
    );
    assert!(kinds(&watched).contains(&"ServiceMonitor".to_string()));
    let applicable: Vec<_> = watched
        .into_iter()
        .filter(|o| o.types.as_ref().unwrap().kind != "ServiceMonitor")
        .collect();
    assert!(!kinds(&applicable).contains(&"ClusterRole".to_string()));
    apply_all(&client, &applicable).await;
}

/// Panics unless `client` may list and watch `K` in `namespace`, as a watcher does.
async fn list_and_watch<K>(client: &Client, namespace: &str)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let kind = K::kind(&());
    let listed = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap_or_else(|e| panic!("list {kind}: {e}"));
    let version = listed.metadata.resource_version.unwrap_or_default();
    // A refused watch is an HTTP error before any event, so starting one is the check.
    let events = api
        .watch_metadata(&WatchParams::default().timeout(1), &version)
        .await
        .unwrap_or_else(|e| panic!("watch {kind}: {e}"));
    drop(events);
}

/// Deletes `name` as the admin and waits until the operator has made it again.
async fn recreated<K>(admin: &Client, namespace: &str, name: &str)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::namespaced(admin.clone(), namespace);
    let old = api.get(name).await.unwrap().uid();
    api.delete(name, &DeleteParams::background()).await.unwrap();
    let what = format!("{} {name} made again", K::kind(&()));
    eventually(&what, WAIT, async || {
        let now = get::<K>(admin, namespace, name).await.and_then(|o| o.uid());
        (now.is_some() && now != old)
            .then_some(())
            .ok_or_else(|| format!("uid {now:?}, was {old:?}"))
    })
    .await;
}

/// A client that is the chart's ServiceAccount `name` in `namespace`, as the operator's pod is.
async fn client_as_service_account(namespace: &str, name: &str) -> Client {
    let mut config = ControlPlane::config().await;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    // The groups the API server gives a ServiceAccount's token.
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_string(),
    ]);
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_is_all_the_controllers_need() {
    let (admin, ns) = ControlPlane::namespace("operator-chart-rbac").await;
    install_crds(&admin).await;
    apply_all(&admin, &render(&ns, &ns, &[])).await;
    let release = format!("{ns}-larder");
    let operator_client = client_as_service_account(&ns, &release).await;

    // The client really is the ServiceAccount: the chart grants no deleting of Deployments.
    let refused = Api::<Deployment>::namespaced(operator_client.clone(), &ns)
        .delete("anything", &DeleteParams::default())
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );

    // The controllers' watches: a watcher refused list or watch retries with backoff and
    // relists, so reconciles still happen (late) and nothing below would notice; ask
    // directly for each kind controller/run.rs watches.
    let c = &operator_client;
    list_and_watch::<BinaryCache>(c, &ns).await;
    list_and_watch::<GCPolicy>(c, &ns).await;
    list_and_watch::<ServiceAccount>(c, &ns).await;
    list_and_watch::<ConfigMap>(c, &ns).await;
    list_and_watch::<Service>(c, &ns).await;
    list_and_watch::<Deployment>(c, &ns).await;
    list_and_watch::<PodDisruptionBudget>(c, &ns).await;
    list_and_watch::<HorizontalPodAutoscaler>(c, &ns).await;
    list_and_watch::<Ingress>(c, &ns).await;
    list_and_watch::<CronJob>(c, &ns).await;
    list_and_watch::<Job>(c, &ns).await;
    list_and_watch::<Secret>(c, &ns).await;

    // Leader election on the chart's Lease, then both controllers, as `larder-operator run`.
    let _operator = Operator::start_elected_on(
        &operator_client,
        &ns,
        &release,
        "chart-rbac",
        Duration::from_secs(15),
    );
    // The cache first: its Secrets appearing must wake it (the Secret watch), long before
    // the 60 s retry of a cache waiting on a Secret.
    let cache = create(&admin, &ns, &full_cache()).await;
    ready_reason(&admin, &ns, "web", "SecretNotFound").await;
    full_cache_secrets(&admin, &ns).await;

    // A migration Job superseded by a pod change is deleted (Job delete).
    let first = migration_job(&admin, &ns, "web", None).await;
    let patch = serde_json::json!({"spec": {"workers": {"nodeSelector": {"pool": "db"}}}});
    Api::<BinaryCache>::namespaced(admin.clone(), &ns)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    migration_job(&admin, &ns, "web", Some(&first)).await;
    eventually(
        "the superseded migration Job is deleted",
        WAIT,
        async || match get::<Job>(&admin, &ns, &first).await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        },
    )
    .await;

    // Signing key made (Secret create), database migrated (Job applied, status patched),
    // then every child applied.
    let migrated = migrate(&admin, &ns, "web").await;
    assert!(migrated.status.unwrap().public_key.is_some());
    appears::<Deployment>(&admin, &ns, "web").await;
    for (kind, found) in [
        (
            "ServiceAccount",
            children::<ServiceAccount>(&admin, &ns, "web").await,
        ),
        ("ConfigMap", children::<ConfigMap>(&admin, &ns, "web").await),
        ("Service", children::<Service>(&admin, &ns, "web").await),
        (
            "HorizontalPodAutoscaler",
            children::<HorizontalPodAutoscaler>(&admin, &ns, "web").await,
        ),
        ("Ingress", children::<Ingress>(&admin, &ns, "web").await),
        ("CronJob", children::<CronJob>(&admin, &ns, "web").await),
        ("Secret", children::<Secret>(&admin, &ns, "web").await),
    ] {
        assert!(!found.is_empty(), "no {kind} of cache web");
    }
    let lease: Lease = get(&admin, &ns, &release).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("chart-rbac")
    );

    // A child deleted behind the operator's back is made again (here the watches, checked
    // above, wake the cache; reconciles caused by other changes would too, so this checks
    // the re-creating, not the watching).
    recreated::<ServiceAccount>(&admin, &ns, "web").await;
    recreated::<ConfigMap>(&admin, &ns, "web-config").await;
    recreated::<Service>(&admin, &ns, "web").await;
    recreated::<Deployment>(&admin, &ns, "web").await;
    recreated::<PodDisruptionBudget>(&admin, &ns, "web").await;
    recreated::<HorizontalPodAutoscaler>(&admin, &ns, "web").await;
    recreated::<Ingress>(&admin, &ns, "web").await;
    recreated::<CronJob>(&admin, &ns, "web-index").await;

    // Optional children the spec stops asking for are deleted.
    let patch = serde_json::json!({"spec": {"ingress": null, "workers": {"autoscaling": null}}});
    Api::<BinaryCache>::namespaced(admin.clone(), &ns)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("Ingress and HPA removed", WAIT, async || {
        let left = (
            children::<Ingress>(&admin, &ns, "web").await,
            children::<HorizontalPodAutoscaler>(&admin, &ns, "web").await,
        );
        (left.0.is_empty() && left.1.is_empty())
            .then_some(())
            .ok_or_else(|| format!("{left:?}"))
    })
    .await;

    // A GC policy: CronJob applied, its runs (Jobs and their pods) listed into status.
    let mut gc = policy();
    gc.spec.cache_ref.name = "web".to_string();
    create(&admin, &ns, &gc).await;
    let cronjob: CronJob = appears(&admin, &ns, "nightly-gc").await;
    policy_becomes(&admin, &ns, "nightly", "True/Scheduled").await;
    let run = start_run(&admin, &ns, &cronjob, "nightly-gc-1").await;
    finish_pods_of_job(&admin, &ns, &run.name_any(), 0, SUMMARY).await;
    eventually("the run is reported", WAIT, async || {
        let p: GCPolicy = get(&admin, &ns, "nightly").await.ok_or("gone")?;
        match p.status.and_then(|s| s.last_run) {
            Some(run) if run.result == GcResult::Succeeded => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Events were published about both (they fail only with a log line, so look); the
    // cache's Deployment shares its name and has Events of its own.
    for (kind, name) in [
        ("BinaryCache", cache.name_any()),
        ("GCPolicy", "nightly".into()),
    ] {
        let events = events_about(&admin, &ns, &name).await;
        let ours = events
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind))
            .count();
        assert!(ours > 0, "no Events about {kind} {name}: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_apply_in_kustomization_order() {
    let client = ControlPlane::client().await;
    // `kubectl apply -k deploy/` without kubectl: the kustomization's resources, in order.
    #[derive(Deserialize)]
    struct Kustomization {
        resources: Vec<String>,
    }
    let read = |name: &str| {
        let path = Path::new(DEPLOY).join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let kustomization: Kustomization = serde_norway::from_str(&read("kustomization.yaml")).unwrap();
    let mut objects = Vec::new();
    for resource in &kustomization.resources {
        objects.extend(parse(&read(resource)));
    }
    let all = kinds(&objects);
    assert_eq!(all.first().map(String::as_str), Some("Namespace"));
    assert!(
        all.contains(&"CustomResourceDefinition".to_string())
            && all.contains(&"Deployment".to_string()),
        "{all:?}"
    );
    apply_all(&client, &objects).await;
    let deployment: Option<Deployment> = get(&client, "larder-system", "larder").await;
    assert!(deployment.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_examples_are_valid_caches() {
    let (client, ns) = ControlPlane::namespace("operator-examples").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let keys = [("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")];
    secret(&client, &ns, "r2-keys", &keys).await;
    for (file, caches) in [
        ("examples/aws-irsa.yaml", &["main"][..]),
        ("examples/garage-minio.yaml", &["lab"][..]),
        ("examples/cloudflare-r2.yaml", &["edge"][..]),
    ] {
        let path = Path::new(DEPLOY).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        apply_all_in(&client, &parse(&text), Some(&ns)).await;
        // Past validation, a cache's first step is its migration Job.
        for cache in caches {
            migration_job(&client, &ns, cache, None).await;
        }
    }
}

/// The `larder-operator` binary: `LARDER_OPERATOR_BIN`, or the workspace's debug build.
fn operator_bin() -> PathBuf {
    larder_e2e::tools::workspace_bin(
        "LARDER_OPERATOR_BIN",
        "debug",
        "larder-operator",
        "cargo build --bin larder-operator",
    )
}

/// A kubeconfig file that logs in as the admin and acts as ServiceAccount `name` in
/// `namespace` (the `as` fields `kubectl --as` sets), for a process of its own.
fn kubeconfig_as_service_account(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    let admin = std::fs::read_to_string(ControlPlane::kubeconfig_path()).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&admin).unwrap();
    let user = &mut config["users"][0]["user"];
    user["as"] = format!("system:serviceaccount:{namespace}:{name}").into();
    user["as-groups"] = serde_json::json!([
        "system:serviceaccounts",
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated"
    ]);
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_deployment_runs_the_operator_binary() {
    let (admin, ns) = ControlPlane::namespace("operator-chart-binary").await;
    install_crds(&admin).await;
    // Limited to the test's namespace, so this operator leaves other tests' caches alone
    // (and the namespaced RBAC variant is the one exercised).
    let objects = render(&ns, &ns, &[&format!("watchNamespace={ns}")]);
    apply_all(&admin, &objects).await;
    let release = format!("{ns}-larder");
    let deployment: Deployment = get(&admin, &ns, &release).await.unwrap();
    let container = deployment.spec.unwrap().template.spec.unwrap().containers[0].clone();

    // Run the binary the image would, with the container's arguments and environment; the
    // downward API's values are what a pod named `chart-pod` would get.
    let dir = temp_dir("chart-binary");
    let port = free_port();
    let mut cmd = Command::new(operator_bin());
    cmd.args(container.args.unwrap())
        .env_clear()
        .env(
            "KUBECONFIG",
            kubeconfig_as_service_account(&dir, &ns, &release),
        )
        .env("RUST_LOG", "info");
    for var in container.env.unwrap() {
        let value = match (var.value, var.value_from) {
            (Some(value), _) => value,
            (None, Some(from)) => match from.field_ref.unwrap().field_path.as_str() {
                "metadata.name" => "chart-pod".to_string(),
                "metadata.namespace" => ns.clone(),
                other => panic!("downward API field {other} not played here"),
            },
            (None, None) => String::new(),
        };
        cmd.env(var.name, value);
    }
    // The one change: the container's port may be taken on this machine.
    cmd.env("LARDER_OPERATOR_HTTP_ADDR", format!("127.0.0.1:{port}"));
    let _operator = Process::start("larder-operator", cmd, &dir.join("operator.log"));

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    eventually("/readyz answers ok", WAIT, async || {
        let answer = reqwest::get(&readyz).await.map_err(|e| e.to_string())?;
        answer
            .status()
            .is_success()
            .then_some(())
            .ok_or_else(|| answer.status().to_string())
    })
    .await;
    // Held, and renewed (an update, which making it did not need) a third of 15 s later.
    eventually(
        "the pod holds and renews the chart's Lease",
        WAIT,
        async || {
            let lease: Option<Lease> = get(&admin, &ns, &release).await;
            let spec = lease.and_then(|l| l.spec).ok_or("no Lease")?;
            let renewed =
                spec.renew_time.as_ref().map(|t| t.0) > spec.acquire_time.as_ref().map(|t| t.0);
            (spec.holder_identity.as_deref() == Some("chart-pod") && renewed)
                .then_some(())
                .ok_or_else(|| format!("{spec:?}"))
        },
    )
    .await;
    database_secret(&admin, &ns).await;
    create(&admin, &ns, &crate::support::minimal_cache("main")).await;
    migration_job(&admin, &ns, "main", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let (admin, ns) = ControlPlane::namespace("operator-chart-helm").await;
    let kubeconfig = ControlPlane::kubeconfig_path().to_str().unwrap();
    let common = ["--namespace", &ns, "--kubeconfig", kubeconfig];
    let release = format!("{ns}-larder");

    // What README.md tells users to run (CRDs already present are left as they are).
    let install = [&["install", &ns, CHART][..], &common[..]].concat();
    helm(&install).unwrap_or_else(|e| panic!("helm install: {e}"));
    let deployment: Deployment = get(&admin, &ns, &release).await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(1));
    let crds = Api::<CustomResourceDefinition>::all(admin.clone());
    assert!(crds
        .get_opt("binarycaches.larder.dev")
        .await
        .unwrap()
        .is_some());

    let upgrade = [
        &["upgrade", &ns, CHART, "--set", "replicas=2"][..],
        &common[..],
    ]
    .concat();
    helm(&upgrade).unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    let deployment: Deployment = get(&admin, &ns, &release).await.unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));

    let uninstall = [&["uninstall", &ns, "--wait"][..], &common[..]].concat();
    helm(&uninstall).unwrap_or_else(|e| panic!("helm uninstall: {e}"));
    assert!(get::<Deployment>(&admin, &ns, &release).await.is_none());
    let roles = Api::<ClusterRole>::all(admin.clone());
    assert!(roles.get_opt(&release).await.unwrap().is_none());
}
