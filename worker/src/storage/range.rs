//! Single HTTP byte ranges (RFC 9110 §14): parsing, resolving against a size, formatting.

use std::fmt;

/// One byte range as a client asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=first-last`, both inclusive.
    Bounded {
        /// First byte offset.
        first: u64,
        /// Last byte offset, inclusive.
        last: u64,
    },
    /// `bytes=first-`: from `first` to the end.
    From {
        /// First byte offset.
        first: u64,
    },
    /// `bytes=-len`: the last `len` bytes.
    Suffix {
        /// Number of trailing bytes.
        len: u64,
    },
}

/// The range actually served, for `Content-Range: bytes first-last/total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// First byte offset.
    pub first: u64,
    /// Last byte offset, inclusive.
    pub last: u64,
    /// Size of the whole object.
    pub total: u64,
}

/// Why a `Range` header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not a single `bytes=` range we understand; RFC 9110 says to ignore it and send everything.
    #[error("unsupported Range header")]
    Unsupported,
    /// Syntactically fine but outside the object: answer 416.
    #[error("range not satisfiable")]
    Unsatisfiable,
}

impl ByteRange {
    /// Parses a `Range` header value holding one `bytes=` range.
    pub fn parse(header: &str) -> Result<ByteRange, RangeError> {
        let spec = header
            .trim()
            .strip_prefix("bytes=")
            .ok_or(RangeError::Unsupported)?
            .trim();
        if spec.contains(',') {
            return Err(RangeError::Unsupported);
        }
        let (first, last) = spec.split_once('-').ok_or(RangeError::Unsupported)?;
        let number = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RangeError::Unsupported);
            }
            s.parse().map_err(|_| RangeError::Unsupported)
        };
        match (first.trim(), last.trim()) {
            ("", len) => Ok(ByteRange::Suffix { len: number(len)? }),
            (first, "") => Ok(ByteRange::From {
                first: number(first)?,
            }),
            (first, last) => {
                let (first, last) = (number(first)?, number(last)?);
                if last < first {
                    return Err(RangeError::Unsupported);
                }
                Ok(ByteRange::Bounded { first, last })
            }
        }
    }

    /// The bytes this range selects from an object of `total` bytes, or `Unsatisfiable`.
    pub fn resolve(self, total: u64) -> Result<ContentRange, RangeError> {
        let (first, last) = match self {
            ByteRange::Bounded { first, last } => (first, last.min(total.saturating_sub(1))),
            ByteRange::From { first } => (first, total.saturating_sub(1)),
            ByteRange::Suffix { len } => {
                if len == 0 {
                    return Err(RangeError::Unsatisfiable);
                }
                (total.saturating_sub(len), total.saturating_sub(1))
            }
        };
        if total == 0 || first >= total || last < first {
            return Err(RangeError::Unsatisfiable);
        }
        Ok(ContentRange { first, last, total })
    }
}

impl fmt::Display for ByteRange {
    /// Formats as a `Range` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::Bounded { first, last } => write!(f, "bytes={first}-{last}"),
            ByteRange::From { first } => write!(f, "bytes={first}-"),
            ByteRange::Suffix { len } => write!(f, "bytes=-{len}"),
        }
    }
}

impl ContentRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses an S3 `Content-Range` answer, `bytes first-last/total`.
    pub fn parse(header: &str) -> Option<ContentRange> {
        let rest = header.trim().strip_prefix("bytes ")?;
        let (span, total) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let range = ContentRange {
            first: first.trim().parse().ok()?,
            last: last.trim().parse().ok()?,
            total: total.trim().parse().ok()?,
        };
        (range.first <= range.last && range.last < range.total).then_some(range)
    }
}

impl fmt::Display for ContentRange {
    /// Formats as a `Content-Range` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}/{}", self.first, self.last, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            ByteRange::parse("bytes=0-99"),
            Ok(ByteRange::Bounded { first: 0, last: 99 })
        );
        assert_eq!(
            ByteRange::parse("bytes=5-"),
            Ok(ByteRange::From { first: 5 })
        );
        assert_eq!(
            ByteRange::parse("bytes=-7"),
            Ok(ByteRange::Suffix { len: 7 })
        );
        for bad in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(ByteRange::parse(bad), Err(RangeError::Unsupported), "{bad}");
        }
    }

    #[test]
    fn resolves_against_the_size() {
        let r = |s: &str, total| ByteRange::parse(s).unwrap().resolve(total);
        assert_eq!(r("bytes=0-99", 10).map(|c| (c.first, c.last)), Ok((0, 9)));
        assert_eq!(r("bytes=8-", 10).map(|c| (c.first, c.last)), Ok((8, 9)));
        assert_eq!(r("bytes=-3", 10).map(|c| (c.first, c.last)), Ok((7, 9)));
        assert_eq!(r("bytes=-30", 10).map(|c| (c.first, c.last)), Ok((0, 9)));
        assert_eq!(r("bytes=10-", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=-0", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=0-0", 0), Err(RangeError::Unsatisfiable));
    }

    #[test]
    fn content_range_round_trips() {
        let c = ContentRange {
            first: 2,
            last: 4,
            total: 9,
        };
        assert_eq!(c.to_string(), "bytes 2-4/9");
        assert_eq!(ContentRange::parse("bytes 2-4/9"), Some(c));
        assert_eq!(ContentRange::parse("bytes 4-2/9"), None);
        assert_eq!(c.len(), 3);
    }
}
