//! `larder keygen NAME`: a signing key in Nix's `name:base64` format.

use clap::Args;

use crate::nix::SecretKey;

use super::CliError;

/// Print a new signing key in Nix's format, and its public key on stderr
///
/// The secret key (`NAME:base64`) goes to stdout, for `larder serve --signing-key-file`;
/// the public key goes to stderr, for clients' trusted-public-keys. NAME may not hold
/// whitespace or ':'.
///
/// Example:
///
///   (umask 077; larder keygen cache.example.org-1 > signing-key)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct KeygenArgs {
    /// Key name, conventionally the cache's host name and a number (`cache.example.org-1`).
    pub name: String,
}

/// Prints the secret key on stdout and its public key on stderr.
pub fn run(args: KeygenArgs) -> Result<(), CliError> {
    let key = generate(&args.name)?;
    println!("{}", key.to_nix_string());
    eprintln!("public key: {}", key.public_key());
    Ok(())
}

/// A fresh key from the system's randomness.
pub fn generate(name: &str) -> Result<SecretKey, CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| CliError::Message(format!("no system randomness: {e}")))?;
    SecretKey::from_seed(name, seed).map_err(|e| CliError::Message(e.to_string()))
}
