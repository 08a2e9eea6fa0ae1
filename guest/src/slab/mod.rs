//! A SLUB-style slab allocator (Linux's `mm/slub.c`) and `kmalloc`.
//!
//! A cache hands out objects of one size. Its objects live in slabs: runs of 2^order pages
//! from a [`SlabPages`] backend (the buddy allocator), flagged `PG_SLAB` in their
//! `struct page`s, the first of which also records the cache, the slab's freelist and its
//! counts, so a free finds everything from the object's address alone.
//!
//! ```text
//! slab:          [obj 0][obj 1][obj 2] … [obj n-1][waste]
//! object:        [payload: object_size][align padding]          free pointer at offset 0
//! debug object:  [payload][red zone][free pointer][orig size][align padding]
//!                          ≥ 8 bytes  8 bytes      8 (kmalloc)
//! ```
//!
//! - [`cache`]: [`KmemCache`], its current ("per-CPU") slab, whose freelist is the fast
//!   path, the partial list, and up to [`MAX_EMPTY_SLABS`] empty slabs kept back;
//! - [`debug`]: `slub_debug`: red zones, poison, the requested size of kmalloc objects,
//!   and what a damaged slab does (it is taken out of service);
//! - [`kmalloc`]: [`Kmalloc`]'s size classes, `kfree`, `ksize`, `krealloc`.
//!
//! The allocator touches slab memory only through its backend ([`SlabPages`]), an
//! `unsafe trait` whose implementations confine the raw memory access. A free is an
//! `unsafe fn`: a pointer that is not a live object of the cache would, without debug,
//! corrupt a freelist.

pub mod cache;
pub mod debug;
pub mod kmalloc;

pub use cache::{KmemCache, MAX_EMPTY_SLABS, MAX_SLAB_ORDER};
pub use debug::{POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};
pub use kmalloc::{Kmalloc, KMALLOC_MAX_SIZE, KMALLOC_SIZES, ZERO_SIZE_PTR};

use crate::buddy::{Buddy, Memmap};
use shared::page::{Page, ZoneType};

/// Memory for slabs: blocks of pages from a page allocator, their descriptors, and access
/// to their bytes.
///
/// # Safety
/// Implementations guarantee that, for every block [`alloc_pages`](Self::alloc_pages)
/// returned and [`free_pages`](Self::free_pages) has not taken back, the bytes
/// `[address(pfn), address(pfn) + 4096 << order)` are memory the backend owns, readable
/// and writable through the access methods, used by nothing but the slab allocator and
/// the holders of its objects; and that [`pfn`](Self::pfn) inverts
/// [`address`](Self::address) for every byte of such a block.
pub unsafe trait SlabPages {
    /// 2^`order` contiguous pages, aligned to their size; returns the first page frame.
    fn alloc_pages(&mut self, order: u32) -> Option<u64>;
    /// Gives back a block `alloc_pages` returned; whether the page allocator took it (it
    /// refuses what it did not hand out with that order, and changes nothing then).
    fn free_pages(&mut self, pfn: u64, order: u32) -> bool;
    /// The descriptor of a page frame.
    fn page(&mut self, pfn: u64) -> Option<&mut Page>;
    /// The address at which the kernel reaches page frame `pfn` (its direct map).
    fn address(&self, pfn: u64) -> u64;
    /// The page frame behind an address of a block.
    fn pfn(&self, addr: u64) -> u64;
    /// The 8-byte word at `addr`.
    ///
    /// # Safety
    /// `[addr, addr + 8)` lies inside a live block, and `addr` is 8-byte aligned.
    unsafe fn read_word(&self, addr: u64) -> u64;
    /// Writes the 8-byte word at `addr`.
    ///
    /// # Safety
    /// As for [`read_word`](Self::read_word).
    unsafe fn write_word(&mut self, addr: u64, value: u64);
    /// Sets `len` bytes from `addr` to `byte`.
    ///
    /// # Safety
    /// `[addr, addr + len)` lies inside a live block.
    unsafe fn fill(&mut self, addr: u64, len: u64, byte: u8);
    /// The address of the first of `len` bytes from `addr` that differs from `byte`.
    ///
    /// # Safety
    /// As for [`fill`](Self::fill).
    unsafe fn find_other(&self, addr: u64, len: u64, byte: u8) -> Option<u64>;
    /// Copies `len` bytes from `from` to `to`; the ranges do not overlap.
    ///
    /// # Safety
    /// Both ranges lie inside live blocks.
    unsafe fn copy(&mut self, from: u64, to: u64, len: u64);
}

/// Slab pages from a buddy allocator, for memory that sits at one linear offset from its
/// page-frame numbers (the kernel's direct map, or a host arena): page frame `pfn` is at
/// `base + pfn × 4096`.
pub struct BuddyPages<'a, M> {
    buddy: &'a mut Buddy<M>,
    base: u64,
}

impl<'a, M: Memmap> BuddyPages<'a, M> {
    /// The buddy allocator's pages, at `base + pfn × 4096` (wrapping arithmetic).
    ///
    /// # Safety
    /// Every block the buddy allocator hands out is memory mapped readable and writable
    /// at `base + pfn × 4096`, which nothing else uses while the slab allocator holds the
    /// block, for as long as any cache used with this backend holds slabs: caches keep
    /// addresses into their slabs between calls, so every backend a cache is used with
    /// must be this buddy allocator at this `base`. (The buddy allocator itself refuses to
    /// free a block flagged `PG_SLAB`, so only the slab layer gives slabs back.)
    pub unsafe fn new(buddy: &'a mut Buddy<M>, base: u64) -> Self {
        Self { buddy, base }
    }

    /// The page allocator, to read. Not to change: its memory map is public, and clearing
    /// `PG_SLAB` through it would let a live slab be freed under a cache.
    pub fn buddy(&self) -> &Buddy<M> {
        self.buddy
    }

    /// Gives the per-CPU lists' pages back to the buddy lists.
    pub fn drain_pcp(&mut self) {
        self.buddy.drain_pcp();
    }

    #[inline]
    fn ptr(&self, addr: u64) -> *mut u8 {
        addr as *mut u8
    }
}

// SAFETY: `new`'s contract maps every block at `base + pfn × 4096`; the access methods
// touch only addresses their callers keep inside live blocks; `pfn` inverts `address`.
// The lookups are inlined across crates: they sit on kfree's fast path (2–3 ns of a 6 ns
// pair). The page allocations are the slow path.
unsafe impl<M: Memmap> SlabPages for BuddyPages<'_, M> {
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        self.buddy.alloc_pages(order, ZoneType::Normal)
    }

    fn free_pages(&mut self, pfn: u64, order: u32) -> bool {
        self.buddy.free_pages(pfn, order).is_ok()
    }

    #[inline]
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        self.buddy.memmap.page(pfn)
    }

    #[inline]
    fn address(&self, pfn: u64) -> u64 {
        self.base.wrapping_add(pfn << 12)
    }

    #[inline]
    fn pfn(&self, addr: u64) -> u64 {
        addr.wrapping_sub(self.base) >> 12
    }

    #[inline]
    unsafe fn read_word(&self, addr: u64) -> u64 {
        // SAFETY: the caller keeps `addr` inside a live block, which `new`'s contract maps.
        unsafe { self.ptr(addr).cast::<u64>().read() }
    }

    #[inline]
    unsafe fn write_word(&mut self, addr: u64, value: u64) {
        // SAFETY: as in `read_word`.
        unsafe { self.ptr(addr).cast::<u64>().write(value) }
    }

    unsafe fn fill(&mut self, addr: u64, len: u64, byte: u8) {
        // SAFETY: as in `read_word`, for `len` bytes.
        unsafe { self.ptr(addr).write_bytes(byte, usize::try_from(len).unwrap_or(0)) }
    }

    unsafe fn find_other(&self, addr: u64, len: u64, byte: u8) -> Option<u64> {
        let len = usize::try_from(len).unwrap_or(0);
        // SAFETY: as in `read_word`, for `len` bytes, only read while the slice lives.
        let bytes = unsafe { core::slice::from_raw_parts(self.ptr(addr), len) };
        bytes.iter().position(|&b| b != byte).map(|at| addr + at as u64)
    }

    unsafe fn copy(&mut self, from: u64, to: u64, len: u64) {
        let len = usize::try_from(len).unwrap_or(0);
        // SAFETY: both ranges are inside live blocks (the caller's contract) and distinct
        // allocations, so they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(from), self.ptr(to), len) }
    }
}

/// What a bad free or allocation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabError {
    /// The cache's name.
    pub cache: &'static str,
    /// The object's address.
    pub object: u64,
    /// What is wrong.
    pub kind: SlabErrorKind,
}

/// The kinds of corruption and misuse the allocator detects, named as Linux's SLUB
/// reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabErrorKind {
    /// The object is already free.
    DoubleFree,
    /// The address is not in a slab of this cache.
    NotAnObject,
    /// The address is inside a slab but not at the start of an object.
    NotAtBoundary,
    /// Bytes after the object (its red zone) were overwritten.
    RightRedzone,
    /// Bytes between a kmalloc object's requested size and its size class were
    /// overwritten: the most common overflow, off by a few bytes.
    KmallocRedzone,
    /// A free object's poison was overwritten: a write after free.
    PoisonOverwritten,
    /// A free object's free pointer points outside its slab.
    FreePointerCorrupt,
}

impl SlabErrorKind {
    /// Linux's words for it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::DoubleFree => "Object already free (double free)",
            Self::NotAnObject => "free of a pointer that is not an object of this cache",
            Self::NotAtBoundary => "free of a pointer inside an object",
            Self::RightRedzone => "Right Redzone overwritten",
            Self::KmallocRedzone => "kmalloc Redzone overwritten",
            Self::PoisonOverwritten => "Poison overwritten (a write after free)",
            Self::FreePointerCorrupt => "Freepointer corrupt",
        }
    }
}

impl core::fmt::Display for SlabError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}, object {:#x}", self.cache, self.kind.describe(), self.object)
    }
}

#[cfg(test)]
mod tests;
