//! The operator against a real kube-apiserver, etcd and kube-controller-manager.
//!
//! One test binary, so every test shares one control plane (starting it is the slow part);
//! each test has its own namespace and its own operator watching only that namespace.
//! Scenarios: CRDs install from `crds/`; a cache becomes its children and follows spec
//! changes; invalid caches and missing Secrets are reported without a hot loop; the signing
//! key is made once and shown; GC policies report their runs; deleting a cache collects its
//! children; a suspended cache stops its schedules; of two replicas only the leader writes;
//! the Helm chart's objects are accepted and its RBAC is all the controllers need.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod cache_autoscaling;
mod cache_children;
mod cache_conflict;
mod cache_deletion;
mod cache_invalid;
mod cache_migration;
mod cache_service;
mod cache_suspend;
mod cache_updates;
mod chart;
mod crds;
mod gc_policy;
mod leader;
mod signing_key;
mod support;
mod watch_failures;
