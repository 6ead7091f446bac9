//! Rebuilds the worker when a migration is added: `sqlx::migrate!` embeds the files of
//! `migrations/` at compile time but cannot ask cargo to watch the folder itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
