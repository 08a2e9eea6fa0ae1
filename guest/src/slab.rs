//! A SLUB-style slab allocator (Linux's `mm/slub.c`) and `kmalloc`.
//!
//! A cache hands out objects of one size. Its objects live in slabs: runs of 2^order pages
//! from a [`SlabPages`] backend (the buddy allocator), flagged `PG_SLAB` in their first
//! `struct page`, which also records the cache, the slab's freelist and its counts, so a
//! free finds everything from the object's address alone.
//!
//! ```text
//! slab:   [obj 0][obj 1][obj 2] … [obj n-1][waste]
//! object: [payload: object_size][red zone: debug only][align padding]
//! free object: its first word (after the payload's start) points to the next free object
//! ```
//!
//! Each cache has a current ("per-CPU") slab whose freelist is the fast path: an
//! allocation pops it, a free of an object of that slab pushes it. Other slabs are on the
//! partial list (some objects free), counted as full (none free), or kept empty (all
//! free) up to a limit before going back to the backend.
//!
//! With `debug` (Linux's `slub_debug`), each object gets a red zone after its payload
//! (0xcc while allocated, 0xbb while free), freed payloads are poisoned (0x6b, last byte
//! 0xa5), and every free and allocation checks them: double free, a pointer that is not an
//! object of the cache or not at an object boundary, a red-zone overwrite, and a write
//! after free (found at the next allocation of the object) are each reported as a
//! [`SlabError`] naming the cache and the object, and nothing is corrupted further.

use crate::buddy::{Buddy, Memmap};
use shared::mm::{SlabCache, SLAB_CTOR, SLAB_DEBUG};
use shared::page::{Page, ZoneType, NO_PFN, PG_SLAB};

/// Memory for slabs.
pub trait SlabPages {
    /// 2^`order` contiguous pages; returns the first page frame.
    fn alloc_pages(&mut self, order: u32) -> Option<u64>;
    /// Gives back what `alloc_pages` returned.
    fn free_pages(&mut self, pfn: u64, order: u32);
    /// The descriptor of a page frame.
    fn page(&mut self, pfn: u64) -> Option<&mut Page>;
    /// The address at which the kernel reaches page frame `pfn` (its direct map).
    fn address(&self, pfn: u64) -> u64;
    /// The page frame behind a direct-map address.
    fn pfn(&self, addr: u64) -> u64;
}

/// Slab pages from a buddy allocator, for memory that sits at one linear offset from its
/// page-frame numbers (the kernel's direct map, or a host arena): page frame `pfn` is at
/// `base + pfn × 4096`.
pub struct BuddyPages<'a, M> {
    /// The page allocator.
    pub buddy: &'a mut Buddy<M>,
    /// The address page frame 0 would have (wrapping arithmetic).
    pub base: u64,
}

// The lookups are inlined across crates: they sit on kfree's fast path (2–3 ns of a 6 ns
// pair). The page allocations are the slow path.
impl<M: Memmap> SlabPages for BuddyPages<'_, M> {
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        self.buddy.alloc_pages(order, ZoneType::Normal)
    }

    fn free_pages(&mut self, pfn: u64, order: u32) {
        // A slab or kmalloc block goes back with the order it was allocated with; a refusal
        // would mean corrupted state, which the buddy allocator leaves untouched.
        let _ = self.buddy.free_pages(pfn, order);
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

/// The kinds of corruption and misuse the allocator detects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabErrorKind {
    /// The object is already free.
    DoubleFree,
    /// The address is not in a slab of this cache.
    NotAnObject,
    /// The address is inside a slab but not at the start of an object.
    NotAtBoundary,
    /// Bytes after the object's payload were overwritten.
    RedZoneOverwritten,
    /// A free object's poison was overwritten: a write after free.
    WriteAfterFree,
}

impl core::fmt::Display for SlabError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.kind {
            SlabErrorKind::DoubleFree => "double free",
            SlabErrorKind::NotAnObject => "free of a pointer that is not an object of this cache",
            SlabErrorKind::NotAtBoundary => "free of a pointer inside an object",
            SlabErrorKind::RedZoneOverwritten => "red zone overwritten",
            SlabErrorKind::WriteAfterFree => "write after free (poison overwritten)",
        };
        write!(f, "{}: {what}, object {:#x}", self.cache, self.object)
    }
}

/// Red-zone byte of an allocated object.
pub const RED_ACTIVE: u8 = 0xcc;
/// Red-zone byte of a free object.
pub const RED_INACTIVE: u8 = 0xbb;
/// Poison of a free object's payload.
pub const POISON_FREE: u8 = 0x6b;
/// Last byte of a free object's poison.
pub const POISON_END: u8 = 0xa5;
/// Bytes of red zone after each object in debug mode.
pub const RED_ZONE: u64 = 8;
/// Empty slabs a cache keeps before giving slabs back.
pub const MAX_EMPTY_SLABS: u64 = 2;
/// The largest slab order a cache uses.
pub const MAX_SLAB_ORDER: u32 = 3;

/// A cache of equal objects. Its state is a [`SlabCache`], first so that the host finds
/// it at the cache's address; the name and constructor are for the kernel.
#[repr(C)]
pub struct KmemCache {
    raw: SlabCache,
    name: &'static str,
    /// Run on every object of a new slab (Linux's constructor); objects must be returned
    /// to their constructed state before they are freed, so such a cache is not poisoned.
    ctor: Option<fn(u64)>,
}

impl KmemCache {
    /// A cache of `size`-byte objects aligned to `align` (a power of two; at least 8, so
    /// the free pointer fits), in slabs of the order that wastes least, up to
    /// [`MAX_SLAB_ORDER`]. Returns `None` for a size of zero or larger than such a slab.
    pub fn new(name: &'static str, size: u64, align: u64, debug: bool) -> Option<Self> {
        let align = align.max(8);
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let payload = size.max(8);
        let stride = (payload + if debug { RED_ZONE } else { 0 }).next_multiple_of(align);
        // The order that wastes the smallest fraction of its slab (Linux's calculate_order).
        let order = (0..=MAX_SLAB_ORDER).filter(|order| (4096u64 << order) >= stride).min_by_key(
            |order| {
                let bytes = 4096u64 << order;
                // Waste in 1/1024ths of the slab, then prefer the smaller order.
                ((bytes % stride) * 1024 / bytes, *order)
            },
        )?;
        let objects = (4096u64 << order) / stride;
        let raw = SlabCache {
            name_addr: name.as_ptr() as u64,
            name_len: name.len() as u64,
            object_size: size,
            payload,
            stride,
            order,
            flags: if debug { SLAB_DEBUG } else { 0 },
            objects,
            cpu_slab: NO_PFN,
            cpu_freelist: 0,
            cpu_inuse: 0,
            reserved: 0,
            class_tag: 0,
            partial: NO_PFN,
            empty: 0,
            slabs: 0,
            in_use: 0,
        };
        Some(Self { raw, name, ctor: None })
    }

    /// The same cache with a constructor run on each object of every new slab.
    pub fn with_ctor(mut self, ctor: fn(u64)) -> Self {
        self.ctor = Some(ctor);
        self.raw.flags |= SLAB_CTOR;
        self
    }

    /// Whether objects have red zones and free ones are poisoned (`slub_debug`).
    fn debug(&self) -> bool {
        self.raw.flags & SLAB_DEBUG != 0
    }

    /// The state the host reads.
    pub fn raw(&self) -> &SlabCache {
        &self.raw
    }

    /// Whether freed objects are poisoned: in debug mode, for caches without a constructor.
    fn poisons(&self) -> bool {
        self.debug() && self.ctor.is_none()
    }

    /// The cache's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Bytes a caller may use in an object.
    pub fn object_size(&self) -> u64 {
        self.raw.object_size
    }

    /// Bytes an object takes in its slab.
    pub fn stride(&self) -> u64 {
        self.raw.stride
    }

    /// The slab order and the objects in a slab.
    pub fn geometry(&self) -> (u32, u64) {
        (self.raw.order, self.raw.objects)
    }

    /// Bytes of each slab no object uses.
    pub fn waste_per_slab(&self) -> u64 {
        (4096 << self.raw.order) - self.raw.objects * self.raw.stride
    }

    /// (objects allocated, objects in all slabs, slabs).
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.raw.in_use, self.raw.slabs * self.raw.objects, self.raw.slabs)
    }

    /// Slabs with at least one object allocated.
    pub fn active_slabs(&self) -> u64 {
        self.raw.slabs - self.raw.empty
    }

    /// Allocates an object; `None` when the backend has no pages.
    pub fn alloc(&mut self, pages: &mut impl SlabPages) -> Result<Option<u64>, SlabError> {
        if self.raw.cpu_freelist == 0 && !self.refill(pages) {
            return Ok(None);
        }
        let object = self.raw.cpu_freelist;
        // SAFETY: `object` is a free object of the current slab, which the backend maps at
        // its address; its first word is the freelist link.
        self.raw.cpu_freelist = unsafe { (object as *const u64).read() };
        if self.debug() {
            let base = pages.address(self.raw.cpu_slab);
            let next = self.raw.cpu_freelist;
            let valid = next == 0
                || (next >= base
                    && (next - base) % self.raw.stride == 0
                    && (next - base) / self.raw.stride < self.raw.objects);
            if !valid {
                // The link was overwritten: never follow it. The slab goes into quarantine:
                // marked full and detached, so it is neither used nor freed again.
                self.raw.cpu_freelist = 0;
                let slab = core::mem::replace(&mut self.raw.cpu_slab, NO_PFN);
                if let Some(page) = pages.page(slab) {
                    page.slab_inuse = page.slab_objects;
                }
                return Err(SlabError {
                    cache: self.name,
                    object,
                    kind: SlabErrorKind::WriteAfterFree,
                });
            }
            // A damaged object stays out of circulation rather than being handed out.
            self.check_poison(object)?;
            self.fill(object, self.raw.payload, self.raw.payload + RED_ZONE, RED_ACTIVE);
        }
        self.raw.cpu_inuse += 1;
        self.raw.in_use += 1;
        Ok(Some(object))
    }

    /// Frees `object`, which must be an allocated object of this cache.
    pub fn free(&mut self, pages: &mut impl SlabPages, object: u64) -> Result<(), SlabError> {
        let err = |kind| SlabError { cache: self.name, object, kind };
        let slab = self.slab_of(pages, object).ok_or(err(SlabErrorKind::NotAnObject))?;
        if self.debug() {
            // A division per free: only in debug mode, as in SLUB.
            let base = pages.address(slab);
            if (object - base) % self.raw.stride != 0
                || (object - base) / self.raw.stride >= self.raw.objects
            {
                return Err(err(SlabErrorKind::NotAtBoundary));
            }
            if self.is_free(pages, slab, object) {
                return Err(err(SlabErrorKind::DoubleFree));
            }
            if !self.all(object, self.raw.payload, self.raw.payload + RED_ZONE, RED_ACTIVE) {
                return Err(err(SlabErrorKind::RedZoneOverwritten));
            }
            self.poison(object);
        }
        if slab == self.raw.cpu_slab {
            self.push_current(object);
            return Ok(());
        } else {
            let Some(page) = pages.page(slab) else { return Err(err(SlabErrorKind::NotAnObject)) };
            let was_full = page.slab_inuse == page.slab_objects;
            page.slab_inuse -= 1;
            let now_empty = page.slab_inuse == 0;
            // SAFETY: as above, for a slab on the partial list or full.
            unsafe { (object as *mut u64).write(page.slab_freelist) };
            page.slab_freelist = object;
            if was_full {
                self.list_add(pages, slab);
            }
            if now_empty {
                self.raw.empty += 1;
                if self.raw.empty > MAX_EMPTY_SLABS {
                    self.discard(pages, slab);
                }
            }
        }
        self.raw.in_use -= 1;
        Ok(())
    }

    /// Puts a freed object of the current slab on its freelist.
    fn push_current(&mut self, object: u64) {
        // SAFETY: `object` is an object of the current slab (the callers checked) that is
        // now free: its first word becomes the freelist link.
        unsafe { (object as *mut u64).write(self.raw.cpu_freelist) };
        self.raw.cpu_freelist = object;
        self.raw.cpu_inuse -= 1;
        self.raw.in_use -= 1;
    }

    /// Gives every empty slab back to the backend (Linux's `kmem_cache_shrink`); the
    /// current slab is put back first.
    pub fn shrink(&mut self, pages: &mut impl SlabPages) {
        self.deactivate(pages);
        let mut slab = self.raw.partial;
        while slab != NO_PFN {
            let (next, empty) =
                pages.page(slab).map_or((NO_PFN, false), |p| (p.next, p.slab_inuse == 0));
            if empty {
                self.discard(pages, slab);
            }
            slab = next;
        }
    }

    /// Refuses to be destroyed while objects are live (Linux's `kmem_cache_destroy`
    /// complains the same way); else shrinks to nothing.
    pub fn destroy(&mut self, pages: &mut impl SlabPages) -> Result<(), u64> {
        if self.raw.in_use > 0 {
            return Err(self.raw.in_use);
        }
        self.shrink(pages);
        Ok(())
    }

    /// The slab holding `object`, if it is one of this cache's.
    fn slab_of(&self, pages: &mut impl SlabPages, object: u64) -> Option<u64> {
        let pfn = pages.pfn(object);
        // The slab starts at a frame aligned to its order (the backend is a buddy allocator).
        let slab = pfn & !((1u64 << self.raw.order) - 1);
        let page = pages.page(slab)?;
        (page.flags & PG_SLAB != 0 && page.slab_cache == self as *const Self as u64).then_some(slab)
    }

    /// Makes a partial slab, or a new one, the current slab.
    fn refill(&mut self, pages: &mut impl SlabPages) -> bool {
        self.deactivate(pages);
        let slab = if self.raw.partial != NO_PFN {
            let slab = self.raw.partial;
            self.list_del(pages, slab);
            if pages.page(slab).is_some_and(|p| p.slab_inuse == 0) {
                self.raw.empty -= 1;
            }
            slab
        } else {
            match self.new_slab(pages) {
                Some(slab) => slab,
                None => return false,
            }
        };
        let Some(page) = pages.page(slab) else { return false };
        self.raw.cpu_freelist = core::mem::take(&mut page.slab_freelist);
        self.raw.cpu_inuse = page.slab_inuse;
        self.raw.cpu_slab = slab;
        self.raw.cpu_freelist != 0
    }

    /// Puts the current slab back on the lists with its freelist.
    fn deactivate(&mut self, pages: &mut impl SlabPages) {
        let slab = core::mem::replace(&mut self.raw.cpu_slab, NO_PFN);
        if slab == NO_PFN {
            return;
        }
        let freelist = core::mem::take(&mut self.raw.cpu_freelist);
        let inuse = core::mem::take(&mut self.raw.cpu_inuse);
        let Some(page) = pages.page(slab) else { return };
        page.slab_freelist = freelist;
        page.slab_inuse = inuse;
        let (inuse, objects) = (page.slab_inuse, page.slab_objects);
        if inuse < objects {
            self.list_add(pages, slab);
            if inuse == 0 {
                self.raw.empty += 1;
            }
        }
    }

    /// A new slab with every object on its freelist.
    fn new_slab(&mut self, pages: &mut impl SlabPages) -> Option<u64> {
        let slab = pages.alloc_pages(self.raw.order)?;
        let base = pages.address(slab);
        let mut freelist = 0;
        for index in (0..self.raw.objects).rev() {
            let object = base + index * self.raw.stride;
            if self.debug() {
                self.poison(object);
            }
            if let Some(ctor) = self.ctor {
                ctor(object);
            }
            // SAFETY: `object` lies in the slab the backend just gave us, mapped at `base`.
            unsafe { (object as *mut u64).write(freelist) };
            freelist = object;
        }
        // Every page of the slab knows its cache, so a free needs one lookup.
        for pfn in slab..slab + (1 << self.raw.order) {
            let page = pages.page(pfn)?;
            page.flags |= PG_SLAB;
            page.slab_cache = self as *const Self as u64;
            page.private = self.raw.class_tag;
        }
        let page = pages.page(slab)?;
        page.slab_freelist = freelist;
        page.slab_inuse = 0;
        page.slab_objects = u32::try_from(self.raw.objects).unwrap_or(u32::MAX);
        self.raw.slabs += 1;
        Some(slab)
    }

    /// Gives an empty slab on the partial list back to the backend.
    fn discard(&mut self, pages: &mut impl SlabPages, slab: u64) {
        self.list_del(pages, slab);
        self.raw.empty -= 1;
        self.raw.slabs -= 1;
        for pfn in slab..slab + (1 << self.raw.order) {
            if let Some(page) = pages.page(pfn) {
                page.flags &= !PG_SLAB;
                page.slab_cache = 0;
                page.slab_freelist = 0;
                page.slab_objects = 0;
                page.private = 0;
            }
        }
        pages.free_pages(slab, self.raw.order);
    }

    fn list_add(&mut self, pages: &mut impl SlabPages, slab: u64) {
        let head = self.raw.partial;
        if let Some(page) = pages.page(slab) {
            (page.next, page.prev) = (head, NO_PFN);
        }
        if let Some(next) = pages.page(head) {
            next.prev = slab;
        }
        self.raw.partial = slab;
    }

    fn list_del(&mut self, pages: &mut impl SlabPages, slab: u64) {
        let Some(page) = pages.page(slab) else { return };
        let (next, prev) = (page.next, page.prev);
        (page.next, page.prev) = (0, 0);
        match pages.page(prev) {
            Some(prev_page) => prev_page.next = next,
            None => self.raw.partial = next,
        }
        if let Some(next_page) = pages.page(next) {
            next_page.prev = prev;
        }
    }

    /// Whether `object` is on a freelist of `slab` (debug mode: walks the list, bounded
    /// by the objects in a slab).
    fn is_free(&self, pages: &mut impl SlabPages, slab: u64, object: u64) -> bool {
        let head = if slab == self.raw.cpu_slab {
            self.raw.cpu_freelist
        } else {
            pages.page(slab).map_or(0, |p| p.slab_freelist)
        };
        let mut free = head;
        for _ in 0..self.raw.objects {
            if free == 0 {
                return false;
            }
            if free == object {
                return true;
            }
            // SAFETY: `free` is on this slab's freelist: a free object in a mapped slab.
            free = unsafe { (free as *const u64).read() };
        }
        false
    }

    /// Marks a free object: poison in the payload (its first word will hold the freelist
    /// link), the inactive red zone after it.
    fn poison(&self, object: u64) {
        if self.poisons() {
            self.fill(object, 0, self.raw.payload - 1, POISON_FREE);
            self.fill(object, self.raw.payload - 1, self.raw.payload, POISON_END);
        }
        self.fill(object, self.raw.payload, self.raw.payload + RED_ZONE, RED_INACTIVE);
    }

    fn check_poison(&self, object: u64) -> Result<(), SlabError> {
        // The first word is the freelist link; the poison is what follows it.
        let poisoned = self.raw.payload <= 8
            || !self.poisons()
            || (self.all(object, 8, self.raw.payload - 1, POISON_FREE)
                && self.all(object, self.raw.payload - 1, self.raw.payload, POISON_END));
        let red_zone =
            self.all(object, self.raw.payload, self.raw.payload + RED_ZONE, RED_INACTIVE);
        if poisoned && red_zone {
            Ok(())
        } else {
            Err(SlabError { cache: self.name, object, kind: SlabErrorKind::WriteAfterFree })
        }
    }

    /// Sets bytes `[from, to)` of `object` to `value`.
    fn fill(&self, object: u64, from: u64, to: u64, value: u8) {
        if to > from {
            // SAFETY: the range lies within the object's stride in a mapped slab.
            unsafe {
                ((object + from) as *mut u8)
                    .write_bytes(value, usize::try_from(to - from).unwrap_or(0))
            };
        }
    }

    /// Whether bytes `[from, to)` of `object` all equal `value`.
    fn all(&self, object: u64, from: u64, to: u64, value: u8) -> bool {
        // SAFETY: as in `fill`.
        (from..to).all(|i| unsafe { ((object + i) as *const u8).read() } == value)
    }
}

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

/// `kmalloc` and friends over the size-class caches; larger requests go to the backend.
pub struct Kmalloc {
    /// The caches, by size class.
    pub caches: [KmemCache; 13],
}

impl Kmalloc {
    /// The size-class caches; `debug` enables red zones and poisoning.
    pub fn new(debug: bool) -> Option<Self> {
        let mut index = 0;
        let caches = KMALLOC_SIZES.map(|size| {
            // Power-of-two classes are aligned to their size, as Linux's kmalloc guarantees;
            // with red zones that doubles their stride.
            let align = if size.is_power_of_two() { size.min(4096) } else { 8 };
            let cache = KmemCache::new(KMALLOC_NAMES[index], size, align, debug);
            index += 1;
            cache
        });
        if caches.iter().any(Option::is_none) {
            return None;
        }
        let mut tag = 0;
        let caches = caches.map(|cache| {
            let mut cache = cache.expect("checked above");
            tag += 1;
            cache.raw.class_tag = tag;
            cache
        });
        Some(Self { caches })
    }

    /// The size class for `size`, if a cache serves it.
    fn class(size: u64) -> Option<usize> {
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
            Some(class) => self.caches[class].alloc(pages),
            None if size <= KMALLOC_MAX_SIZE => {
                let order = 63 - (size.div_ceil(4096).next_power_of_two()).leading_zeros();
                Ok(pages.alloc_pages(order).map(|pfn| pages.address(pfn)))
            }
            None => Ok(None),
        }
    }

    /// Frees what `kmalloc` returned; null and [`ZERO_SIZE_PTR`] are ignored.
    pub fn kfree(&mut self, pages: &mut impl SlabPages, addr: u64) -> Result<(), SlabError> {
        if addr == 0 || addr == ZERO_SIZE_PTR {
            return Ok(());
        }
        let pfn = pages.pfn(addr);
        match self.cache_of(pages, pfn) {
            Some(class) => {
                let cache = &mut self.caches[class];
                // The fast path: an object of the current slab, no checks to run.
                let slab = pfn & !((1u64 << cache.raw.order) - 1);
                if !cache.debug() && slab == cache.raw.cpu_slab {
                    cache.push_current(addr);
                    return Ok(());
                }
                cache.free(pages, addr)
            }
            None => {
                let order = pages.page(pfn).map_or(0, |p| p.order);
                pages.free_pages(pfn, order);
                Ok(())
            }
        }
    }

    /// Bytes usable at `addr` (Linux's `ksize`).
    pub fn ksize(&self, pages: &mut impl SlabPages, addr: u64) -> u64 {
        if addr == 0 || addr == ZERO_SIZE_PTR {
            return 0;
        }
        let pfn = pages.pfn(addr);
        match self.cache_of(pages, pfn) {
            Some(class) => self.caches[class].raw.object_size,
            None => 4096 << pages.page(pfn).map_or(0, |p| p.order),
        }
    }

    /// Resizes an allocation, keeping its contents up to the smaller size.
    pub fn krealloc(
        &mut self,
        pages: &mut impl SlabPages,
        addr: u64,
        size: u64,
    ) -> Result<Option<u64>, SlabError> {
        let old = self.ksize(pages, addr);
        if size != 0 && size <= old {
            return Ok(Some(addr));
        }
        let Some(new) = self.kmalloc(pages, size)? else { return Ok(None) };
        if new != ZERO_SIZE_PTR && old > 0 {
            // SAFETY: both are live allocations of at least `min(old, size)` bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    addr as *const u8,
                    new as *mut u8,
                    usize::try_from(old.min(size)).unwrap_or(0),
                )
            };
        }
        self.kfree(pages, addr)?;
        Ok(Some(new))
    }

    /// The size class of the slab holding page frame `pfn`, if it is a kmalloc slab.
    fn cache_of(&self, pages: &mut impl SlabPages, pfn: u64) -> Option<usize> {
        // Every slab page records its class (plus one).
        let page = pages.page(pfn)?;
        let class = usize::try_from(page.private).ok()?.checked_sub(1)?;
        (page.flags & PG_SLAB != 0 && class < self.caches.len()).then_some(class)
    }
}

#[cfg(test)]
mod tests;
