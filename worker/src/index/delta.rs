//! Delta files: the changes between two epochs' shards, in journal grammar, sorted by hash.

use std::cmp::Ordering;

use ruint::aliases::U160;

use super::journal::{lines, parse_line, Change, JournalError, Op};

/// Parses a delta: `#` lines are skipped; other lines must be strictly rising by hash.
pub fn parse_delta(text: &str) -> Result<Vec<Change>, JournalError> {
    let mut out: Vec<Change> = Vec::new();
    for (n, l) in lines(text) {
        if l.starts_with('#') {
            continue;
        }
        let c = parse_line(l, n)?;
        if out.last().is_some_and(|p| p.hash >= c.hash) {
            return Err(JournalError::Line {
                line: n,
                reason: "not sorted by hash, or the hash repeats".into(),
            });
        }
        out.push(c);
    }
    Ok(out)
}

/// Renders a delta (no comments); the changes must be strictly rising by hash.
pub fn render_delta(changes: &[Change]) -> Result<String, JournalError> {
    if let Some(i) = changes.windows(2).position(|w| w[0].hash >= w[1].hash) {
        return Err(JournalError::Line {
            line: i + 2,
            reason: "not sorted by hash, or the hash repeats".into(),
        });
    }
    Ok(super::journal::render_segment(changes))
}

/// The delta from `old` to `new`, both sorted and unique: `-` for dropped, `+` for new.
pub fn diff<O, N>(old: O, new: N) -> Vec<Change>
where
    O: IntoIterator<Item = U160>,
    N: IntoIterator<Item = U160>,
{
    let mut out = Vec::new();
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        let (op, hash) = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(&o), None) => (Op::Remove, o),
            (None, Some(&n)) => (Op::Add, n),
            (Some(&o), Some(&n)) => match o.cmp(&n) {
                Ordering::Less => (Op::Remove, o),
                Ordering::Greater => (Op::Add, n),
                Ordering::Equal => {
                    old.next();
                    new.next();
                    continue;
                }
            },
        };
        match op {
            Op::Remove => old.next(),
            Op::Add => new.next(),
        };
        out.push(Change { op, hash });
    }
    out
}

/// Applies a sorted delta to a sorted set, giving the new sorted set.
pub fn apply<O>(old: O, delta: &[Change]) -> Vec<U160>
where
    O: IntoIterator<Item = U160>,
{
    let mut out = Vec::new();
    let mut old = old.into_iter().peekable();
    for c in delta {
        while let Some(&o) = old.peek() {
            if o >= c.hash {
                break;
            }
            out.push(o);
            old.next();
        }
        if old.peek() == Some(&c.hash) {
            old.next();
        }
        if c.op == Op::Add {
            out.push(c.hash);
        }
    }
    out.extend(old);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::{format_hash, parse_hash};
    use proptest::prelude::*;

    fn u(v: u64) -> U160 {
        U160::from(v)
    }

    #[test]
    fn comments_are_skipped_and_order_enforced() {
        let a = format_hash(u(1));
        let b = format_hash(u(2));
        let text = format!("# from 41 to 42\n-{a}\n#\n+{b}\n");
        let d = parse_delta(&text).unwrap();
        assert_eq!(
            d,
            vec![
                Change {
                    op: Op::Remove,
                    hash: u(1)
                },
                Change {
                    op: Op::Add,
                    hash: u(2)
                }
            ]
        );
        // Written without comments.
        assert_eq!(render_delta(&d).unwrap(), format!("-{a}\n+{b}\n"));
        let err = parse_delta(&format!("+{b}\n# x\n-{a}\n")).unwrap_err();
        assert!(matches!(err, JournalError::Line { line: 3, .. }), "{err}");
        assert!(parse_delta(&format!("+{a}\n-{a}\n")).is_err());
        assert!(render_delta(&[d[1], d[0]]).is_err());
        assert!(parse_delta(" # not a comment\n").is_err());
        assert_eq!(parse_delta("").unwrap(), vec![]);
        assert!(parse_hash(&a).is_ok());
    }

    proptest! {
        #[test]
        fn diff_then_apply_reconstructs(
            old in proptest::collection::btree_set(0u64..500, 0..100),
            new in proptest::collection::btree_set(0u64..500, 0..100),
        ) {
            let old: Vec<U160> = old.into_iter().map(u).collect();
            let new: Vec<U160> = new.into_iter().map(u).collect();
            let d = diff(old.iter().copied(), new.iter().copied());
            prop_assert!(d.windows(2).all(|w| w[0].hash < w[1].hash));
            let text = render_delta(&d).unwrap();
            prop_assert_eq!(parse_delta(&text).unwrap(), d.clone());
            prop_assert_eq!(apply(old, &d), new);
        }
    }
}
