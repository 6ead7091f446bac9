//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe.
//!
//! Writes use the Lease's resourceVersion (optimistic concurrency): of two replicas racing for
//! an expired Lease only one update succeeds.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

/// Why leading ended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderError {
    /// Another replica took the Lease, or renewing failed for a whole lease duration.
    #[error("lost the leader Lease {0}; another replica leads now")]
    Lost(String),
}

/// What to do with the Lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Free or expired: take it.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds it.
    Wait,
}

/// Decides from the Lease's spec (none when it does not exist) whether `me` may lead at `now`.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(holder) if holder == me => return Decision::Renew,
        Some(_) => {}
    }
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(renewed) if renewed.0 + duration > now => Decision::Wait,
        _ => Decision::Acquire,
    }
}

/// The spec that takes or renews the Lease for `me`.
pub fn next_spec(
    old: Option<&LeaseSpec>,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let ours = old.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if ours {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || old.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// A Lease held (or wanted) by one replica.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
}

impl Elector {
    /// An elector for Lease `name` in `namespace`, identifying as `me`.
    pub fn new(client: Client, namespace: &str, name: &str, me: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
            duration,
        }
    }

    /// One round: take or renew the Lease if allowed; returns whether we lead afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        if decide(spec, &self.me, now) == Decision::Wait {
            return Ok(false);
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: existing
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(next_spec(spec, &self.me, self.duration, now)),
        };
        let result = match existing {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Another replica wrote first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for the Lease, then runs `work` while holding it: `work` is dropped (stopped) the
    /// moment the Lease is lost, so a replica that no longer leads never writes. When `work`
    /// ends on its own (shutdown) the Lease is released, so a standby takes over at once.
    pub async fn lead<T>(&self, work: impl Future<Output = T>) -> Result<T, LeaderError> {
        self.acquire().await;
        tracing::info!(identity = %self.me, lease = %self.name, "leading");
        tokio::select! {
            out = work => {
                self.release().await;
                Ok(out)
            }
            () = self.keep() => Err(LeaderError::Lost(self.name.clone())),
        }
    }

    /// Gives the Lease up if this replica holds it; a failure only delays the next leader.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "releasing the leader lease");
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_lead().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Renews the Lease until a renewal fails for a whole lease duration; then returns, and the
    /// caller must stop acting as leader.
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_lead().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease"),
            }
            if last_ok.elapsed() >= self.duration {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn held_by(who: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn free_or_expired_lease_is_taken() {
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("b", 80)), "a", at(100)),
            Decision::Acquire
        );
    }

    #[test]
    fn live_lease_of_another_is_respected() {
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", at(100)),
            Decision::Wait
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&held_by("a", 10)), "a", at(100)),
            Decision::Renew
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let mut old = held_by("b", 10);
        old.lease_transitions = Some(2);
        let taken = next_spec(Some(&old), "a", Duration::from_secs(15), at(100));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = next_spec(Some(&taken), "a", Duration::from_secs(15), at(105));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));
    }
}
