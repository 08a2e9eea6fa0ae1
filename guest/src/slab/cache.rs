//! [`KmemCache`]: one size of object, its slabs and their lists.
//!
//! Life of a slab: [`KmemCache::alloc`] finds the current slab's freelist empty, takes a
//! slab off the partial list or a new one from the backend (`refill`), and makes it
//! current. Objects freed to a slab that is not current go on that slab's own freelist; a
//! full slab that gets a free object back joins the partial list; an empty one stays there
//! until the cache holds more than [`MAX_EMPTY_SLABS`], then goes back to the backend
//! (`discard`). A slab found damaged in debug mode is taken out of service instead.

use super::{debug, SlabError, SlabErrorKind, SlabPages};
use shared::mm::{SlabCache, SLAB_CTOR, SLAB_DEBUG};
use shared::page::{NO_PFN, PG_SLAB};

/// Empty slabs a cache keeps before giving slabs back.
pub const MAX_EMPTY_SLABS: u64 = 2;
/// The largest slab order a cache uses.
pub const MAX_SLAB_ORDER: u32 = 3;

/// A cache of equal objects. Its state is a [`SlabCache`], first so that the host finds
/// it at the cache's address; the name and constructor are for the kernel.
///
/// Slabs record their cache's address, so a cache must not move once it has slabs (the
/// kernel keeps its caches in a static; tests box them).
#[repr(C)]
pub struct KmemCache {
    pub(super) raw: SlabCache,
    name: &'static str,
    /// Run on every object of a new slab (Linux's constructor); objects must be returned
    /// to their constructed state before they are freed, so such a cache is not poisoned.
    ctor: Option<fn(u64)>,
}

impl KmemCache {
    /// A cache of `size`-byte objects aligned to `align` (a power of two; at least 8, so
    /// the free pointer fits), in slabs of the order Linux's `calculate_order` would pick,
    /// up to [`MAX_SLAB_ORDER`]; `debug` gives it red zones and poison (`slub_debug`). Returns
    /// `None` for a size of zero or larger than such a slab.
    pub fn new(name: &'static str, size: u64, align: u64, debug: bool) -> Option<Self> {
        let flags = if debug { SLAB_DEBUG } else { 0 };
        Self::with_flags(name, size, align, flags)
    }

    /// A cache with `SLAB_*` flags (see [`KmemCache::new`]).
    pub(super) fn with_flags(
        name: &'static str,
        size: u64,
        align: u64,
        flags: u32,
    ) -> Option<Self> {
        let layout = debug::Layout::of(size, align, flags)?;
        let raw = SlabCache {
            name_addr: name.as_ptr() as u64,
            name_len: name.len() as u64,
            object_size: size,
            red_end: layout.red_end,
            stride: layout.stride,
            order: layout.order,
            flags,
            objects: layout.objects,
            cpu_slab: NO_PFN,
            cpu_freelist: 0,
            cpu_inuse: 0,
            free_offset: layout.free_offset,
            class_tag: 0,
            partial: NO_PFN,
            empty: 0,
            slabs: 0,
            in_use: 0,
            quarantined: NO_PFN,
            written_off: 0,
        };
        Some(Self { raw, name, ctor: None })
    }

    /// A cache as [`KmemCache::new`] makes it, whose objects `ctor` constructs when their
    /// slab is made (Linux's constructor). Objects must be returned to their constructed
    /// state before they are freed, so such a cache is not poisoned, and its free pointer
    /// lies outside the object, so that the constructed state survives a free.
    pub fn with_ctor(
        name: &'static str,
        size: u64,
        align: u64,
        debug: bool,
        ctor: fn(u64),
    ) -> Option<Self> {
        let flags = SLAB_CTOR | if debug { SLAB_DEBUG } else { 0 };
        let mut cache = Self::with_flags(name, size, align, flags)?;
        cache.ctor = Some(ctor);
        Some(cache)
    }

    /// Whether objects have red zones and free ones are poisoned (`slub_debug`).
    #[inline]
    pub(super) fn debug(&self) -> bool {
        self.raw.flags & SLAB_DEBUG != 0
    }

    /// The state the host reads.
    pub fn raw(&self) -> &SlabCache {
        &self.raw
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

    pub(super) fn error(&self, object: u64, kind: SlabErrorKind) -> SlabError {
        SlabError { cache: self.name, object, kind }
    }

    /// Address of the free pointer of `object`.
    #[inline]
    pub(super) fn free_pointer(&self, object: u64) -> u64 {
        object + u64::from(self.raw.free_offset)
    }

    /// Allocates an object; `None` when the backend has no pages. In debug mode a damaged
    /// free object or freelist is reported as an error, and its slab is taken out of
    /// service, so that the next allocation comes from a sound slab.
    #[inline]
    pub fn alloc(&mut self, pages: &mut impl SlabPages) -> Result<Option<u64>, SlabError> {
        if self.raw.cpu_freelist == 0 && !self.refill(pages) {
            return Ok(None);
        }
        let object = self.raw.cpu_freelist;
        // SAFETY: `object` heads the current slab's freelist: a free object of a slab the
        // backend gave us, whose free pointer is an aligned word inside its stride.
        let next = unsafe { pages.read_word(self.free_pointer(object)) };
        if self.debug() {
            debug::check_free_object(self, pages, object, next)?;
        }
        self.raw.cpu_freelist = next;
        self.raw.cpu_inuse += 1;
        self.raw.in_use += 1;
        Ok(Some(object))
    }

    /// Frees `object`.
    ///
    /// # Safety
    /// `object` must be an object this cache allocated and that has not been freed since.
    /// In debug mode, a pointer that is not such an object, a double free and an
    /// overwritten red zone are found and reported, and change nothing; without debug they
    /// corrupt the cache.
    #[inline]
    pub unsafe fn free(
        &mut self,
        pages: &mut impl SlabPages,
        object: u64,
    ) -> Result<(), SlabError> {
        let slab =
            self.slab_of(pages, object).ok_or(self.error(object, SlabErrorKind::NotAnObject))?;
        if self.debug() {
            debug::check_and_poison_freed(self, pages, slab, object)?;
        }
        if slab == self.raw.cpu_slab {
            // SAFETY: an object of the current slab, now free (the caller's contract).
            unsafe { self.push_current(pages, object) };
            return Ok(());
        }
        // A slab out of service only takes the object back: it never rejoins the lists.
        // Only debug checks take slabs out of service.
        let quarantined = self.debug() && debug::is_quarantined(self, pages, slab);
        let Some(page) = pages.page(slab) else {
            return Err(self.error(object, SlabErrorKind::NotAnObject));
        };
        let was_full = page.slab_inuse == page.slab_objects && !quarantined;
        page.slab_inuse -= 1;
        // Written-off objects keep a quarantined slab from emptying; were it to, it stays
        // off the partial list all the same.
        let now_empty = page.slab_inuse == 0 && !quarantined;
        let freelist = page.slab_freelist;
        page.slab_freelist = object;
        // SAFETY: `object` is a now-free object of `slab` (the caller's contract): its free
        // pointer becomes the slab's freelist link.
        unsafe { pages.write_word(self.free_pointer(object), freelist) };
        if was_full {
            self.list_add(pages, slab);
        }
        if now_empty {
            self.raw.empty += 1;
            if self.raw.empty > MAX_EMPTY_SLABS {
                self.discard(pages, slab);
            }
        }
        self.raw.in_use -= 1;
        Ok(())
    }

    /// Puts a freed object of the current slab on its freelist: two stores, the fast path.
    ///
    /// # Safety
    /// `object` is an object of the current slab that its holder gave back.
    #[inline]
    pub(super) unsafe fn push_current(&mut self, pages: &mut impl SlabPages, object: u64) {
        // SAFETY: the caller's contract: a free object of a live slab; its free pointer
        // becomes the freelist link.
        unsafe { pages.write_word(self.free_pointer(object), self.raw.cpu_freelist) };
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
    /// complains the same way), and returns their count; else gives every slab back,
    /// those taken out of service included.
    pub fn destroy(&mut self, pages: &mut impl SlabPages) -> Result<(), u64> {
        let live = self.raw.in_use - self.raw.written_off;
        if live > 0 {
            return Err(live);
        }
        self.shrink(pages);
        debug::release_quarantined(self, pages);
        Ok(())
    }

    /// The first frame of the slab `pfn` would be in: slabs start at a frame aligned to
    /// their order (the backend is a buddy allocator).
    #[inline]
    pub(super) fn slab_start(&self, pfn: u64) -> u64 {
        pfn & !((1u64 << self.raw.order) - 1)
    }

    /// The slab holding `object`, if it is one of this cache's.
    #[inline]
    pub(super) fn slab_of(&self, pages: &mut impl SlabPages, object: u64) -> Option<u64> {
        let slab = self.slab_start(pages.pfn(object));
        let page = pages.page(slab)?;
        (page.flags & PG_SLAB != 0 && page.slab_cache == self as *const Self as u64).then_some(slab)
    }

    /// Makes a partial slab with free objects, or a new slab, the current slab.
    fn refill(&mut self, pages: &mut impl SlabPages) -> bool {
        self.deactivate(pages);
        let slab = loop {
            if self.raw.partial == NO_PFN {
                match self.new_slab(pages) {
                    Some(slab) => break slab,
                    None => return false,
                }
            }
            let slab = self.raw.partial;
            self.list_del(pages, slab);
            let (inuse, freelist) =
                pages.page(slab).map_or((0, 0), |p| (p.slab_inuse, p.slab_freelist));
            if inuse == 0 {
                self.raw.empty -= 1;
            }
            if freelist != 0 {
                break slab;
            }
            // A partial slab without a freelist: its free objects were lost (a debug
            // check dropped a damaged chain). Never hand it out again.
            debug::quarantine(self, pages, slab);
        };
        let Some(page) = pages.page(slab) else { return false };
        self.raw.cpu_freelist = core::mem::take(&mut page.slab_freelist);
        self.raw.cpu_inuse = u32::from(page.slab_inuse);
        self.raw.cpu_slab = slab;
        self.raw.cpu_freelist != 0
    }

    /// Puts the current slab back on the lists with its freelist.
    pub(super) fn deactivate(&mut self, pages: &mut impl SlabPages) {
        let slab = core::mem::replace(&mut self.raw.cpu_slab, NO_PFN);
        if slab == NO_PFN {
            return;
        }
        let freelist = core::mem::take(&mut self.raw.cpu_freelist);
        let inuse = core::mem::take(&mut self.raw.cpu_inuse);
        let Some(page) = pages.page(slab) else { return };
        page.slab_freelist = freelist;
        // At most the slab's objects, which fit 16 bits.
        page.slab_inuse = u16::try_from(inuse).unwrap_or(u16::MAX);
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
                debug::poison(self, pages, object);
            }
            if let Some(ctor) = self.ctor {
                ctor(object);
            }
            // SAFETY: `object` lies in the block the backend just gave us; its free
            // pointer is an aligned word inside its stride.
            unsafe { pages.write_word(self.free_pointer(object), freelist) };
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
        page.slab_objects = u16::try_from(self.raw.objects).unwrap_or(u16::MAX);
        self.raw.slabs += 1;
        Some(slab)
    }

    /// Gives an empty slab on the partial list back to the backend.
    fn discard(&mut self, pages: &mut impl SlabPages, slab: u64) {
        self.list_del(pages, slab);
        self.raw.empty -= 1;
        self.free_slab(pages, slab);
    }

    /// Gives a slab on no list back to the backend.
    pub(super) fn free_slab(&mut self, pages: &mut impl SlabPages, slab: u64) {
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
        // A slab goes back with the order it was allocated with; a refusal would mean the
        // page allocator's state is corrupt, which it then leaves untouched.
        let _ = pages.free_pages(slab, self.raw.order);
    }

    fn list_add(&mut self, pages: &mut impl SlabPages, slab: u64) {
        push_slab(&mut self.raw.partial, pages, slab);
    }

    fn list_del(&mut self, pages: &mut impl SlabPages, slab: u64) {
        unlink_slab(&mut self.raw.partial, pages, slab);
    }
}

/// Puts `slab` at the head of the list at `head`, linked through its page's `next`/`prev`.
pub(super) fn push_slab(head: &mut u64, pages: &mut impl SlabPages, slab: u64) {
    if let Some(page) = pages.page(slab) {
        (page.next, page.prev) = (*head, NO_PFN);
    }
    if let Some(next) = pages.page(*head) {
        next.prev = slab;
    }
    *head = slab;
}

/// Takes `slab` off the list at `head`.
pub(super) fn unlink_slab(head: &mut u64, pages: &mut impl SlabPages, slab: u64) {
    let Some(page) = pages.page(slab) else { return };
    let (next, prev) = (page.next, page.prev);
    (page.next, page.prev) = (0, 0);
    match pages.page(prev) {
        Some(prev_page) => prev_page.next = next,
        None => *head = next,
    }
    if let Some(next_page) = pages.page(next) {
        next_page.prev = prev;
    }
}
