//! A cheap-to-clone, read-only view of bytes owned elsewhere (usually a memory-mapped model file),
//! so weight matrices can borrow their data without copying it.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Shared owner plus a byte range inside it. Cloning only bumps a reference count.
#[derive(Clone)]
pub struct Bytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

impl Bytes {
    /// Takes ownership of a vector (tests, converted weights).
    pub fn from_vec(v: Vec<u8>) -> Bytes {
        let len = v.len();
        Bytes {
            owner: Arc::new(v),
            start: 0,
            len,
        }
    }

    /// A view of `len` bytes at `start` inside `owner` (e.g. one tensor of a mapped file).
    ///
    /// # Panics
    /// If `start + len` is beyond the owner's bytes: the caller computed the range from a header it
    /// has validated, so a bad range is a bug, not bad input.
    pub fn from_shared(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, start: usize, len: usize) -> Bytes {
        let total = (*owner).as_ref().len();
        let end = start
            .checked_add(len)
            .expect("Bytes::from_shared: range overflows usize");
        assert!(
            end <= total,
            "Bytes::from_shared: range {start}..{end} is beyond the {total} bytes of the owner"
        );
        Bytes { owner, start, len }
    }

    /// A sub-view sharing the same owner (`range` is relative to this view).
    ///
    /// # Panics
    /// If `range` is not inside this view.
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Bytes::slice: {range:?} out of 0..{}",
            self.len
        );
        Bytes {
            owner: self.owner.clone(),
            start: self.start + range.start,
            len: range.end - range.start,
        }
    }

    /// The bytes (same as deref; handy where a method call reads better).
    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.start..self.start + self.len]
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::from_vec(v)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes at offset {})", self.len, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_the_owner() {
        let b = Bytes::from_vec((0u8..10).collect());
        assert_eq!(&*b, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let s = b.slice(2..5);
        assert_eq!(&*s, &[2, 3, 4]);
        assert_eq!(&*s.slice(1..3), &[3, 4]);
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![7u8; 8]);
        let v = Bytes::from_shared(owner, 3, 4);
        assert_eq!(v.len(), 4);
        assert!(format!("{v:?}").contains("4 bytes"));
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn out_of_range_view_panics() {
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0u8; 8]);
        let _ = Bytes::from_shared(owner, 5, 4);
    }
}
