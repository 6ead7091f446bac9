//! The `larder-operator` command.

fn main() {
    println!("larder-operator {}", env!("CARGO_PKG_VERSION"));
}
