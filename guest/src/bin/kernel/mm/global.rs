//! The kernel's memory managers in one place every part of the kernel can reach, and the
//! `#[global_allocator]` on top of kmalloc, so `alloc`'s `Vec`, `Box` and `BTreeMap` work.
//!
//! [`install`] moves the [`Mm`] built at boot into a static (where it never moves again, as
//! the slab caches need); [`with`] lends it out. A second borrow while one is out (say, a
//! `Vec` growing inside code that already holds the memory managers) is a kernel bug and
//! panics with a message, instead of aliasing. Every loan bumps the `vmcoreinfo` sequence
//! counter before and after, which brackets every allocator change for host readers.

use super::setup::Mm;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

/// Not installed, free, lent out.
const EMPTY: u8 = 0;
const FREE: u8 = 1;
const LENT: u8 = 2;

struct Global {
    state: AtomicU8,
    mm: UnsafeCell<MaybeUninit<Mm>>,
}

// SAFETY: access to `mm` is serialised by `state` (one borrow at a time), and the kernel
// runs on one CPU.
unsafe impl Sync for Global {}

static GLOBAL: Global =
    Global { state: AtomicU8::new(EMPTY), mm: UnsafeCell::new(MaybeUninit::uninit()) };

/// Moves the memory managers to their final place. Once only.
pub fn install(mm: Mm) {
    if GLOBAL.state.compare_exchange(EMPTY, LENT, Ordering::Acquire, Ordering::Relaxed).is_err() {
        panic!("the memory managers are installed twice");
    }
    // SAFETY: the state was EMPTY and is now LENT to us: nothing else touches `mm`.
    unsafe { (*GLOBAL.mm.get()).write(mm) };
    GLOBAL.state.store(FREE, Ordering::Release);
}

/// Runs `f` with the memory managers.
pub fn with<R>(f: impl FnOnce(&mut Mm) -> R) -> R {
    match GLOBAL.state.compare_exchange(FREE, LENT, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => {}
        Err(EMPTY) => panic!("memory managers used before they are installed"),
        Err(_) => {
            panic!("memory managers borrowed twice (an allocation inside code that holds them)")
        }
    }
    // A host reading the allocators sees an odd sequence count until `f` is done.
    super::vmcoreinfo::begin_change();
    // SAFETY: installed (the state was FREE) and now lent to us alone until we store FREE.
    let result = f(unsafe { (*GLOBAL.mm.get()).assume_init_mut() });
    super::vmcoreinfo::end_change();
    GLOBAL.state.store(FREE, Ordering::Release);
    result
}

/// `alloc`'s allocator: kmalloc for alignments up to 8; for larger ones, the power-of-two
/// size class (or buddy block) holding both size and alignment, whose objects are aligned
/// to their size (the kmalloc caches run without red zones).
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
            let (kmalloc, mut pages) = mm.slab();
            match kmalloc.kmalloc(&mut pages, kmalloc_size(layout)) {
                Ok(Some(addr)) => addr as *mut u8,
                _ => core::ptr::null_mut(),
            }
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        with(|mm| {
            let (kmalloc, mut pages) = mm.slab();
            if let Err(err) = kmalloc.kfree(&mut pages, ptr as u64) {
                log::error!("dealloc: {err}");
            }
        })
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;
