//! The kernel's memory managers in one place every part of the kernel can reach, and the
//! `#[global_allocator]` on top of kmalloc, so `alloc`'s `Vec`, `Box` and `BTreeMap` work.
//!
//! [`install`] moves the [`Mm`] built at boot into a [`KernelCell`] (where it never moves
//! again, as the slab caches need); [`with`] lends it out. Every loan bumps the
//! `vmcoreinfo` sequence counter before and after, which brackets every allocator change
//! for host readers.

use super::setup::Mm;
use crate::cell::KernelCell;
use core::alloc::{GlobalAlloc, Layout};

static MM: KernelCell<Mm> = KernelCell::empty();

/// Moves the memory managers to their final place. Once only.
pub fn install(mm: Mm) {
    MM.install(mm);
}

/// Runs `f` with the memory managers.
pub fn with<R>(f: impl FnOnce(&mut Mm) -> R) -> R {
    MM.with(|mm| {
        // A host reading the allocators sees an odd sequence count until `f` is done.
        super::vmcoreinfo::begin_change();
        let result = f(mm);
        super::vmcoreinfo::end_change();
        result
    })
}

/// `alloc`'s allocator: kmalloc for alignments up to 8; for larger ones, the power-of-two
/// size class (or buddy block) holding both size and alignment, whose objects are aligned
/// to their size.
struct KernelAllocator;

fn kmalloc_size(layout: Layout) -> u64 {
    let size = layout.size().max(1) as u64;
    if layout.align() <= 8 {
        size
    } else {
        size.max(layout.align() as u64).next_power_of_two()
    }
}

// SAFETY: every block handed out is at least `layout.size()` bytes, aligned as asked (see
// `kmalloc_size`), and stays allocated until `dealloc` gives it back; failures return null.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        with(|mm| {
            // The slow path reclaims (direct reclaim) while that frees something, then
            // fails: the caller handles the null, or `alloc` reports the failure.
            for _ in 0..=crate::process::space::MAX_RECLAIM_RETRIES {
                let (kmalloc, mut pages) = mm.slab();
                if let Ok(Some(addr)) = kmalloc.kmalloc(&mut pages, kmalloc_size(layout)) {
                    return addr as *mut u8;
                }
                if mm.reclaim(guest::reclaim::SWAP_BATCH as u64, false) == 0 {
                    break;
                }
            }
            core::ptr::null_mut()
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        with(|mm| {
            let (kmalloc, mut pages) = mm.slab();
            // SAFETY: `GlobalAlloc::dealloc`'s contract: `ptr` came from `alloc` above, and
            // is freed once.
            if let Err(err) = unsafe { kmalloc.kfree(&mut pages, ptr as u64) } {
                log::error!("dealloc: {err}");
            }
        })
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;
