//! The signing key: generated once when absent, never replaced, shown in status and in the
//! columns `kubectl get bc` prints; a key the user brings is used as it is.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::build::signing_key;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, create, database_secret, events_about, eventually, get, install_crds, minimal_cache,
    ready_reason, row, secret, table, Operator, WAIT,
};

fn key_text(secret: &Secret) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data["secret-key"].0.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_is_made_once_kept_and_shown() {
    let (client, ns) = ControlPlane::namespace("operator-signing-key").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let mut cache = minimal_cache("keys");
    cache.spec.url = Some("https://nix.example.org".into());
    create(&client, &ns, &cache).await;

    let made: Secret = appears(&client, &ns, "keys-signing-key").await;
    assert!(
        made.metadata.owner_references.is_none(),
        "a generated key must outlive its cache"
    );
    let public = signing_key::public_key(&key_text(&made)).unwrap();
    assert!(public.starts_with("nix.example.org-1:"), "{public}");
    let shown = ready_reason(&client, &ns, "keys", "NoWorkers").await;
    assert_eq!(
        shown.status.unwrap().public_key.as_deref(),
        Some(public.as_str())
    );

    // `kubectl get bc`: the printer columns' JSONPaths resolve on the served object.
    let cells = row(&table(&client, &ns, "binarycaches").await, "keys");
    assert_eq!(cells["Public Key"], public);
    assert_eq!(cells["URL"], "https://nix.example.org");
    assert_eq!(cells["Ready"], "False");

    // More reconciles (a spec change) never touch the key.
    let change = serde_json::json!({"spec": {"priority": 20}});
    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    caches
        .patch("keys", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    eventually("generation 2 reconciled", WAIT, async || {
        let c: BinaryCache = get(&client, &ns, "keys").await.ok_or("gone")?;
        let observed = c.status.as_ref().and_then(|s| s.observed_generation);
        (observed == Some(2))
            .then_some(())
            .ok_or_else(|| format!("{observed:?}"))
    })
    .await;
    let after: Secret = get(&client, &ns, "keys-signing-key").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        made.metadata.resource_version
    );
    let generated = events_about(&client, &ns, "keys")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SigningKeyGenerated"))
        .count();
    assert_eq!(generated, 1);

    // A cache deleted and made again under the same name signs with the same key.
    caches
        .delete("keys", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the cache is gone",
        WAIT,
        async || match get::<BinaryCache>(&client, &ns, "keys").await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        },
    )
    .await;
    create(&client, &ns, &cache).await;
    let again = ready_reason(&client, &ns, "keys", "NoWorkers").await;
    assert_eq!(
        again.status.unwrap().public_key.as_deref(),
        Some(public.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_user_brings_is_used_and_left_alone() {
    let (client, ns) = ControlPlane::namespace("operator-own-key").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let key = signing_key::generate("cache.example.org-7", [42; 32]);
    secret(&client, &ns, "own-key", &[("secret-key", &key)]).await;
    let mut cache = minimal_cache("own");
    cache.spec.signing_key.secret_name = Some("own-key".into());
    create(&client, &ns, &cache).await;

    let ready = ready_reason(&client, &ns, "own", "NoWorkers").await;
    let expected = signing_key::public_key(&key).unwrap();
    assert_eq!(ready.status.unwrap().public_key, Some(expected));
    let stored: Secret = get(&client, &ns, "own-key").await.unwrap();
    assert_eq!(key_text(&stored), key);
    assert!(get::<Secret>(&client, &ns, "own-signing-key")
        .await
        .is_none());
}
