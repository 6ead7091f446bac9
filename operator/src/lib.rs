//! Larder operator: turns `BinaryCache` and `GCPolicy` resources into workers, CronJobs and status.
//!
//! A reconcile is a pipeline: `controller` fetches what a resource references, `validate`
//! checks it (pure), `build` renders every child (pure), `controller` applies them with
//! server-side apply, and `status` computes what to report (pure).

pub mod build;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod validate;
