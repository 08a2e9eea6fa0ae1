//! Large zeroed buffers in their own anonymous mappings, for copies of guest memory.
//!
//! On a nested host every first touch of a fresh 4 KiB page is a costly fault (about
//! 2 µs). A mapping of its own is zeroed by the host only where it is touched, and
//! unmapping it frees only those pages; the allocator's large blocks are not always
//! fresh, and a reused one comes back cleared whole. Two kinds:
//!
//! ```text
//! ZeroedBuffer::lazy(len)    4 KiB pages as touched: the RAM file's page cache, of which
//!                            a command fills a few pages or a few thousand
//! ZeroedBuffer::huge(len)    advised MADV_HUGEPAGE, zero-filled 2 MiB at a time: the
//!                            memory-map copy `check` fills whole, 2 MiB a read
//! ```

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use zerocopy::FromZeros;

/// `len` zeroed `T`s in their own anonymous mapping.
pub struct ZeroedBuffer<T: FromZeros> {
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

impl<T: FromZeros> ZeroedBuffer<T> {
    /// `len` zeroed `T`s, zeroed by the host page by page as they are touched; `None` if
    /// the host has no memory for the mapping.
    pub fn lazy(len: usize) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>())?.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // A mapping is page-aligned, more than any `T` here needs.
        debug_assert!(ptr.cast::<T>().is_aligned());
        Some(Self { ptr: NonNull::new(ptr.cast())?, len, _owns: PhantomData })
    }

    /// `len` zeroed `T`s backed by transparent huge pages where the host has them.
    pub fn huge(len: usize) -> Option<Self> {
        let buffer = Self::lazy(len)?;
        // SAFETY: advice on the mapping just made; a refusal (no THP) changes nothing.
        unsafe { libc::madvise(buffer.ptr.as_ptr().cast(), buffer.bytes(), libc::MADV_HUGEPAGE) };
        Some(buffer)
    }

    /// The mapping's length in bytes (at least one, as mapped).
    fn bytes(&self) -> usize {
        (self.len * size_of::<T>()).max(1)
    }
}

impl<T: FromZeros> Deref for ZeroedBuffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` maps `len` aligned `T`s owned by `self`, each valid: the mapping
        // started zeroed, zero bytes are a `T` (`FromZeros`), and only `T`s are written.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: FromZeros> DerefMut for ZeroedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and borrowed mutably here only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: FromZeros> Drop for ZeroedBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping `lazy` made, unmapped once; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_buffers_start_zeroed_and_hold_what_is_written() {
        let mut buffer = ZeroedBuffer::<u8>::huge(3 << 20).expect("host memory");
        assert_eq!(buffer.len(), 3 << 20);
        assert!(buffer.iter().step_by(4096).all(|&b| b == 0));
        buffer[(3 << 20) - 1] = 7;
        assert_eq!(buffer[(3 << 20) - 1], 7);
        assert_eq!(ZeroedBuffer::<u8>::huge(0).map(|b| b.len()), Some(0));
        let mut pages = ZeroedBuffer::<[u64; 512]>::lazy(3).expect("host memory");
        assert!(pages.iter().all(|page| page.iter().all(|&w| w == 0)));
        pages[2][511] = u64::MAX;
        assert_eq!(pages[2][511], u64::MAX);
        assert!(ZeroedBuffer::<[u64; 512]>::lazy(usize::MAX).is_none(), "overflows");
    }
}
