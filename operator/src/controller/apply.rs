//! Server-side apply of children with one field manager, and removal of children no longer wanted.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;
use crate::build::MANAGED_BY_LABEL;

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "larder-operator";

/// What applying did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The object did not exist.
    Created,
    /// The object changed.
    Updated,
    /// The object was already as wanted.
    Unchanged,
}

/// Applies `obj` in `namespace`; returns the object as stored and whether that created or
/// changed it. An object of that name that another owner controls, or that someone made by
/// hand, is refused rather than taken over (see [`may_apply_over`]).
pub async fn apply<K>(client: &Client, namespace: &str, obj: &K) -> Result<(Applied, K), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.name_any();
    let before = api
        .get_metadata_opt(&name)
        .await
        .map_err(|e| Error::kube("read", K::kind(&()), &name, e))?;
    if let Some(existing) = &before {
        if let Err(controller) = may_apply_over(&existing.metadata, obj.meta()) {
            return Err(Error::NotOwned {
                kind: K::kind(&()).into_owned(),
                name,
                controller,
            });
        }
    }
    // `force`: the operator owns these fields; another manager's edits are overwritten.
    let params = PatchParams::apply(MANAGER).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(|e| Error::kube("apply", K::kind(&()), &name, e))?;
    let applied = match before {
        None => Applied::Created,
        Some(b) if b.metadata.resource_version != after.meta().resource_version => Applied::Updated,
        Some(_) => Applied::Unchanged,
    };
    Ok((applied, after))
}

/// Whether the wanted object may be applied over the `existing` one of the same name: yes
/// when the wanted object's controller also controls the existing one, or when the existing
/// one has no controller but carries the operator's label (orphaned by a deleted owner,
/// e.g. `kubectl delete --cascade=orphan`). Anything else belongs to someone else: a forced
/// apply would rewrite it (a Service's selector, a Deployment's pods) and the owner reference
/// it adds would have the garbage collector delete it with the cache. The error says who
/// controls it.
pub fn may_apply_over(existing: &ObjectMeta, wanted: &ObjectMeta) -> Result<(), String> {
    let Some(wanted_controller) = controller_of(wanted) else {
        return Ok(());
    };
    match controller_of(existing) {
        Some(c) if c.uid == wanted_controller.uid => Ok(()),
        Some(c) => Err(format!("{} {} (uid {})", c.kind, c.name, c.uid)),
        None if existing
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|v| v == MANAGER) =>
        {
            Ok(())
        }
        None => Err("no controller (made outside the operator)".into()),
    }
}

/// The owner reference marked as controller (the API server allows one at most).
pub(super) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Creates `obj` unless an object of that name exists; never overwrites (keys are made once).
pub async fn create_once<K>(client: &Client, namespace: &str, obj: &K) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.name_any();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(Error::kube("create", K::kind(&()), &name, e)),
    }
}

/// Deletes `name` if it exists and is controlled by the owner with `owner_uid`; says whether it did.
pub async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_metadata_opt(name)
        .await
        .map_err(|e| Error::kube("read", K::kind(&()), name, e))?
    else {
        return Ok(false);
    };
    // Never delete what someone else made under the same name.
    let ours = controller_of(&existing.metadata).is_some_and(|c| c.uid == owner_uid);
    if !ours {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube("delete", K::kind(&()), name, e)),
    }
}

/// Deletes the objects of kind `K` labelled `selector` that the owner with `owner_uid`
/// controls, except `keep`; their dependents (a Job's pods) go in the background. Returns
/// the names deleted. Objects with another controller or none are never touched, whatever
/// their labels say.
pub async fn delete_owned_except<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    keep: &str,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let found = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube("list", K::kind(&()), selector, e))?;
    let mut deleted = Vec::new();
    for meta in found.items.iter().map(|o| &o.metadata) {
        let name = meta.name.clone().unwrap_or_default();
        let ours = controller_of(meta).is_some_and(|c| c.uid == owner_uid);
        if name == keep || !ours || meta.deletion_timestamp.is_some() {
            continue;
        }
        // The uid precondition: delete the object just looked at, not a namesake made since.
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        });
        match api.delete(&name, &params).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            Err(e) => return Err(Error::kube("delete", K::kind(&()), &name, e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(controller_uid: Option<&str>, managed_by: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("main".into()),
            owner_references: controller_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "larder.dev/v1alpha1".into(),
                    kind: "BinaryCache".into(),
                    name: "main".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            labels: managed_by
                .map(|m| BTreeMap::from([(MANAGED_BY_LABEL.to_string(), m.to_string())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_own_or_orphaned_children_are_applied_over() {
        let wanted = meta(Some("u1"), Some(MANAGER));
        assert_eq!(may_apply_over(&meta(Some("u1"), None), &wanted), Ok(()));
        assert_eq!(may_apply_over(&meta(None, Some(MANAGER)), &wanted), Ok(()));
        // A cache deleted and made again under the same name: the old children go with the
        // old cache; the new one waits rather than adopt what the garbage collector deletes.
        let other = may_apply_over(&meta(Some("u0"), Some(MANAGER)), &wanted).unwrap_err();
        assert!(other.contains("u0"), "{other}");
        assert!(may_apply_over(&meta(None, None), &wanted).is_err());
        assert!(may_apply_over(&meta(None, Some("helm")), &wanted).is_err());
    }
}
