//! Bearer tokens from a file, each with scopes, compared in constant time.
//!
//! File format, one token per line (blank lines and `#` comments ignored):
//!
//! ```text
//! <token> <scope>[,<scope>…] [name]
//! ```
//!
//! Scopes are `push`, `read` and `admin`; `admin` implies the others. A token is at
//! least 16 characters. Tokens never appear in logs or errors: only their names do.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Upload closures (`/api/pending_closures`, multipart, sign, complete).
    Push,
    /// Read the cache when the read proxy requires authentication.
    Read,
    /// GC, pins, stale-session cleanup; implies push and read.
    Admin,
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Scope, TokenError> {
        match s {
            "push" => Ok(Scope::Push),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(TokenError::UnknownScope(other.to_string())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Push => "push",
            Scope::Read => "read",
            Scope::Admin => "admin",
        })
    }
}

/// Why a token file or a presented token was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token file line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("unknown scope {0:?} (expected push, read or admin)")]
    UnknownScope(String),
    #[error("missing bearer token")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
    #[error("token {name:?} lacks the {needed} scope")]
    Forbidden { name: String, needed: Scope },
}

/// One accepted token: the SHA-256 of its text, its scopes, a name for logs.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    scopes: Vec<Scope>,
    name: String,
}

/// The set of accepted tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Tokens, TokenError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| TokenError::BadLine {
                line: i + 1,
                reason: reason.to_string(),
            };
            let mut fields = line.split_whitespace();
            let token = fields.next().ok_or_else(|| bad("empty"))?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(&format!(
                    "token shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            let scopes = fields
                .next()
                .ok_or_else(|| bad("missing scopes (e.g. `push` or `push,read`)"))?
                .split(',')
                .map(|s| s.parse().map_err(|e: TokenError| bad(&e.to_string())))
                .collect::<Result<Vec<Scope>, _>>()?;
            let name = fields
                .next()
                .map_or_else(|| format!("line-{}", i + 1), str::to_string);
            if fields.next().is_some() {
                return Err(bad("too many fields (token, scopes, name)"));
            }
            entries.push(Entry {
                digest: digest(token),
                scopes,
                name,
            });
        }
        Ok(Tokens { entries })
    }

    /// A set holding one token.
    pub fn single(token: &str, scopes: &[Scope], name: &str) -> Tokens {
        Tokens {
            entries: vec![Entry {
                digest: digest(token),
                scopes: scopes.to_vec(),
                name: name.to_string(),
            }],
        }
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks an `Authorization` header value for `needed`; returns the token's name.
    pub fn authorize(&self, header: Option<&str>, needed: Scope) -> Result<&str, TokenError> {
        let presented = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)?;
        let wanted = digest(presented);
        // Compare against every entry so timing does not reveal which one matched.
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&wanted)) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(TokenError::Invalid)?;
        let allowed = entry
            .scopes
            .iter()
            .any(|s| *s == needed || *s == Scope::Admin);
        if allowed {
            Ok(&entry.name)
        } else {
            Err(TokenError::Forbidden {
                name: entry.name.clone(),
                needed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# CI pushes\nci-token-0123456789abcdef push ci\n\
                        admin-token-0123456789abcdef admin ops  # the operators\n\n\
                        reader-token-0123456789abcd read\n";

    #[test]
    fn scopes_are_enforced_and_admin_implies_all() {
        let tokens = Tokens::parse(FILE).unwrap();
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(
            tokens.authorize(Some(&bearer("ci-token-0123456789abcdef")), Scope::Push),
            Ok("ci")
        );
        assert_eq!(
            tokens.authorize(Some(&bearer("ci-token-0123456789abcdef")), Scope::Admin),
            Err(TokenError::Forbidden {
                name: "ci".into(),
                needed: Scope::Admin
            })
        );
        for scope in [Scope::Push, Scope::Read, Scope::Admin] {
            assert_eq!(
                tokens.authorize(Some(&bearer("admin-token-0123456789abcdef")), scope),
                Ok("ops")
            );
        }
        assert_eq!(
            tokens.authorize(Some(&bearer("reader-token-0123456789abcd")), Scope::Read),
            Ok("line-5")
        );
    }

    #[test]
    fn missing_wrong_and_malformed_tokens_are_refused() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(
            tokens.authorize(None, Scope::Push),
            Err(TokenError::Missing)
        );
        assert_eq!(
            tokens.authorize(Some("Basic abc"), Scope::Push),
            Err(TokenError::Missing)
        );
        assert_eq!(
            tokens.authorize(Some("Bearer "), Scope::Push),
            Err(TokenError::Missing)
        );
        assert_eq!(
            tokens.authorize(Some("Bearer ci-token-0123456789abcdeF"), Scope::Push),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let short = Tokens::parse("\nshort push\n").unwrap_err();
        assert!(
            matches!(short, TokenError::BadLine { line: 2, .. }),
            "{short}"
        );
        let scope = Tokens::parse("0123456789abcdef0123 pull").unwrap_err();
        assert!(
            scope.to_string().contains("unknown scope \"pull\""),
            "{scope}"
        );
        let none = Tokens::parse("0123456789abcdef0123").unwrap_err();
        assert!(none.to_string().contains("missing scopes"), "{none}");
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let tokens = Tokens::parse(FILE).unwrap();
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("token-0123"), "{shown}");
        assert!(shown.contains("ci"));
    }
}
