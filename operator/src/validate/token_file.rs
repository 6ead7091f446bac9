//! The token file `larder serve --token-file` reads, checked before a worker would refuse it.
//!
//! The format is the worker's (`worker/src/auth/tokens.rs`): one token a line,
//! `<token> <scope>[,<scope>…] [name]`, scopes `push`, `read` and `admin`, tokens at least
//! 16 characters, blank lines and `#` comments ignored. Checking it here turns a worker that
//! would crash-loop into a condition naming the line; errors never quote a token.

/// Shortest token the worker accepts.
const MIN_TOKEN_LEN: usize = 16;

/// Scopes the worker knows.
const SCOPES: [&str; 3] = ["push", "read", "admin"];

/// Why a token file would be refused, with the 1-based line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    /// Not UTF-8.
    #[error("the token file is not UTF-8 text")]
    NotText,
    /// A token shorter than the worker allows.
    #[error("line {0}: token shorter than {MIN_TOKEN_LEN} characters")]
    Short(usize),
    /// A token without scopes.
    #[error("line {0}: no scopes after the token (e.g. `push` or `push,read`)")]
    NoScopes(usize),
    /// A scope the worker does not know.
    #[error("line {line}: unknown scope {scope:?} (expected push, read or admin)")]
    UnknownScope {
        /// The line.
        line: usize,
        /// The scope as written.
        scope: String,
    },
}

/// Checks a token file's bytes; returns how many tokens it holds.
pub fn check(bytes: &[u8]) -> Result<usize, TokenFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TokenFileError::NotText)?;
    let mut tokens = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        let mut fields = content.split_whitespace();
        let Some(token) = fields.next() else {
            continue;
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenFileError::Short(line));
        }
        let scopes = fields.next().ok_or(TokenFileError::NoScopes(line))?;
        if let Some(unknown) = scopes.split(',').find(|s| !SCOPES.contains(s)) {
            return Err(TokenFileError::UnknownScope {
                line,
                scope: unknown.to_string(),
            });
        }
        tokens += 1;
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_token_file_passes() {
        let file = "# CI\n0123456789abcdef push ci\n\nfedcba9876543210abc push,read,admin ops\n";
        assert_eq!(check(file.as_bytes()), Ok(2));
        assert_eq!(check(b""), Ok(0));
    }

    #[test]
    fn refusals_name_the_line_not_the_token() {
        assert_eq!(check(b"short push"), Err(TokenFileError::Short(1)));
        assert_eq!(
            check(b"# c\n0123456789abcdef"),
            Err(TokenFileError::NoScopes(2))
        );
        let err = check(b"0123456789abcdef push,write").unwrap_err();
        assert_eq!(
            err,
            TokenFileError::UnknownScope {
                line: 1,
                scope: "write".into()
            }
        );
        assert!(!err.to_string().contains("0123456789abcdef"));
        assert_eq!(check(&[0xff, 0xfe]), Err(TokenFileError::NotText));
    }
}
