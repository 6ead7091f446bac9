//! The push client used by `larder push`.

pub mod dump;
