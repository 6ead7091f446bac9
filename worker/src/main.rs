//! The `larder` command.

fn main() {
    println!("larder {}", env!("CARGO_PKG_VERSION"));
}
