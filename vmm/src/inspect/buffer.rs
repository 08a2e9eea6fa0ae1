//! Large scratch buffers for copies of guest memory, backed by transparent huge pages.
//!
//! `check` copies the memory map of a RAM file 2 MiB at a time. On a nested host every
//! first touch of a 4 KiB page is a costly fault, and a fresh 2 MiB buffer takes 512 of
//! them. An anonymous mapping advised `MADV_HUGEPAGE` is zero-filled 2 MiB at a time
//! instead, and only where it is touched.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A zeroed byte buffer in its own anonymous mapping.
pub struct HugeBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl HugeBuffer {
    /// `len` zero bytes (at least one page is mapped); `None` if the host has no memory
    /// for the mapping.
    pub fn zeroed(len: usize) -> Option<Self> {
        let buffer = Self::lazily_zeroed(len)?;
        // SAFETY: advice on the mapping just made; a refusal (no THP) changes nothing.
        unsafe { libc::madvise(buffer.ptr.as_ptr().cast(), len.max(1), libc::MADV_HUGEPAGE) };
        Some(buffer)
    }

    /// `len` zero bytes in 4 KiB pages the host zeroes as they are first touched: only
    /// those take memory, and unmapping costs only those (the RAM file's cache). The
    /// allocator's own large blocks are not always fresh: reused, they are cleared and
    /// returned whole.
    pub fn lazily_zeroed(len: usize) -> Option<Self> {
        let map_len = len.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self { ptr: NonNull::new(ptr.cast())?, len })
    }
}

impl Deref for HugeBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps at least `len` readable bytes, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for HugeBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps at least `len` writable bytes, owned by `self` and borrowed
        // mutably here only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HugeBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping `zeroed` made, unmapped once; no slice of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len.max(1)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_buffers_start_zeroed_and_hold_what_is_written() {
        let mut buffer = HugeBuffer::zeroed(3 << 20).expect("host memory");
        assert_eq!(buffer.len(), 3 << 20);
        assert!(buffer.iter().step_by(4096).all(|&b| b == 0));
        buffer[(3 << 20) - 1] = 7;
        assert_eq!(buffer[(3 << 20) - 1], 7);
        assert_eq!(HugeBuffer::zeroed(0).map(|b| b.len()), Some(0));
    }
}
