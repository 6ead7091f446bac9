//! Error messages for people: an error with its causes.

/// `e` and each of its causes, joined by `": "` — reqwest's own message is "error sending
/// request", the cause holds the useful part ("connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "outer: connection refused");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}
