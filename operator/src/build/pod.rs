//! The pod every Larder process runs in: workers, index builds, GC runs and migrations.
//!
//! The contract with the `larder` binary is environment variables (from the ConfigMap and
//! Secrets) and files mounted under `/etc/larder`; see `config_map.rs` for the variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, EnvFromSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};

use super::{names, resources};
use crate::crd::BinaryCacheSpec;

/// Where the signing key Secret is mounted.
pub const SIGNING_KEY_DIR: &str = "/etc/larder/signing-key";
/// File inside [`SIGNING_KEY_DIR`] holding the key.
pub const SIGNING_KEY_FILE: &str = "secret-key";
/// Where the token file from the push tokens Secret is mounted.
pub const TOKENS_DIR: &str = "/etc/larder/tokens";
/// File inside [`TOKENS_DIR`] holding the tokens.
pub const TOKENS_FILE: &str = "tokens";
/// `--data-dir`, inside the writable `/tmp` volume.
pub const DATA_DIR: &str = "/tmp/larder-data";
/// Container name of every Larder process.
pub const CONTAINER: &str = "larder";
/// UID the image runs as; any non-root UID works since nothing is written but /tmp.
const RUN_AS: i64 = 65532;

/// What a pod runs and which Secrets it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    /// Arguments after the `larder` entrypoint, e.g. `["serve"]`.
    pub args: Vec<String>,
    /// Mount the signing key (only processes that sign need it).
    pub signing_key: bool,
    /// Mount push tokens (only the server checks them).
    pub push_tokens: bool,
}

/// The pod spec running `process` for `cache` with `image`.
pub fn spec(cache: &str, spec: &BinaryCacheSpec, image: &str, process: &Process) -> PodSpec {
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("tmp", "/tmp")];
    if process.signing_key {
        volumes.push(secret_volume(
            "signing-key",
            names::signing_key_secret(cache, spec),
            Some((&spec.signing_key.key, SIGNING_KEY_FILE)),
        ));
        mounts.push(mount("signing-key", SIGNING_KEY_DIR));
    }
    if let (true, Some(tokens)) = (process.push_tokens, &spec.push_tokens) {
        volumes.push(secret_volume(
            "tokens",
            tokens.secret_name.clone(),
            Some((&tokens.key, TOKENS_FILE)),
        ));
        mounts.push(mount("tokens", TOKENS_DIR));
    }
    PodSpec {
        service_account_name: Some(names::workers(cache)),
        automount_service_account_token: Some(spec_needs_token(spec)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: CONTAINER.into(),
            image: Some(image.to_string()),
            args: Some(process.args.clone()),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: names::config_map(cache),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(secret_env(spec)),
            volume_mounts: Some(mounts),
            security_context: Some(hardened()),
            resources: Some(resources::with_defaults(spec.workers.resources.as_ref())),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Container::default()
        }],
        volumes: Some(volumes),
        node_selector: non_empty(&spec.workers.node_selector),
        tolerations: (!spec.workers.tolerations.is_empty())
            .then(|| spec.workers.tolerations.clone()),
        affinity: spec.workers.affinity.clone(),
        ..PodSpec::default()
    }
}

/// IRSA injects credentials through the projected ServiceAccount token; nothing else needs it.
fn spec_needs_token(spec: &BinaryCacheSpec) -> bool {
    spec.storage
        .credentials
        .as_ref()
        .is_some_and(|c| c.role_arn.is_some())
}

/// The environment taken from Secrets: the database URL and, when given, static S3 keys
/// (the worker's own `--s3-access-key-id` / `--s3-secret-access-key`).
fn secret_env(spec: &BinaryCacheSpec) -> Vec<EnvVar> {
    let db = &spec.database.url_secret;
    let mut env = vec![secret_var("LARDER_DATABASE_URL", &db.name, &db.key)];
    if let Some(secret) = spec
        .storage
        .credentials
        .as_ref()
        .and_then(|c| c.secret.as_ref())
    {
        env.push(secret_var(
            "LARDER_S3_ACCESS_KEY_ID",
            &secret.name,
            &secret.access_key_id_key,
        ));
        env.push(secret_var(
            "LARDER_S3_SECRET_ACCESS_KEY",
            &secret.name,
            &secret.secret_access_key_key,
        ));
    }
    env
}

fn secret_var(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_volume(name: &str, secret: String, item: Option<(&str, &str)>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.into(),
                    path: path.into(),
                    mode: None,
                }]
            }),
            // Owner read only: the process needs nothing more.
            default_mode: Some(0o400),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(path != "/tmp"),
        ..VolumeMount::default()
    }
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation.
fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn non_empty(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    fn serve() -> Process {
        Process {
            args: vec!["serve".into()],
            signing_key: true,
            push_tokens: true,
        }
    }

    #[test]
    fn pods_are_hardened() {
        let cache = fixtures::minimal();
        let pod = spec("main", &cache.spec, "larder:1", &serve());
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
    }

    #[test]
    fn static_s3_keys_come_from_their_secret() {
        let cache = fixtures::full();
        let pod = spec("main", &cache.spec, "larder:1", &serve());
        let env = pod.containers[0].env.as_ref().unwrap();
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "LARDER_DATABASE_URL",
                "LARDER_S3_ACCESS_KEY_ID",
                "LARDER_S3_SECRET_ACCESS_KEY"
            ]
        );
        let key = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(key.name, "s3-keys");
    }

    #[test]
    fn only_signers_mount_the_signing_key() {
        let cache = fixtures::full();
        let gc = Process {
            args: vec!["gc".into()],
            signing_key: false,
            push_tokens: false,
        };
        let pod = spec("main", &cache.spec, "larder:1", &gc);
        let volumes: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["tmp"]);
        let pod = spec("main", &cache.spec, "larder:1", &serve());
        let volumes: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["tmp", "signing-key", "tokens"]);
    }

    #[test]
    fn pods_without_resources_request_the_defaults() {
        let cache = fixtures::minimal();
        assert_eq!(cache.spec.workers.resources, None);
        let pod = spec("main", &cache.spec, "larder:1", &serve());
        let requests = pod.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        assert_eq!(requests["cpu"].0, resources::DEFAULT_CPU_REQUEST);
        assert_eq!(requests["memory"].0, resources::DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn irsa_needs_the_service_account_token() {
        let minimal = fixtures::minimal();
        let pod = spec("main", &minimal.spec, "larder:1", &serve());
        assert_eq!(pod.automount_service_account_token, Some(false));
        let irsa = fixtures::irsa();
        let pod = spec("main", &irsa.spec, "larder:1", &serve());
        assert_eq!(pod.automount_service_account_token, Some(true));
    }
}
