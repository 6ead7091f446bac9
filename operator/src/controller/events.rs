//! Kubernetes Events on the reconciled object; failing to publish one never fails a reconcile.
//!
//! kube's Recorder folds an Event into an earlier one (a series, keeping the first note) when
//! type, reason, action and the objects it is about agree; the note does not count. So every
//! Event about a child names the child as its related object, and notes that differ under one
//! reason (validation messages) go through a recorder of their own.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::apply::Applied;
use super::binary_cache::get;
use super::{Context, Error};

/// The reason and observed generation of the `Ready` condition among `conditions`: what
/// the Warning about an invalid object was last published for.
pub fn ready_reason(conditions: &[Condition]) -> Option<(String, Option<i64>)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason.clone(), c.observed_generation))
}

/// One Event to publish about a reconciled object.
#[derive(Clone, Debug)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// What the operator did or tried.
    pub action: &'static str,
    /// The message.
    pub note: String,
    /// The other object the Event is about (a child, a Job).
    pub related: Option<ObjectReference>,
}

impl Note {
    /// A Normal Event for a child that was created or changed; none when it was unchanged.
    pub fn applied<C: Resource<DynamicType = ()>>(child: &C, applied: Applied) -> Option<Note> {
        let reason = match applied {
            Applied::Created => "Created",
            Applied::Updated => "Updated",
            Applied::Unchanged => return None,
        };
        let name = child.meta().name.as_deref().unwrap_or_default();
        Some(Note {
            type_: EventType::Normal,
            reason: reason.to_string(),
            action: "Apply",
            note: format!("{reason} {} {name}", C::kind(&())),
            related: Some(child.object_ref(&())),
        })
    }

    /// A Normal Event for a CronJob set to start no more runs.
    pub fn suspended<C: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Note {
        Note::done_to::<C>("Suspended", "Suspend", namespace, name)
    }

    /// A Normal Event for a child that was deleted.
    pub fn deleted<C: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Note {
        Note::done_to::<C>("Deleted", "Delete", namespace, name)
    }

    /// A Normal Event saying `reason` (e.g. "Deleted") of the child known by `name`.
    fn done_to<C: Resource<DynamicType = ()>>(
        reason: &str,
        action: &'static str,
        namespace: &str,
        name: &str,
    ) -> Note {
        Note {
            type_: EventType::Normal,
            reason: reason.to_string(),
            action,
            note: format!("{reason} {} {name}", C::kind(&())),
            related: Some(reference::<C>(namespace, name)),
        }
    }
}

/// A reference to an object known only by its type and name.
pub fn reference<C: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(C::api_version(&()).into_owned()),
        kind: Some(C::kind(&()).into_owned()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    }
}

/// Publishes `note` about `owner`.
pub async fn publish<K: Resource<DynamicType = ()>>(recorder: &Recorder, owner: &K, note: Note) {
    let event = Event {
        type_: note.type_,
        reason: note.reason,
        note: Some(note.note),
        action: note.action.to_string(),
        secondary: note.related,
    };
    if let Err(e) = recorder.publish(&event, &owner.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
    }
}

/// Publishes every note about `owner`, side by side.
pub async fn publish_all<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    owner: &K,
    notes: Vec<Note>,
) {
    futures::future::join_all(notes.into_iter().map(|n| publish(recorder, owner, n))).await;
}

/// Publishes a Warning with `reason` about `obj` unless its stored `Ready` condition (read by
/// `conditions`) already has that reason for this generation: one Event per new problem or
/// spec change, not one per retry.
pub async fn warn_once<K>(
    ctx: &Context,
    obj: &K,
    conditions: impl Fn(&K) -> Option<&[Condition]>,
    reason: &str,
    action: &'static str,
    note: String,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let published = |latest: &K| {
        conditions(latest).and_then(ready_reason)
            == Some((reason.to_string(), obj.meta().generation))
    };
    let note = Note {
        type_: EventType::Warning,
        reason: reason.into(),
        action,
        note,
        related: None,
    };
    publish_unless(ctx, obj, published, note).await
}

/// Publishes `note` about `obj` unless `published` says the object's stored state (its
/// status as the last reconcile wrote it) shows the Event went out already. The notes go
/// through a fresh recorder, since the news is often only in the note.
pub async fn publish_unless<K>(
    ctx: &Context,
    obj: &K,
    published: impl Fn(&K) -> bool,
    note: Note,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    // Read from the API server, not the controller's cache: a reconcile queued while
    // the last one ran may get the object without the status that one just wrote, and
    // would publish a second time.
    let namespace = obj.namespace().ok_or(Error::Metadata("namespace"))?;
    let latest = get::<K>(&ctx.client, &namespace, &obj.name_any()).await?;
    if !published(latest.as_ref().unwrap_or(obj)) {
        publish(&ctx.fresh_recorder(), obj, note).await;
    }
    Ok(())
}
