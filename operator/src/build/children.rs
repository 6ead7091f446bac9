//! Every child of a cache, assembled from the builders for one reconcile.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::rollout::Rollout;
use super::{
    checksum, config_map, deployment, hpa, index_cronjob, ingress, migration_job, pdb, service,
    service_account,
};
use crate::validate::ValidCache;

/// The desired children. `None` on an optional kind means "must not exist"; on the Deployment
/// it means "not yet" (no migrated image), and an existing one is left alone.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheChildren {
    /// Always present.
    pub service_account: ServiceAccount,
    /// Always present.
    pub config_map: ConfigMap,
    /// Always present.
    pub service: Service,
    /// Workers, once an image is migrated.
    pub deployment: Option<Deployment>,
    /// Only with more than one worker.
    pub pdb: Option<PodDisruptionBudget>,
    /// Only when autoscaling is asked for.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Only when an ingress is asked for.
    pub ingress: Option<Ingress>,
    /// Only when the index is enabled and an image is migrated.
    pub index_cronjob: Option<CronJob>,
    /// Only while a migration is due.
    pub migration_job: Option<Job>,
}

/// Builds every child of `cache` for `rollout`.
pub fn build(cache: &ValidCache, rollout: &Rollout) -> CacheChildren {
    let view = &cache.view;
    let config_map = config_map::build(view);
    let checksum = checksum::of_pod_inputs(
        config_map.data.as_ref().unwrap_or(&Default::default()),
        &cache.pod_secrets,
    );
    let worker_image = rollout.worker_image();
    CacheChildren {
        service_account: service_account::build(view),
        service: service::build(view),
        deployment: worker_image.map(|image| deployment::build(view, image, &checksum)),
        pdb: pdb::build(view),
        hpa: hpa::build(view),
        ingress: ingress::build(view),
        index_cronjob: worker_image.and_then(|image| index_cronjob::build(view, image)),
        migration_job: rollout
            .needs_migration_job()
            .then(|| migration_job::build(view, &cache.image, &cache.database_checksum)),
        config_map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;
    use crate::build::rollout::{decide, MigrationFacts};
    use crate::build::signing_key;
    use crate::validate::{validate, Defaults, Secrets};

    fn all_secrets() -> Secrets {
        let key = signing_key::generate("cache.example.org-1", [5; 32]);
        [
            (
                "larder-db",
                vec![("url", "postgres://db/larder".to_string())],
            ),
            (
                "s3-keys",
                vec![
                    ("AWS_ACCESS_KEY_ID", "a".into()),
                    ("AWS_SECRET_ACCESS_KEY", "b".into()),
                ],
            ),
            ("cache-key", vec![("secret-key", key.clone())]),
            ("main-signing-key", vec![("secret-key", key)]),
            (
                "push-tokens",
                vec![("tokens", "0123456789abcdef push ci\n".into())],
            ),
        ]
        .into_iter()
        .map(|(name, data)| {
            let data = data
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into_bytes()))
                .collect();
            (name.to_string(), Some(data))
        })
        .collect()
    }

    fn render(cache: &crate::crd::BinaryCache, facts: &MigrationFacts) -> Vec<serde_json::Value> {
        let defaults = Defaults {
            worker_image: "larder:0.1.0".into(),
        };
        let secrets = all_secrets();
        let valid = validate(cache, &secrets, &defaults).unwrap();
        let rollout = decide(&valid.image, &valid.database_checksum, facts);
        let c = build(&valid, &rollout);
        let mut out = vec![
            serde_json::to_value(&c.service_account).unwrap(),
            serde_json::to_value(&c.config_map).unwrap(),
            serde_json::to_value(&c.service).unwrap(),
        ];
        let optional = [
            c.deployment.map(|o| serde_json::to_value(o).unwrap()),
            c.pdb.map(|o| serde_json::to_value(o).unwrap()),
            c.hpa.map(|o| serde_json::to_value(o).unwrap()),
            c.ingress.map(|o| serde_json::to_value(o).unwrap()),
            c.index_cronjob.map(|o| serde_json::to_value(o).unwrap()),
            c.migration_job.map(|o| serde_json::to_value(o).unwrap()),
        ];
        out.extend(optional.into_iter().flatten());
        out
    }

    fn migrated(image: &str) -> MigrationFacts {
        MigrationFacts {
            job: Some(crate::build::migration_job::JobState::Succeeded),
            current_image: Some(image.into()),
            ..MigrationFacts::default()
        }
    }

    #[test]
    fn minimal_cache_first_install() {
        // No migration yet: no workers, no index CronJob, only the migration Job.
        insta::assert_yaml_snapshot!(render(&fixtures::minimal(), &MigrationFacts::default()));
    }

    #[test]
    fn minimal_cache_migrated() {
        insta::assert_yaml_snapshot!(render(&fixtures::minimal(), &migrated("larder:0.1.0")));
    }

    #[test]
    fn full_cache_migrated() {
        insta::assert_yaml_snapshot!(render(&fixtures::full(), &migrated("larder:1.2.3")));
    }

    #[test]
    fn irsa_cache_migrated() {
        insta::assert_yaml_snapshot!(render(&fixtures::irsa(), &migrated("larder:0.1.0")));
    }

    #[test]
    fn a_secret_change_rolls_the_workers() {
        let cache = fixtures::minimal();
        let defaults = Defaults {
            worker_image: "larder:0.1.0".into(),
        };
        let checksum_with = |url: &str| {
            let mut secrets = all_secrets();
            secrets.insert(
                "larder-db".into(),
                Some([("url".to_string(), url.as_bytes().to_vec())].into()),
            );
            let valid = validate(&cache, &secrets, &defaults).unwrap();
            let rollout = crate::build::rollout::Rollout::Current {
                image: "larder:0.1.0".into(),
            };
            let d = build(&valid, &rollout).deployment.unwrap();
            d.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[crate::build::CHECKSUM_ANNOTATION]
                .clone()
        };
        assert_ne!(checksum_with("postgres://a"), checksum_with("postgres://b"));
    }
}
