//! The graph's large arrays (vectors and links): owned, or a view of a memory-mapped index file,
//! so that a restart searches an index without reading all of it first. A view becomes owned
//! (a copy) the first time the graph grows.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use memmap2::MmapMut;

/// Element types that a view may hold.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid value, and the type's
/// little-endian layout must be the one the index file uses.
pub(super) unsafe trait Plain: Sized {
    fn copied(&self) -> Self;
}

// SAFETY: any 4 bytes are an f32 (NaN payloads included).
unsafe impl Plain for f32 {
    fn copied(&self) -> Self {
        *self
    }
}

// SAFETY: AtomicU32 has the size, alignment and bit validity of u32.
unsafe impl Plain for AtomicU32 {
    fn copied(&self) -> Self {
        AtomicU32::new(self.load(Ordering::Relaxed))
    }
}

pub(super) enum Section<T> {
    Owned(Vec<T>),
    Mapped(View<T>),
}

/// `len` elements of a private (copy-on-write) mapping, kept alive by the `Arc`.
pub(super) struct View<T> {
    _map: Arc<MmapMut>,
    start: NonNull<T>,
    len: usize,
}

// SAFETY: a view is a shared slice into memory it keeps mapped; it is as thread-safe as `&[T]`.
unsafe impl<T: Sync> Send for View<T> {}
unsafe impl<T: Sync> Sync for View<T> {}

impl<T: Plain> View<T> {
    /// The `len` elements at byte `offset` of `map`. Panics if they do not fit or are
    /// misaligned: the file reader computes both from checked lengths and padded sections.
    pub(super) fn new(map: &Arc<MmapMut>, offset: usize, len: usize) -> View<T> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .expect("section length fits in memory");
        assert!(offset
            .checked_add(bytes)
            .is_some_and(|end| end <= map.len()));
        let start = map.as_ptr().wrapping_add(offset) as *mut T;
        assert!(start.is_aligned(), "index sections are aligned");
        View {
            _map: Arc::clone(map),
            start: NonNull::new(start).expect("a mapping is never at address 0"),
            len,
        }
    }
}

impl<T> Deref for Section<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Section::Owned(v) => v,
            // SAFETY: `View::new` checked bounds and alignment, `T: Plain` accepts any bytes,
            // and the mapping lives as long as the view. Index files are written once under a
            // temporary name and renamed into place, never rewritten, so the bytes do not
            // change under it.
            Section::Mapped(v) => unsafe { std::slice::from_raw_parts(v.start.as_ptr(), v.len) },
        }
    }
}

impl<T: Plain> Section<T> {
    /// The array as a vector it owns, copying a view first.
    pub(super) fn owned(&mut self) -> &mut Vec<T> {
        if let Section::Mapped(view) = self {
            // SAFETY: as in `deref`.
            let slice = unsafe { std::slice::from_raw_parts(view.start.as_ptr(), view.len) };
            *self = Section::Owned(slice.iter().map(Plain::copied).collect());
        }
        match self {
            Section::Owned(v) => v,
            Section::Mapped(_) => unreachable!("copied just above"),
        }
    }

    #[cfg(test)]
    pub(super) fn is_mapped(&self) -> bool {
        matches!(self, Section::Mapped(_))
    }
}

impl<T> From<Vec<T>> for Section<T> {
    fn from(v: Vec<T>) -> Self {
        Section::Owned(v)
    }
}
