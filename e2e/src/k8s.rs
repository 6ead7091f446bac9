//! A real Kubernetes control plane for the operator tests: etcd, kube-apiserver and
//! kube-controller-manager on 127.0.0.1, started once per test binary.
//!
//! The API server is secured as in a real cluster: TLS with its own CA, client
//! certificate login, RBAC authorization, signed service-account tokens. The test
//! user is cluster admin; a test that checks the operator's own RBAC impersonates
//! or mints a service-account token. There is no scheduler and no kubelet (nothing
//! here can run containers), so Pods stay Pending; the controllers do run, so
//! owner-reference garbage collection, Deployment → ReplicaSet → Pod objects,
//! CronJob → Job and namespace deletion behave as in a cluster.

mod crds;
mod kubeconfig;
mod pki;

pub use crds::install as install_crds;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::process::{free_port, temp_dir, unique_name, Service};
use crate::tools;
use pki::Pki;

const INSTALL_HINT: &str = "run e2e/tools/install-kubernetes.sh and export LARDER_ETCD, \
     LARDER_KUBE_APISERVER and LARDER_KUBE_CONTROLLER_MANAGER (e2e/run-tests.sh does both)";

/// Generous: the API server needs ~10 s on an idle 2-core machine, CI machines are busy.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Annotation on each test namespace naming the test that made it.
pub const TEST_ANNOTATION: &str = "larder.test/test-name";

/// The control plane of this test binary; its processes die with the binary.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    _etcd: Service,
    _apiserver: Service,
    _controller_manager: Service,
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The shared control plane, started (synchronously) on first use.
    pub fn get() -> &'static ControlPlane {
        let started = CONTROL_PLANE.get_or_init(|| {
            // Startup runs a tokio runtime of its own; a separate thread keeps it
            // apart from the runtime the calling test may be inside.
            std::thread::spawn(start).join().map_err(panic_message)
        });
        match started {
            Ok(control_plane) => control_plane,
            Err(message) => panic!("the Kubernetes control plane did not start: {message}"),
        }
    }

    /// A kubeconfig with cluster-admin rights (for tests, and for `kubectl --kubeconfig`).
    pub fn kubeconfig_path() -> &'static Path {
        &Self::get().kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url() -> &'static str {
        &Self::get().server
    }

    /// Directory holding the certificates and each component's log.
    pub fn dir() -> &'static Path {
        &Self::get().dir
    }

    /// The cluster-admin client configuration; change `auth_info` to act as someone else.
    pub async fn config() -> Config {
        config_from(Self::kubeconfig_path()).await
    }

    /// A cluster-admin client, bound to the calling tokio runtime.
    pub async fn client() -> Client {
        client_from(Self::kubeconfig_path()).await
    }

    /// A cluster-admin client and a fresh namespace for `test_name`.
    ///
    /// Returns once the namespace's `default` ServiceAccount exists, so Pods can be
    /// created in it straight away.
    pub async fn namespace(test_name: &str) -> (Client, String) {
        let client = Self::client().await;
        let name = unique_name(test_name);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(BTreeMap::from([(
                    TEST_ANNOTATION.to_string(),
                    test_name.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &name);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await.ok().flatten().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "namespace {name}: kube-controller-manager made no default ServiceAccount \
                 in 60 s; see {}",
                Self::dir().join("kube-controller-manager.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (client, name)
    }

    /// A client authenticated as ServiceAccount `account` of `namespace` (a ten-minute
    /// token), holding only what RBAC grants that account.
    pub async fn account_client(admin: &Client, namespace: &str, account: &str) -> Client {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {namespace}/{account}: {e}"))
            .status
            .unwrap_or_else(|| panic!("a token for {namespace}/{account}: no status"))
            .token;
        let mut config = Self::config().await;
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..AuthInfo::default()
        };
        Client::try_from(config).unwrap_or_else(|e| panic!("a client for {account}: {e}"))
    }
}

/// The client configuration in the kubeconfig at `path`.
async fn config_from(path: &Path) -> Config {
    // The workspace enables both of rustls's crypto backends (other crates want
    // aws-lc-rs), so rustls cannot pick one itself; kube's client uses the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", path.display()));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("load kubeconfig {}: {e}", path.display()))
}

/// A client for the kubeconfig at `path`.
async fn client_from(path: &Path) -> Client {
    Client::try_from(config_from(path).await)
        .unwrap_or_else(|e| panic!("kube client for {}: {e}", path.display()))
}

fn start() -> ControlPlane {
    let etcd_bin = tools::binary("LARDER_ETCD", None, INSTALL_HINT);
    let apiserver_bin = tools::binary("LARDER_KUBE_APISERVER", None, INSTALL_HINT);
    let manager_bin = tools::binary("LARDER_KUBE_CONTROLLER_MANAGER", None, INSTALL_HINT);
    let dir = temp_dir("k8s");
    let pki = Pki::generate(&dir);

    let etcd_port = free_port();
    let mut etcd = Service::start(
        "etcd",
        etcd_command(&etcd_bin, &dir, etcd_port),
        &dir.join("etcd.log"),
    );
    etcd.wait_for_port(etcd_port, START_TIMEOUT);

    let api_port = free_port();
    let server = format!("https://127.0.0.1:{api_port}");
    let mut apiserver = Service::start(
        "kube-apiserver",
        apiserver_command(&apiserver_bin, &dir, &pki, api_port, etcd_port),
        &dir.join("kube-apiserver.log"),
    );
    let kubeconfig = dir.join("kubeconfig");
    write(
        &kubeconfig,
        &kubeconfig::render(&server, &pki.ca.cert, &pki.admin, "larder-test-admin"),
    );
    let manager_kubeconfig = dir.join("kube-controller-manager.kubeconfig");
    write(
        &manager_kubeconfig,
        &kubeconfig::render(
            &server,
            &pki.ca.cert,
            &pki.controller_manager,
            "kube-controller-manager",
        ),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime for control plane startup");
    let client = runtime.block_on(client_from(&kubeconfig));
    apiserver.wait_until("/readyz reports ok", START_TIMEOUT, || {
        runtime.block_on(ready(&client))
    });

    let mut controller_manager = Service::start(
        "kube-controller-manager",
        controller_manager_command(&manager_bin, &dir, &pki, &manager_kubeconfig),
        &dir.join("kube-controller-manager.log"),
    );
    // The first visible sign that its controllers run: the ServiceAccount controller
    // gives every namespace a `default` account.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
    controller_manager.wait_until(
        "ServiceAccount default/default exists",
        START_TIMEOUT,
        || runtime.block_on(async { accounts.get_opt("default").await.ok().flatten().is_some() }),
    );

    ControlPlane {
        dir,
        server,
        kubeconfig,
        _etcd: etcd,
        _apiserver: apiserver,
        _controller_manager: controller_manager,
    }
}

/// True when the API server's `/readyz` answers `ok` (all post-start hooks done).
async fn ready(client: &Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await;
    matches!(answer, Ok(Ok(body)) if body.trim() == "ok")
}

fn etcd_command(bin: &Path, dir: &Path, port: u16) -> Command {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--name=larder-test")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=larder-test={peer}"))
        // Throwaway data: durability only costs time.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    cmd
}

fn apiserver_command(bin: &Path, dir: &Path, pki: &Pki, port: u16, etcd_port: u16) -> Command {
    let sa_key = pki.service_account_key.display();
    let sa_public_key = pki.service_account_public_key.display();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg(format!("--tls-cert-file={}", pki.apiserver.cert.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.apiserver.key.display()
        ))
        .arg(format!("--client-ca-file={}", pki.ca.cert.display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={sa_public_key}"))
        .arg(format!("--service-account-signing-key-file={sa_key}"))
        .arg("--service-cluster-ip-range=10.96.0.0/16")
        .arg("--allow-privileged=true")
        .arg("--profiling=false");
    cmd
}

fn controller_manager_command(bin: &Path, dir: &Path, pki: &Pki, kubeconfig: &Path) -> Command {
    let kubeconfig = kubeconfig.display();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--kubeconfig={kubeconfig}"))
        .arg(format!("--authentication-kubeconfig={kubeconfig}"))
        .arg(format!("--authorization-kubeconfig={kubeconfig}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={}", free_port()))
        .arg(format!("--cert-dir={}", dir.join("kcm-certs").display()))
        .arg("--leader-elect=false")
        .arg("--cluster-name=larder-test")
        .arg(format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ))
        .arg(format!("--root-ca-file={}", pki.ca.cert.display()))
        .arg(format!(
            "--cluster-signing-cert-file={}",
            pki.ca.cert.display()
        ))
        .arg(format!(
            "--cluster-signing-key-file={}",
            pki.ca.key.display()
        ))
        .arg("--profiling=false");
    cmd
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "startup panicked".to_string())
}
