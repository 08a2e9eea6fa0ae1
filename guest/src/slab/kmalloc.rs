//! `kmalloc` and friends: Linux's size classes over [`KmemCache`]s, and whole page blocks
//! beyond them.
//!
//! | request | served by |
//! |---|---|
//! | 0 bytes | [`ZERO_SIZE_PTR`], never dereferenceable |
//! | 1 to 8192 bytes | the smallest class that holds it: 8, 16, 32, 64, 96, 128, 192, 256, … 8192 |
//! | up to [`KMALLOC_MAX_SIZE`] | a block of 2^order pages from the backend |
//!
//! A kmalloc object is aligned to the largest power of two that divides its class size,
//! with or without debug, as Linux guarantees since 2024: kmalloc-96 to 32 bytes,
//! kmalloc-192 to 64, the power-of-two classes to their size. Every slab page records its
//! class, so `kfree` finds the cache with one descriptor lookup.

use super::cache::KmemCache;
use super::{debug, SlabError, SlabErrorKind, SlabPages};
use shared::mm::{SLAB_DEBUG, SLAB_KMALLOC};
use shared::page::{PG_HEAD, PG_SLAB};

/// `kmalloc`'s size classes (Linux's, with 96 and 192).
pub const KMALLOC_SIZES: [u64; 13] =
    [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
/// What `kmalloc(0)` returns: not null, never dereferenceable (Linux's `ZERO_SIZE_PTR`).
pub const ZERO_SIZE_PTR: u64 = 16;
/// The largest size `kmalloc` takes (order 10 pages).
pub const KMALLOC_MAX_SIZE: u64 = 4096 << 10;

const KMALLOC_NAMES: [&str; 13] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];

/// The name large-allocation errors carry.
const LARGE: &str = "kmalloc-large";

/// `kmalloc` and friends over the size-class caches; larger requests go to the backend.
pub struct Kmalloc {
    /// The caches, by size class.
    pub caches: [KmemCache; 13],
}

impl Kmalloc {
    /// The size-class caches; `debug` enables red zones, poisoning and the requested-size
    /// red zone.
    pub fn new(debug: bool) -> Option<Self> {
        let flags = SLAB_KMALLOC | if debug { SLAB_DEBUG } else { 0 };
        let mut tag = 0;
        let caches = KMALLOC_SIZES.map(|size| {
            // The largest power of two dividing the size: kmalloc's alignment guarantee.
            let align = 1 << size.trailing_zeros();
            let cache = KmemCache::with_flags(KMALLOC_NAMES[tag], size, align, flags);
            tag += 1;
            cache.map(|mut cache| {
                // Every slab page records its class plus one (zero: not a kmalloc slab).
                cache.raw.class_tag = tag as u64;
                cache
            })
        });
        if caches.iter().any(Option::is_none) {
            return None;
        }
        Some(Self { caches: caches.map(|cache| cache.expect("checked above")) })
    }

    /// The size class for `size`, if a cache serves it.
    pub fn class(size: u64) -> Option<usize> {
        // A table up to 192 bytes (Linux's `size_index`), powers of two above.
        const SMALL: [u8; 24] =
            [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6];
        match size {
            0 => None,
            1..=192 => {
                SMALL.get(usize::try_from((size - 1) / 8).ok()?).map(|&class| usize::from(class))
            }
            193..=8192 => {
                usize::try_from(64 - (size - 1).leading_zeros()).ok().map(|bits| bits - 1)
            }
            _ => None,
        }
    }

    /// Allocates `size` bytes: [`ZERO_SIZE_PTR`] for zero, `None` when out of memory or
    /// beyond [`KMALLOC_MAX_SIZE`].
    pub fn kmalloc(
        &mut self,
        pages: &mut impl SlabPages,
        size: u64,
    ) -> Result<Option<u64>, SlabError> {
        if size == 0 {
            return Ok(Some(ZERO_SIZE_PTR));
        }
        match Self::class(size) {
            Some(class) => {
                let cache = &mut self.caches[class];
                let object = cache.alloc(pages)?;
                if let Some(object) = object.filter(|_| cache.debug()) {
                    // SAFETY: a fresh object of the class, which holds `size` bytes.
                    unsafe { debug::set_requested_size(cache, pages, object, size) };
                }
                Ok(object)
            }
            None if size <= KMALLOC_MAX_SIZE => {
                let order = size.div_ceil(4096).next_power_of_two().trailing_zeros();
                Ok(pages.alloc_pages(order).map(|pfn| pages.address(pfn)))
            }
            None => Ok(None),
        }
    }

    /// Frees what `kmalloc` returned; null and [`ZERO_SIZE_PTR`] are ignored.
    ///
    /// # Safety
    /// `addr` must be null, [`ZERO_SIZE_PTR`], or an allocation of this `Kmalloc` that has
    /// not been freed since. In debug mode the misuses [`KmemCache::free`] names are found
    /// and change nothing; a pointer that is neither a slab object nor a block is refused
    /// in either mode.
    pub unsafe fn kfree(&mut self, pages: &mut impl SlabPages, addr: u64) -> Result<(), SlabError> {
        if addr == 0 || addr == ZERO_SIZE_PTR {
            return Ok(());
        }
        let pfn = pages.pfn(addr);
        match self.cache_of(pages, pfn) {
            Some(class) => {
                let cache = &mut self.caches[class];
                // The fast path: an object of the current slab, no checks to run.
                let slab = cache.slab_start(pfn);
                if !cache.debug() && slab == cache.raw.cpu_slab {
                    // SAFETY: the caller's contract: a live object, here of the current slab.
                    unsafe { cache.push_current(pages, addr) };
                    return Ok(());
                }
                // SAFETY: the caller's contract.
                unsafe { cache.free(pages, addr) }
            }
            None => self.free_large(pages, addr),
        }
    }

    /// Frees a block of pages `kmalloc` returned.
    fn free_large(&mut self, pages: &mut impl SlabPages, addr: u64) -> Result<(), SlabError> {
        let order = Self::large_order(pages, addr)?;
        if pages.free_pages(pages.pfn(addr), order) {
            Ok(())
        } else {
            Err(SlabError { cache: LARGE, object: addr, kind: SlabErrorKind::NotAnObject })
        }
    }

    /// The order of the block of pages `kmalloc` returned at `addr`; an error if `addr` is
    /// not the start of such a block.
    fn large_order(pages: &mut impl SlabPages, addr: u64) -> Result<u32, SlabError> {
        match pages.page(pages.pfn(addr)) {
            Some(page) if page.flags & (PG_HEAD | PG_SLAB) == PG_HEAD && addr % 4096 == 0 => {
                Ok(page.order)
            }
            _ => Err(SlabError { cache: LARGE, object: addr, kind: SlabErrorKind::NotAnObject }),
        }
    }

    /// Bytes usable at `addr` (Linux's `ksize`): the class size, or the block's bytes. In
    /// debug mode a free object has none: 0, as Linux's `ksize` answers when KASAN finds
    /// the object invalid, so that no caller writes into it.
    ///
    /// Unlike SLUB's, our `ksize` does not widen a debug object's requested size to its
    /// class size: the bytes past the requested size stay red zone, as KASAN keeps them
    /// poisoned. To use a class's whole size, ask for it: `KMALLOC_SIZES[class(n)]` is
    /// Linux's `kmalloc_size_roundup(n)`.
    pub fn ksize(&self, pages: &mut impl SlabPages, addr: u64) -> u64 {
        if addr == 0 || addr == ZERO_SIZE_PTR {
            return 0;
        }
        let pfn = pages.pfn(addr);
        match self.cache_of(pages, pfn) {
            Some(class) => {
                let cache = &self.caches[class];
                if cache.debug() && debug::is_free_object(cache, pages, addr) {
                    0
                } else {
                    cache.raw.object_size
                }
            }
            None => Self::large_order(pages, addr).map_or(0, |order| 4096 << order),
        }
    }

    /// Resizes an allocation, keeping its contents up to the smaller size, as Linux's
    /// `krealloc(…, GFP_KERNEL | __GFP_ZERO)`: what a larger size grows into reads as zero,
    /// whether the allocation stays or moves, and a size that still fits the object keeps
    /// it. In debug mode the requested size moves: the bytes past a smaller size become red
    /// zone. Without debug the bytes past the new size up to the class size are cleared
    /// (nothing records the old size), so that growing again in place reads zeros too.
    /// Null or [`ZERO_SIZE_PTR`] allocate; a size of zero frees and returns
    /// [`ZERO_SIZE_PTR`].
    ///
    /// Before it touches the old allocation, `krealloc` makes the checks `kfree` would:
    /// a pointer that is no allocation is refused in either mode, and in debug mode so is
    /// a freed object (as [`SlabErrorKind::DoubleFree`]: KASAN's `krealloc_uaf`) or one
    /// whose red zones were overwritten. A refusal changes nothing.
    ///
    /// # Safety
    /// As for [`Kmalloc::kfree`].
    pub unsafe fn krealloc(
        &mut self,
        pages: &mut impl SlabPages,
        addr: u64,
        size: u64,
    ) -> Result<Option<u64>, SlabError> {
        if addr == 0 || addr == ZERO_SIZE_PTR {
            return self.kmalloc(pages, size);
        }
        if size == 0 {
            // SAFETY: the caller's contract.
            unsafe { self.kfree(pages, addr)? };
            return Ok(Some(ZERO_SIZE_PTR));
        }
        let class = self.cache_of(pages, pages.pfn(addr));
        // The bytes the allocation holds (`old`: its requested size in debug mode) and can
        // hold (`usable`).
        let (old, usable) = match class {
            Some(class) => {
                let cache = &self.caches[class];
                if cache.debug() {
                    let slab = cache.slab_start(pages.pfn(addr));
                    debug::check_allocated(cache, pages, slab, addr)?;
                }
                // SAFETY: a live object of the class: checked in debug mode, the caller's
                // contract otherwise.
                (unsafe { debug::requested_size(cache, pages, addr) }, cache.raw.object_size)
            }
            None => {
                let bytes = 4096u64 << Self::large_order(pages, addr)?;
                (bytes, bytes)
            }
        };
        if size <= usable {
            // SAFETY: the caller's contract (checked in debug mode): a live allocation of
            // `usable` bytes, and `old` and `size` are at most that.
            unsafe {
                if old < size {
                    pages.fill(addr + old, size - old, 0);
                } else {
                    pages.fill(addr + size, usable - size, 0);
                }
                if let Some(class) = class {
                    debug::set_requested_size(&self.caches[class], pages, addr, size);
                }
            }
            return Ok(Some(addr));
        }
        let Some(new) = self.kmalloc(pages, size)? else { return Ok(None) };
        // What the new allocation holds: its requested size in debug mode, all of it
        // otherwise (the bytes past it are cleared, as in place).
        let held = match Self::class(size) {
            Some(class) if self.caches[class].debug() => size,
            Some(class) => self.caches[class].raw.object_size,
            None => self.ksize(pages, new),
        };
        // SAFETY: both are live allocations, distinct; `old < size <= held` bytes fit the
        // new one, `old` the old one.
        unsafe {
            pages.copy(addr, new, old);
            pages.fill(new + old, held - old, 0);
        }
        // SAFETY: the caller's contract; the checks above passed, so the free does too.
        if let Err(err) = unsafe { self.kfree(pages, addr) } {
            // Nothing changes: the new allocation goes back.
            // SAFETY: `new` is the live allocation just made.
            let _ = unsafe { self.kfree(pages, new) };
            return Err(err);
        }
        Ok(Some(new))
    }

    /// The size class of the slab holding page frame `pfn`, if it is a kmalloc slab.
    #[inline]
    pub fn cache_of(&self, pages: &mut impl SlabPages, pfn: u64) -> Option<usize> {
        // Every slab page records its class (plus one).
        let page = pages.page(pfn)?;
        let class = usize::try_from(page.private).ok()?.checked_sub(1)?;
        (page.flags & PG_SLAB != 0 && class < self.caches.len()).then_some(class)
    }
}
