//! Journal segments: `+<hash>` / `-<hash>` lines, segment ids, and how a client reads them.

use std::collections::HashMap;
use std::fmt;

use ruint::aliases::U160;
use thiserror::Error;

use super::hash::{format_hash, parse_hash, HashError};

/// Why a journal segment (or a delta, which shares the grammar) is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JournalError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("line {line}: {source}")]
    Hash { line: usize, source: HashError },
    #[error("segment duration must be at least one second")]
    ZeroDuration,
}

/// What a line says about a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `+`: the path is now present.
    Add,
    /// `-`: the path is now absent.
    Remove,
}

impl Op {
    /// The line's first character.
    pub fn sign(self) -> char {
        match self {
            Op::Add => '+',
            Op::Remove => '-',
        }
    }
}

/// One change: an operation on a hash part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// Added or removed.
    pub op: Op,
    /// The hash part as H.
    pub hash: U160,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.op.sign(), format_hash(self.hash))
    }
}

/// Parses one line (without its newline); `line` is 1-based, for errors.
pub fn parse_line(text: &str, line: usize) -> Result<Change, JournalError> {
    let op = match text.as_bytes().first() {
        Some(b'+') => Op::Add,
        Some(b'-') => Op::Remove,
        Some(_) => {
            return Err(JournalError::Line {
                line,
                reason: "does not start with + or -".into(),
            })
        }
        None => {
            return Err(JournalError::Line {
                line,
                reason: "is empty".into(),
            })
        }
    };
    let hash = parse_hash(&text[1..]).map_err(|source| JournalError::Hash { line, source })?;
    Ok(Change { op, hash })
}

/// Lines of `text`, each with its 1-based number; a final newline ends the last line.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    body.split('\n')
        .enumerate()
        .filter(move |_| !text.is_empty())
        .map(|(i, l)| (i + 1, l))
}

/// Parses a whole segment, oldest change first; any bad line is an error naming it.
pub fn parse_segment(text: &str) -> Result<Vec<Change>, JournalError> {
    lines(text).map(|(n, l)| parse_line(l, n)).collect()
}

/// Renders changes as segment text, one line each, newline-terminated.
pub fn render_segment(changes: &[Change]) -> String {
    let mut out = String::with_capacity(changes.len() * 34);
    for c in changes {
        out.push_str(&c.to_string());
        out.push('\n');
    }
    out
}

/// The id of the segment that holds time `unix_seconds`: the multiple of `duration` at or below it.
pub fn segment_id(unix_seconds: u64, duration: u64) -> Result<u64, JournalError> {
    if duration == 0 {
        return Err(JournalError::ZeroDuration);
    }
    Ok(unix_seconds - unix_seconds % duration)
}

/// Most older segments a client reads: a hostile manifest must not demand millions.
pub const MAX_RETENTION: u64 = 4096;

/// Segment ids a client reads, newest first: `current − i·duration` for i = 0..=retention
/// (retention capped at `MAX_RETENTION`).
pub fn segments_to_read(current: u64, duration: u64, retention: u64) -> Vec<u64> {
    let retention = retention.min(MAX_RETENTION);
    let mut out = Vec::new();
    let mut id = current;
    for i in 0..=retention {
        out.push(id);
        // Stop at zero rather than wrapping, and never loop when duration is 0.
        match id.checked_sub(duration) {
            Some(next) if duration > 0 && i < retention => id = next,
            _ => break,
        }
    }
    out
}

/// What the journal says about `hash`: segments newest first, lines bottom up, first match wins.
pub fn resolve<'a, I>(segments_newest_first: I, hash: U160) -> Option<Op>
where
    I: IntoIterator<Item = &'a [Change]>,
{
    segments_newest_first
        .into_iter()
        .find_map(|seg| seg.iter().rev().find(|c| c.hash == hash).map(|c| c.op))
}

/// The same answer as `resolve` for every hash at once (for clients asking many questions).
pub fn latest_ops<'a, I>(segments_newest_first: I) -> HashMap<U160, Op>
where
    I: IntoIterator<Item = &'a [Change]>,
{
    let mut out = HashMap::new();
    for seg in segments_newest_first {
        for c in seg.iter().rev() {
            out.entry(c.hash).or_insert(c.op);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
    const B: &str = "00000000000000000000000000000001";

    fn h(s: &str) -> U160 {
        parse_hash(s).unwrap()
    }

    #[test]
    fn parses_and_renders_segments() {
        let text = format!("+{A}\n-{B}\n+{B}\n");
        let changes = parse_segment(&text).unwrap();
        assert_eq!(
            changes,
            vec![
                Change {
                    op: Op::Add,
                    hash: h(A)
                },
                Change {
                    op: Op::Remove,
                    hash: h(B)
                },
                Change {
                    op: Op::Add,
                    hash: h(B)
                },
            ]
        );
        assert_eq!(render_segment(&changes), text);
        assert_eq!(parse_segment("").unwrap(), vec![]);
        // A last line without its newline still counts (a segment being appended to).
        assert_eq!(parse_segment(&format!("+{A}")).unwrap().len(), 1);
    }

    #[test]
    fn bad_lines_name_their_number() {
        let cases = [
            (format!("+{A}\n\n"), 2),
            (format!("+{A}\n*{A}\n"), 2),
            (format!("+{A}\n+{A}x\n"), 2),
            (format!("{A}\n"), 1),
            (format!("+{A}\r\n"), 1),
            (format!("+{A}\n+{}\n", &A[..31]), 2),
            (format!("+{A}\n\n+{A}\n"), 2),
            (" +x".to_string(), 1),
            ("\n".to_string(), 1),
            (format!("+{}e\n", &A[..31]), 1),
        ];
        for (text, line) in cases {
            let err = parse_segment(&text).unwrap_err();
            let got = match err {
                JournalError::Line { line, .. } | JournalError::Hash { line, .. } => line,
                JournalError::ZeroDuration => 0,
            };
            assert_eq!(got, line, "{text:?}: {err}");
        }
    }

    #[test]
    fn segment_ids_and_reading_order() {
        assert_eq!(segment_id(1_705_147_399, 300).unwrap(), 1_705_147_200);
        assert_eq!(segment_id(1_705_147_200, 300).unwrap(), 1_705_147_200);
        assert_eq!(segment_id(5, 0), Err(JournalError::ZeroDuration));
        assert_eq!(segments_to_read(1200, 300, 2), vec![1200, 900, 600]);
        assert_eq!(segments_to_read(600, 300, 5), vec![600, 300, 0]);
        assert_eq!(segments_to_read(600, 0, 5), vec![600]);
        assert_eq!(segments_to_read(600, 300, 0), vec![600]);
        assert_eq!(segments_to_read(u64::MAX, 1, u64::MAX).len(), 4097);
    }

    #[test]
    fn newest_segment_and_last_line_win() {
        let old = parse_segment(&format!("+{A}\n-{B}\n")).unwrap();
        let new = parse_segment(&format!("-{A}\n+{A}\n")).unwrap();
        let segs = [new.as_slice(), old.as_slice()];
        assert_eq!(resolve(segs, h(A)), Some(Op::Add));
        assert_eq!(resolve(segs, h(B)), Some(Op::Remove));
        assert_eq!(resolve(segs, U160::from(7u8)), None);
        // A deletion after a push in the newer segment wins over the older push.
        let newer = parse_segment(&format!("-{A}\n")).unwrap();
        let segs = [newer.as_slice(), new.as_slice(), old.as_slice()];
        assert_eq!(resolve(segs, h(A)), Some(Op::Remove));
        let all = latest_ops(segs);
        assert_eq!(all.get(&h(A)), Some(&Op::Remove));
        assert_eq!(all.get(&h(B)), Some(&Op::Remove));
    }
}
