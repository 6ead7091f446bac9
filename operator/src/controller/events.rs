//! Kubernetes Events on the reconciled object; failing to publish one never fails a reconcile.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;

use super::apply::Applied;

/// Publishes a Normal event when a child was created or changed.
pub async fn child_applied<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    owner: &K,
    kind: &str,
    name: &str,
    applied: Applied,
) {
    let reason = match applied {
        Applied::Created => "Created",
        Applied::Updated => "Updated",
        Applied::Unchanged => return,
    };
    publish(
        recorder,
        owner,
        EventType::Normal,
        reason,
        "Apply",
        format!("{reason} {kind} {name}"),
    )
    .await;
}

/// Publishes an event.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    owner: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &owner.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish event");
    }
}
