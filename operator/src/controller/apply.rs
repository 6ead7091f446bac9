//! Server-side apply of children with one field manager, and removal of children no longer wanted.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;

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
/// changed it.
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
    let ours = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !ours {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::kube("delete", K::kind(&()), name, e)),
    }
}
