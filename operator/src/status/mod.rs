//! Pure computation of `status`: conditions, replica counts and GC run results.

pub mod binary_cache;
pub mod conditions;
pub mod gc_policy;
