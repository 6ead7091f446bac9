//! Upload sessions, the niks3 write API: pending closures, multipart, sign, commit.

pub mod files;
pub mod handlers;
pub mod plan;
pub mod session;
pub mod wire;

pub use handlers::router;
