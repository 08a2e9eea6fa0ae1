//! `slub_debug`: red zones, poison and the requested size of kmalloc objects, checked on
//! every free and allocation, as Linux's SLUB does with `slub_debug=FZP`.
//!
//! ```text
//! debug object  [payload: object_size][red zone][free pointer][orig size][align padding]
//!                0                     ≥ 8 B     8 B           8 B, kmalloc classes only
//! allocated     caller's bytes         0xcc      (stale)       requested size; bytes from
//!                                                              it to object_size are 0xcc
//! free          0x6b … 0x6b 0xa5       0xbb      next free     (stale)
//! ```
//!
//! The free pointer sits outside the payload, so a write after free anywhere in the
//! payload damages the poison and is found when the object is next handed out. A free
//! checks that the pointer is an object of the cache, at a boundary, not already free,
//! and that both red zones are intact; an allocation checks the free pointer it follows,
//! the red zone and the poison. What a check finds is a [`SlabError`] named as Linux names
//! it. `krealloc` makes the free's checks before it touches an object, and `ksize` of a
//! free object is 0. A slab found damaged at allocation is taken out of service, as Linux's
//! `alloc_debug_processing` does ("Marking all objects used"): its free objects are
//! written off as in use and the cache allocates from other slabs.

use super::cache::{push_slab, unlink_slab, KmemCache, MAX_SLAB_ORDER};
use super::{SlabError, SlabErrorKind, SlabPages};
use shared::mm::{SLAB_CTOR, SLAB_DEBUG, SLAB_KMALLOC};
use shared::page::NO_PFN;

pub use shared::mm::{POISON_END, POISON_FREE, RED_ACTIVE, RED_INACTIVE};

/// Where an object's parts lie, and how many objects a slab holds.
pub(super) struct Layout {
    pub red_end: u64,
    pub free_offset: u32,
    pub stride: u64,
    pub order: u32,
    pub objects: u64,
}

impl Layout {
    /// The layout of `size`-byte objects aligned to `align` (at least 8) for a cache with
    /// `SLAB_*` `flags`, in slabs of the order [`slab_order`] picks.
    pub fn of(size: u64, align: u64, flags: u32) -> Option<Self> {
        let align = align.max(8);
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let debug = flags & SLAB_DEBUG != 0;
        // The free pointer moves out of the payload when the payload must keep its bytes
        // while free: poisoned (debug) or constructed.
        let outside = debug || flags & SLAB_CTOR != 0;
        let red_end = if debug { size.checked_next_multiple_of(8)? + 8 } else { size.max(8) };
        let free_offset = if outside { red_end.next_multiple_of(8) } else { 0 };
        let mut end = if outside { free_offset + 8 } else { red_end };
        if debug && flags & SLAB_KMALLOC != 0 {
            end += 8;
        }
        let stride = end.checked_next_multiple_of(align)?;
        let order = slab_order(stride)?;
        let objects = (4096u64 << order) / stride;
        Some(Self {
            red_end,
            free_offset: u32::try_from(free_offset).ok()?,
            stride,
            order,
            objects,
        })
    }
}

/// Objects a slab should hold where they fit: Linux's `4 * (fls(nr_cpu_ids) + 1)` for our
/// one CPU.
const MIN_OBJECTS: u64 = 8;

/// The slab order for objects `stride` bytes apart, as Linux's `calculate_order` picks it:
/// the smallest order from the one that holds [`MIN_OBJECTS`] (or as many as fit in
/// [`MAX_SLAB_ORDER`]) whose leftover is at most 1/16 of the slab, else 1/8, else 1/4,
/// else 1/2 (which the largest order always meets); `None` if not even one object fits.
fn slab_order(stride: u64) -> Option<u32> {
    let bytes = |order: u32| 4096u64 << order;
    if stride > bytes(MAX_SLAB_ORDER) {
        return None;
    }
    let min_objects = MIN_OBJECTS.min(bytes(MAX_SLAB_ORDER) / stride);
    // get_order(min_objects × stride).
    let min_order = (0..=MAX_SLAB_ORDER).find(|&order| bytes(order) >= min_objects * stride)?;
    [16, 8, 4, 2].into_iter().find_map(|fraction| {
        (min_order..=MAX_SLAB_ORDER).find(|&order| bytes(order) % stride <= bytes(order) / fraction)
    })
}

/// Whether freed objects are poisoned: in debug mode, for caches without a constructor.
fn poisons(cache: &KmemCache) -> bool {
    cache.raw.poisons()
}

/// Whether objects record their requested size: debug kmalloc classes.
fn records_size(cache: &KmemCache) -> bool {
    cache.raw.requested_size_offset().is_some()
}

/// Address of the requested-size word of `object` (debug kmalloc classes).
fn requested_size_at(cache: &KmemCache, object: u64) -> u64 {
    object + cache.raw.requested_size_offset().unwrap_or(0)
}

/// Whether `link` is 0 or an object of the slab at `base`.
fn valid_link(cache: &KmemCache, base: u64, link: u64) -> bool {
    let offset = link.wrapping_sub(base);
    link == 0 || (offset % cache.raw.stride == 0 && offset / cache.raw.stride < cache.raw.objects)
}

/// Whether bytes `[from, to)` of `object` all equal `byte`.
///
/// # Safety
/// `object` is an object of a live slab of `cache`, and `to` is at most its stride.
unsafe fn intact(pages: &impl SlabPages, object: u64, from: u64, to: u64, byte: u8) -> bool {
    // SAFETY: the caller's contract keeps the range inside the object's stride.
    to <= from || unsafe { pages.find_other(object + from, to - from, byte) }.is_none()
}

/// Marks a new or freed object free: poison in its payload, the inactive red zone after.
pub(super) fn poison(cache: &KmemCache, pages: &mut impl SlabPages, object: u64) {
    let size = cache.raw.object_size;
    // SAFETY: `object` is an object of a slab the cache holds (its callers' invariant); the
    // ranges end within `red_end`, inside its stride.
    unsafe {
        if poisons(cache) {
            pages.fill(object, size - 1, POISON_FREE);
            pages.fill(object + size - 1, 1, POISON_END);
        }
        pages.fill(object + size, cache.raw.red_end - size, RED_INACTIVE);
    }
}

/// The allocation path's checks of `object`, the head of the current slab's freelist,
/// whose free pointer holds `next`. On success the object is marked allocated (active red
/// zone, and the class size as its requested size); on damage the slab is taken out of
/// service and the damage reported.
pub(super) fn check_free_object(
    cache: &mut KmemCache,
    pages: &mut impl SlabPages,
    object: u64,
    next: u64,
) -> Result<(), SlabError> {
    let slab = cache.raw.cpu_slab;
    let size = cache.raw.object_size;
    let red_end = cache.raw.red_end;
    // SAFETY: `object` heads the current slab's freelist, so it is an object of a live slab
    // of this cache; the ranges lie within `red_end`, inside its stride.
    let (red_zone, poison) = unsafe {
        (
            intact(pages, object, size, red_end, RED_INACTIVE),
            intact(pages, object, 0, size - 1, POISON_FREE)
                && intact(pages, object, size - 1, size, POISON_END),
        )
    };
    let damage = if !valid_link(cache, pages.address(slab), next) {
        // Never follow it.
        Some(SlabErrorKind::FreePointerCorrupt)
    } else if !red_zone {
        Some(SlabErrorKind::RightRedzone)
    } else if poisons(cache) && !poison {
        Some(SlabErrorKind::PoisonOverwritten)
    } else {
        None
    };
    if let Some(kind) = damage {
        quarantine(cache, pages, slab);
        return Err(cache.error(object, kind));
    }
    // SAFETY: as above; the requested-size word lies inside the stride of a kmalloc class.
    unsafe {
        pages.fill(object + size, red_end - size, RED_ACTIVE);
        if records_size(cache) {
            pages.write_word(requested_size_at(cache, object), size);
        }
    }
    Ok(())
}

/// The free path's checks of `object` in `slab`; if they pass, the object is poisoned.
/// Nothing changes when they fail.
pub(super) fn check_and_poison_freed(
    cache: &KmemCache,
    pages: &mut impl SlabPages,
    slab: u64,
    object: u64,
) -> Result<(), SlabError> {
    check_allocated(cache, pages, slab, object)?;
    poison(cache, pages, object);
    Ok(())
}

/// The checks a free makes of `object`, an address in `slab` of `cache`: that it is an
/// object's start, not already free, and that both its red zones are intact. They change
/// nothing; `krealloc` runs them too before it touches an object.
pub(super) fn check_allocated(
    cache: &KmemCache,
    pages: &mut impl SlabPages,
    slab: u64,
    object: u64,
) -> Result<(), SlabError> {
    let base = pages.address(slab);
    // A division per free: only in debug mode, as in SLUB.
    if object == 0 || !valid_link(cache, base, object) {
        return Err(cache.error(object, SlabErrorKind::NotAtBoundary));
    }
    if is_free(cache, pages, slab, object) {
        return Err(cache.error(object, SlabErrorKind::DoubleFree));
    }
    let size = cache.raw.object_size;
    // SAFETY: `object` is at an object boundary of a live slab of this cache (checked
    // above); every range below lies inside its stride.
    unsafe {
        if !intact(pages, object, size, cache.raw.red_end, RED_ACTIVE) {
            return Err(cache.error(object, SlabErrorKind::RightRedzone));
        }
        if records_size(cache) {
            let requested = pages.read_word(requested_size_at(cache, object));
            if requested > size || !intact(pages, object, requested, size, RED_ACTIVE) {
                return Err(cache.error(object, SlabErrorKind::KmallocRedzone));
            }
        }
    }
    Ok(())
}

/// Whether `object`, an address in a slab of `cache`, is a free object: on its slab's
/// freelist.
pub(super) fn is_free_object(cache: &KmemCache, pages: &mut impl SlabPages, object: u64) -> bool {
    let slab = cache.slab_start(pages.pfn(object));
    is_free(cache, pages, slab, object)
}

/// Whether `object` is on a freelist of `slab`. Walks the list, each link checked before
/// it is followed, bounded by the objects in a slab.
fn is_free(cache: &KmemCache, pages: &mut impl SlabPages, slab: u64, object: u64) -> bool {
    let head = if slab == cache.raw.cpu_slab {
        cache.raw.cpu_freelist
    } else {
        pages.page(slab).map_or(0, |p| p.slab_freelist)
    };
    let base = pages.address(slab);
    let mut free = head;
    for _ in 0..cache.raw.objects {
        if free == 0 || !valid_link(cache, base, free) {
            return false;
        }
        if free == object {
            return true;
        }
        // SAFETY: `free` is an object of the live slab `slab` (checked just above).
        free = unsafe { pages.read_word(cache.free_pointer(free)) };
    }
    false
}

/// Takes `slab` out of service, as Linux's `slab_fix(s, "Marking all objects used")`: its
/// free objects are written off as in use, its freelist is dropped, it leaves the CPU if
/// it was current, and it joins the cache's quarantine list, never to be allocated from
/// again. Objects freed to it later are taken back but not reused; the slab goes back to
/// the backend only when the cache is destroyed.
pub(super) fn quarantine(cache: &mut KmemCache, pages: &mut impl SlabPages, slab: u64) {
    let current = slab == cache.raw.cpu_slab;
    let Some(page) = pages.page(slab) else { return };
    let inuse = if current { cache.raw.cpu_inuse } else { u32::from(page.slab_inuse) };
    let written_off = u64::from(u32::from(page.slab_objects).saturating_sub(inuse));
    page.slab_inuse = page.slab_objects;
    page.slab_freelist = 0;
    if current {
        cache.raw.cpu_slab = NO_PFN;
        cache.raw.cpu_freelist = 0;
        cache.raw.cpu_inuse = 0;
    }
    cache.raw.in_use += written_off;
    cache.raw.written_off += written_off;
    push_slab(&mut cache.raw.quarantined, pages, slab);
}

/// Whether `slab` is on the cache's quarantine list (bounded by the cache's slabs).
pub(super) fn is_quarantined(cache: &KmemCache, pages: &mut impl SlabPages, slab: u64) -> bool {
    let mut at = cache.raw.quarantined;
    for _ in 0..cache.raw.slabs {
        if at == NO_PFN {
            return false;
        }
        if at == slab {
            return true;
        }
        at = pages.page(at).map_or(NO_PFN, |p| p.next);
    }
    false
}

/// Gives every quarantined slab back (the cache is being destroyed: nothing in them is
/// live but what was written off).
pub(super) fn release_quarantined(cache: &mut KmemCache, pages: &mut impl SlabPages) {
    while cache.raw.quarantined != NO_PFN {
        let slab = cache.raw.quarantined;
        let inuse = pages.page(slab).map_or(0, |p| u64::from(p.slab_inuse));
        unlink_slab(&mut cache.raw.quarantined, pages, slab);
        cache.raw.in_use -= inuse.min(cache.raw.in_use);
        cache.raw.written_off -= inuse.min(cache.raw.written_off);
        cache.free_slab(pages, slab);
    }
}

/// Records that the caller of kmalloc asked for `size` bytes of the fresh object `object`
/// (a debug kmalloc class): the bytes from there to the class size become red zone.
///
/// # Safety
/// `object` is an allocated object of `cache`, and `size` is at most its object size.
pub(super) unsafe fn set_requested_size(
    cache: &KmemCache,
    pages: &mut impl SlabPages,
    object: u64,
    size: u64,
) {
    if records_size(cache) {
        // SAFETY: the caller's contract; both ranges lie inside the object's stride.
        unsafe {
            pages.write_word(requested_size_at(cache, object), size);
            pages.fill(object + size, cache.raw.object_size - size, RED_ACTIVE);
        }
    }
}

/// The size the caller asked for when `object` was allocated: recorded in debug kmalloc
/// classes, the object size otherwise.
///
/// # Safety
/// `object` is an allocated object of `cache`.
pub(super) unsafe fn requested_size(cache: &KmemCache, pages: &impl SlabPages, object: u64) -> u64 {
    if records_size(cache) {
        // SAFETY: the caller's contract; the word lies inside the object's stride.
        unsafe { pages.read_word(requested_size_at(cache, object)) }.min(cache.raw.object_size)
    } else {
        cache.raw.object_size
    }
}
