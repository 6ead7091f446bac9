//! Kubernetes Events on the reconciled object; failing to publish one never fails a reconcile.
//!
//! kube's Recorder folds an Event into an earlier one (a series, keeping the first note) when
//! type, reason, action and the objects it is about agree; the note does not count. So every
//! Event about a child names the child as its related object, and notes that differ under one
//! reason (validation messages) go through a recorder of their own.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;

use super::apply::Applied;

/// Publishes a Normal event, related to `child`, when the child was created or changed.
pub async fn child_applied<K, C>(recorder: &Recorder, owner: &K, child: &C, applied: Applied)
where
    K: Resource<DynamicType = ()>,
    C: Resource<DynamicType = ()>,
{
    let reason = match applied {
        Applied::Created => "Created",
        Applied::Updated => "Updated",
        Applied::Unchanged => return,
    };
    let kind = C::kind(&());
    let name = child.meta().name.as_deref().unwrap_or_default();
    let event = Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(format!("{reason} {kind} {name}")),
        action: "Apply".to_string(),
        secondary: Some(child.object_ref(&())),
    };
    send(recorder, owner, &event).await;
}

/// A reference to a child known only by its type and name (one that was deleted).
pub fn reference<C: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(C::api_version(&()).into_owned()),
        kind: Some(C::kind(&()).into_owned()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    }
}

/// Publishes an event about `owner`, and about `related` when given.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    owner: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: related,
    };
    send(recorder, owner, &event).await;
}

async fn send<K: Resource<DynamicType = ()>>(recorder: &Recorder, owner: &K, event: &Event) {
    if let Err(e) = recorder.publish(event, &owner.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
    }
}
