//! Streaming NAR writer: the caller walks its tree, the writer emits `nix-store --dump` bytes.

use std::io::Write;

use super::{check_name, padding, show, NarError, MAGIC};

/// Where the writer is in the grammar.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// A node must come next: the root, or the node of an entry just opened.
    Node,
    /// Inside a regular file; this many content bytes are still owed.
    Contents { declared: u64, remaining: u64 },
    /// Inside a directory, between entries.
    Entries,
    /// The root node is complete.
    Done,
}

/// Writes a NAR into any `Write`, in the order a depth-first walk produces.
///
/// Calls: `regular` + `contents`* | `symlink` | `start_directory` (`entry` node)*
/// `end_directory`, then `finish`. Entry names must come in strictly increasing byte order.
#[derive(Debug)]
pub struct NarWriter<W> {
    out: W,
    pos: u64,
    state: State,
    /// For each open directory, the last entry name written in it.
    dirs: Vec<Option<Vec<u8>>>,
}

impl<W: Write> NarWriter<W> {
    /// Starts a NAR by writing the magic string.
    pub fn new(out: W) -> Result<Self, NarError> {
        let mut w = Self {
            out,
            pos: 0,
            state: State::Node,
            dirs: Vec::new(),
        };
        w.str(MAGIC)?;
        Ok(w)
    }

    /// Bytes written so far; right after `regular`, the narOffset of the file's contents.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Starts a regular file of `size` bytes; feed them with `contents`. Returns where the
    /// contents start in the NAR (the narOffset of `.ls` listings).
    pub fn regular(&mut self, executable: bool, size: u64) -> Result<u64, NarError> {
        self.expect_node()?;
        self.strs(&[b"(", b"type", b"regular"])?;
        if executable {
            self.strs(&[b"executable", b""])?;
        }
        self.str(b"contents")?;
        self.raw(&size.to_le_bytes())?;
        let offset = self.pos;
        self.state = State::Contents {
            declared: size,
            remaining: size,
        };
        if size == 0 {
            self.end_regular()?;
        }
        Ok(offset)
    }

    /// Writes the next chunk of the open file's contents.
    pub fn contents(&mut self, chunk: &[u8]) -> Result<(), NarError> {
        let State::Contents {
            declared,
            remaining,
        } = self.state
        else {
            return Err(NarError::Misuse("contents() without an open regular file"));
        };
        let len = chunk.len() as u64;
        if len > remaining {
            return Err(NarError::SizeMismatch {
                declared,
                written: declared - remaining + len,
            });
        }
        self.raw(chunk)?;
        self.state = State::Contents {
            declared,
            remaining: remaining - len,
        };
        if remaining == len {
            self.end_regular()?;
        }
        Ok(())
    }

    /// Writes a symlink node.
    pub fn symlink(&mut self, target: &[u8]) -> Result<(), NarError> {
        if target.is_empty() || target.contains(&0) {
            return Err(NarError::BadTarget);
        }
        self.expect_node()?;
        self.strs(&[b"(", b"type", b"symlink", b"target", target, b")"])?;
        self.node_done()
    }

    /// Opens a directory node.
    pub fn start_directory(&mut self) -> Result<(), NarError> {
        self.expect_node()?;
        self.strs(&[b"(", b"type", b"directory"])?;
        self.dirs.push(None);
        self.state = State::Entries;
        Ok(())
    }

    /// Opens an entry of the current directory; its node must follow.
    pub fn entry(&mut self, name: &[u8]) -> Result<(), NarError> {
        if self.state != State::Entries {
            return Err(NarError::Misuse("entry() outside a directory"));
        }
        check_name(name)?;
        let last = self
            .dirs
            .last_mut()
            .ok_or(NarError::Misuse("entry() outside a directory"))?;
        if let Some(prev) = last {
            if name <= prev.as_slice() {
                return Err(NarError::Unsorted {
                    previous: show(prev),
                    name: show(name),
                });
            }
        }
        *last = Some(name.to_vec());
        self.strs(&[b"entry", b"(", b"name", name, b"node"])?;
        self.state = State::Node;
        Ok(())
    }

    /// Closes the current directory.
    pub fn end_directory(&mut self) -> Result<(), NarError> {
        if self.state != State::Entries {
            return Err(NarError::Misuse("end_directory() outside a directory"));
        }
        self.dirs.pop();
        self.str(b")")?;
        self.node_done()
    }

    /// Checks the NAR is complete and returns the writer it went to.
    pub fn finish(mut self) -> Result<W, NarError> {
        match self.state {
            State::Done => {
                self.out.flush()?;
                Ok(self.out)
            }
            State::Contents {
                declared,
                remaining,
            } => Err(NarError::SizeMismatch {
                declared,
                written: declared - remaining,
            }),
            _ => Err(NarError::Misuse(
                "finish() before the root node is complete",
            )),
        }
    }

    fn expect_node(&self) -> Result<(), NarError> {
        match self.state {
            State::Node => Ok(()),
            _ => Err(NarError::Misuse("a node is not expected here")),
        }
    }

    fn end_regular(&mut self) -> Result<(), NarError> {
        if let State::Contents { declared, .. } = self.state {
            self.raw(&[0u8; 8][..padding(declared)])?;
        }
        self.str(b")")?;
        self.node_done()
    }

    /// A node just ended: close its entry, or the whole NAR.
    fn node_done(&mut self) -> Result<(), NarError> {
        if self.dirs.is_empty() {
            self.state = State::Done;
        } else {
            self.str(b")")?;
            self.state = State::Entries;
        }
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn str(&mut self, s: &[u8]) -> Result<(), NarError> {
        let len = s.len() as u64;
        self.raw(&len.to_le_bytes())?;
        self.raw(s)?;
        self.raw(&[0u8; 8][..padding(len)])
    }

    fn strs(&mut self, ss: &[&[u8]]) -> Result<(), NarError> {
        ss.iter().try_for_each(|s| self.str(s))
    }
}
