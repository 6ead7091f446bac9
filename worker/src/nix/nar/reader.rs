//! Streaming NAR reader that checks every rule `nix-store --restore` would, and a few more.

use std::io::{self, Read};

use super::{check_name, padding, show, NarError, MAGIC};

/// Bounds on what a NAR may contain, so hostile input cannot exhaust memory or stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarLimits {
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// Longest entry name (Linux allows 255 bytes).
    pub max_name_len: u64,
    /// Longest symlink target (Linux PATH_MAX less the NUL).
    pub max_target_len: u64,
    /// Most nodes in the whole NAR.
    pub max_entries: u64,
    /// Largest NAR in bytes.
    pub max_nar_size: u64,
}

impl Default for NarLimits {
    fn default() -> Self {
        Self {
            max_depth: 1024,
            max_name_len: 255,
            max_target_len: 4095,
            max_entries: 10_000_000,
            max_nar_size: u64::MAX,
        }
    }
}

/// One step of a depth-first walk of the NAR; `name` is `None` for the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarEvent {
    /// A regular file; its contents may be read with `read_contents` before the next event.
    Regular {
        name: Option<Vec<u8>>,
        executable: bool,
        size: u64,
        /// Offset of the first content byte in the NAR, as `.ls` listings record it.
        nar_offset: u64,
    },
    /// A symlink.
    Symlink {
        name: Option<Vec<u8>>,
        target: Vec<u8>,
    },
    /// A directory opens; its entries follow, then `EndDirectory`.
    Directory { name: Option<Vec<u8>> },
    /// The innermost open directory closes.
    EndDirectory,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Start,
    Contents { size: u64, remaining: u64 },
    Entries,
    Done,
    Finished,
    Failed,
}

/// Reads a NAR from any `Read` (give it a buffered one) as a sequence of [`NarEvent`]s.
#[derive(Debug)]
pub struct NarReader<R> {
    r: R,
    pos: u64,
    limits: NarLimits,
    state: State,
    /// For each open directory, the last entry name seen in it.
    dirs: Vec<Option<Vec<u8>>>,
    nodes: u64,
}

/// Longest keyword the grammar has ("executable"), with room to report a wrong one.
const MAX_TOKEN: u64 = 16;

impl<R: Read> NarReader<R> {
    /// A reader with default limits.
    pub fn new(r: R) -> Self {
        Self::with_limits(r, NarLimits::default())
    }

    /// A reader with the given limits.
    pub fn with_limits(r: R, limits: NarLimits) -> Self {
        Self {
            r,
            pos: 0,
            limits,
            state: State::Start,
            dirs: Vec::new(),
            nodes: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next event, or `None` once the NAR has ended (and nothing follows it).
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<NarEvent>, NarError> {
        if self.state == State::Failed {
            return Err(NarError::Misuse("reading on after an error"));
        }
        let result = self.step();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Reads contents of the regular file just returned; 0 at its end.
    pub fn read_contents(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
        let State::Contents { size, remaining } = self.state else {
            return Err(NarError::Misuse("read_contents() outside a regular file"));
        };
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        self.exact(&mut buf[..want])?;
        self.state = State::Contents {
            size,
            remaining: remaining - want as u64,
        };
        Ok(want)
    }

    fn step(&mut self) -> Result<Option<NarEvent>, NarError> {
        loop {
            match self.state {
                State::Start => {
                    if self.string(MAX_TOKEN, "magic").ok().as_deref() != Some(MAGIC) {
                        return Err(NarError::BadMagic);
                    }
                    return self.node(None).map(Some);
                }
                State::Contents { size, remaining } => {
                    self.skip(remaining)?;
                    self.check_padding(size)?;
                    self.expect(b")")?;
                    self.node_done()?;
                }
                State::Entries => {
                    let offset = self.pos;
                    let tok = self.token()?;
                    if tok == b")" {
                        self.dirs.pop();
                        self.node_done()?;
                        return Ok(Some(NarEvent::EndDirectory));
                    }
                    if tok != b"entry" {
                        return Err(unexpected(offset, "\"entry\" or \")\"", &tok));
                    }
                    self.expect(b"(")?;
                    self.expect(b"name")?;
                    let name = self.string(self.limits.max_name_len, "entry name")?;
                    check_name(&name)?;
                    if let Some(Some(prev)) = self.dirs.last() {
                        if name <= *prev {
                            return Err(NarError::Unsorted {
                                previous: show(prev),
                                name: show(&name),
                            });
                        }
                    }
                    if let Some(last) = self.dirs.last_mut() {
                        *last = Some(name.clone());
                    }
                    self.expect(b"node")?;
                    return self.node(Some(name)).map(Some);
                }
                State::Done => {
                    let mut probe = [0u8; 1];
                    if read_full(&mut self.r, &mut probe)? != 0 {
                        return Err(NarError::TrailingData { offset: self.pos });
                    }
                    self.state = State::Finished;
                    return Ok(None);
                }
                State::Finished => return Ok(None),
                State::Failed => return Err(NarError::Misuse("reading on after an error")),
            }
        }
    }

    /// Reads a node's header; `name` is the entry it belongs to.
    fn node(&mut self, name: Option<Vec<u8>>) -> Result<NarEvent, NarError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_entries {
            return Err(NarError::TooManyEntries {
                max: self.limits.max_entries,
            });
        }
        self.expect(b"(")?;
        self.expect(b"type")?;
        let offset = self.pos;
        let kind = self.token()?;
        match kind.as_slice() {
            b"regular" => {
                let offset = self.pos;
                let mut tok = self.token()?;
                let executable = tok == b"executable";
                if executable {
                    self.expect(b"")?;
                    tok = self.token()?;
                }
                if tok != b"contents" {
                    return Err(unexpected(offset, "\"contents\"", &tok));
                }
                let size = self.u64()?;
                let nar_offset = self.pos;
                self.state = State::Contents {
                    size,
                    remaining: size,
                };
                Ok(NarEvent::Regular {
                    name,
                    executable,
                    size,
                    nar_offset,
                })
            }
            b"symlink" => {
                self.expect(b"target")?;
                let target = self.string(self.limits.max_target_len, "symlink target")?;
                if target.is_empty() || target.contains(&0) {
                    return Err(NarError::BadTarget);
                }
                self.expect(b")")?;
                self.node_done()?;
                Ok(NarEvent::Symlink { name, target })
            }
            b"directory" => {
                if self.dirs.len() >= self.limits.max_depth {
                    return Err(NarError::TooDeep {
                        max: self.limits.max_depth,
                    });
                }
                self.dirs.push(None);
                self.state = State::Entries;
                Ok(NarEvent::Directory { name })
            }
            _ => Err(unexpected(offset, "a node type", &kind)),
        }
    }

    /// A node ended: close the entry around it, or the NAR.
    fn node_done(&mut self) -> Result<(), NarError> {
        if self.dirs.is_empty() {
            self.state = State::Done;
        } else {
            self.expect(b")")?;
            self.state = State::Entries;
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let len = buf.len() as u64;
        if self.pos.saturating_add(len) > self.limits.max_nar_size {
            return Err(NarError::TooLong {
                offset: self.pos,
                what: "NAR",
                len: self.pos.saturating_add(len),
                max: self.limits.max_nar_size,
            });
        }
        if read_full(&mut self.r, buf)? < buf.len() {
            return Err(NarError::UnexpectedEof { offset: self.pos });
        }
        self.pos += len;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), NarError> {
        let mut buf = [0u8; 8192];
        let mut left = n;
        while left > 0 {
            let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            self.exact(&mut buf[..take])?;
            left -= take as u64;
        }
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn check_padding(&mut self, len: u64) -> Result<(), NarError> {
        let offset = self.pos;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        self.exact(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(NarError::NonZeroPadding { offset });
        }
        Ok(())
    }

    fn string(&mut self, max: u64, what: &'static str) -> Result<Vec<u8>, NarError> {
        let offset = self.pos;
        let len = self.u64()?;
        if len > max {
            return Err(NarError::TooLong {
                offset,
                what,
                len,
                max,
            });
        }
        // `max` bounds `len`, and every caller's `max` is small, so this cannot over-allocate.
        let mut s = vec![0u8; len as usize];
        self.exact(&mut s)?;
        self.check_padding(len)?;
        Ok(s)
    }

    fn token(&mut self) -> Result<Vec<u8>, NarError> {
        self.string(MAX_TOKEN, "keyword")
    }

    fn expect(&mut self, want: &'static [u8]) -> Result<(), NarError> {
        let offset = self.pos;
        let got = self.token()?;
        if got != want {
            let expected = match want {
                b"(" => "\"(\"",
                b")" => "\")\"",
                b"type" => "\"type\"",
                b"name" => "\"name\"",
                b"node" => "\"node\"",
                b"target" => "\"target\"",
                b"" => "\"\" after \"executable\"",
                _ => "a keyword",
            };
            return Err(unexpected(offset, expected, &got));
        }
        Ok(())
    }
}

fn unexpected(offset: u64, expected: &'static str, found: &[u8]) -> NarError {
    NarError::UnexpectedToken {
        offset,
        expected,
        found: show(found),
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, NarError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}
