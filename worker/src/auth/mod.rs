//! Who may do what: bearer tokens with scopes (OIDC comes later).

pub mod tokens;

pub use tokens::{Scope, TokenError, Tokens};
