//! Where compressed NARs wait between hashing and uploading: in memory while a shared
//! budget allows, in an unnamed temporary file otherwise.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Bytes of spooled data all paths together may keep in memory.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Reserves `bytes` if they fit, released when the reservation drops.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .ok()
            .map(|_| Reservation {
                budget: Arc::clone(self),
                bytes,
            })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Memory held against a [`MemoryBudget`].
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Most bytes zstd may turn `n` input bytes into (ZSTD_compressBound, rounded up).
pub fn compressed_bound(n: u64) -> u64 {
    n.saturating_add(n / 128).saturating_add(64 * 1024)
}

/// A sink for compressed bytes; starts in memory when a reservation was granted and
/// moves to a temporary file if the data outgrows it.
#[derive(Debug)]
pub enum Spool {
    /// In memory, within the reservation's size.
    Memory(Vec<u8>, Reservation),
    /// In an unnamed temporary file (gone when closed).
    File(File, u64),
}

impl Spool {
    /// A spool for about `expected` bytes: in memory if `budget` has room for them.
    pub fn new(budget: &Arc<MemoryBudget>, expected: u64) -> io::Result<Self> {
        match budget.try_reserve(expected) {
            // All at once: growing by doubling would copy a big NAR several times over.
            // Pages of the bound that zstd does not fill are never touched.
            Some(r) => Ok(Spool::Memory(
                Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
                r,
            )),
            None => Ok(Spool::File(tempfile::tempfile()?, 0)),
        }
    }

    /// The finished data, ready to be read by range.
    pub fn finish(self) -> io::Result<Stored> {
        match self {
            Spool::Memory(v, r) => Ok(Stored::Memory(Bytes::from(v), Some(Arc::new(r)))),
            Spool::File(mut f, len) => {
                f.flush()?;
                Ok(Stored::File(Arc::new(f), len))
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Spool::Memory(v, r) => {
                if (v.len() + buf.len()) as u64 > r.bytes {
                    let mut f = tempfile::tempfile()?;
                    f.write_all(v)?;
                    f.write_all(buf)?;
                    *self = Spool::File(f, (v.len() + buf.len()) as u64);
                } else {
                    v.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            Spool::File(f, len) => {
                let n = f.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Spool::Memory(..) => Ok(()),
            Spool::File(f, _) => f.flush(),
        }
    }
}

/// Spooled data, readable by range from several tasks at once.
#[derive(Debug, Clone)]
pub enum Stored {
    /// In memory; the reservation, if any, is shared by the clones and freed with the last.
    Memory(Bytes, Option<Arc<Reservation>>),
    /// In a temporary file of this length.
    File(Arc<File>, u64),
}

impl Stored {
    /// Small bytes kept outside the budget (listings, logs, narinfos).
    pub fn bytes(b: Bytes) -> Self {
        Stored::Memory(b, None)
    }

    /// Number of bytes.
    pub fn len(&self) -> u64 {
        match self {
            Stored::Memory(b, _) => b.len() as u64,
            Stored::File(_, len) => *len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `offset .. offset + len`; blocking for a file (call from a blocking task).
    pub fn read_range(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.len())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "range past the end of the spool",
                )
            })?;
        match self {
            Stored::Memory(b, _) => Ok(b.slice(offset as usize..end as usize)),
            Stored::File(f, _) => {
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, offset)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_grants_until_full_and_frees_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.try_reserve(60).is_some());
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_reserve(u64::MAX).is_none());
    }

    #[test]
    fn spool_stays_in_memory_within_its_reservation_and_spills_beyond() {
        let budget = MemoryBudget::new(1000);
        let mut s = Spool::new(&budget, 10).unwrap();
        s.write_all(b"0123456789").unwrap();
        assert!(matches!(s, Spool::Memory(..)));
        s.write_all(b"abc").unwrap();
        assert!(matches!(s, Spool::File(..)));
        let stored = s.finish().unwrap();
        assert_eq!(stored.len(), 13);
        assert_eq!(&stored.read_range(8, 4).unwrap()[..], b"89ab");
        assert!(stored.read_range(10, 4).is_err());

        let mut s = Spool::new(&budget, 2000).unwrap();
        assert!(matches!(s, Spool::File(..)), "over budget goes to disk");
        s.write_all(b"xyz").unwrap();
        assert_eq!(&s.finish().unwrap().read_range(0, 3).unwrap()[..], b"xyz");

        let mut s = Spool::new(&budget, 500).unwrap();
        s.write_all(b"hello").unwrap();
        assert_eq!(budget.used(), 500);
        let stored = s.finish().unwrap();
        assert!(matches!(stored, Stored::Memory(..)));
        assert_eq!(&stored.read_range(1, 3).unwrap()[..], b"ell");
        drop(stored);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn bound_covers_incompressible_data() {
        assert!(compressed_bound(0) > 0);
        assert!(compressed_bound(10 << 20) > (10 << 20) + (10 << 20) / 256);
        assert_eq!(compressed_bound(u64::MAX), u64::MAX);
    }
}
