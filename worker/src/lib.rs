//! Larder worker: a Nix binary cache on S3 with niks3-compatible upload sessions.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod db;
pub mod gc;
pub mod index;
pub mod nix;
pub mod push;
pub mod read;
pub mod report;
pub mod secret_file;
pub mod server;
pub mod storage;
pub mod upload;
