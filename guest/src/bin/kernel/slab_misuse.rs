//! `workload=slab-misuse`: the kernel's own kmalloc (in debug mode: the workload implies
//! `slub_debug`) misused in each way slub_debug detects, so that the host can confirm from
//! guest RAM what the guest reports. Every step ends at a progress checkpoint with the
//! damage mended or contained; the overflows and the write after free also stop at one
//! while the damage is still in RAM, before the allocator looks:
//!
//! ```text
//! step              misuse                              checkpoints
//! kmalloc red zone  byte 18 of kmalloc(18) written      damaged, then mended and freed
//! right red zone    byte 64 of kmalloc(64) written      damaged, then mended and freed
//! write after free  byte 16 of a freed kmalloc(64)      damaged, then the slab quarantined
//!                   and 200 more allocations
//! double free       a kmalloc(64) freed twice           after the refused second free
//! bad free          kfree(object + 8)                   after the refused free
//! ```
//!
//! Each step is reported as a test, passed when the allocator named the misuse as Linux
//! does, with its report (cache, kind, object address) as the detail.

use crate::hypercall;
use crate::mm;
use guest::slab::{SlabError, SlabErrorKind, RED_ACTIVE};
use shared::hypercall::checkpoint;

/// Allocations after the write after free, enough to fill several fresh slabs.
const AFTER_DAMAGE: usize = 200;

/// A step: the misuse and its clean-up; returns what the allocator reported, or why the
/// step could not be carried out.
type Step = fn() -> Result<SlabError, &'static str>;

/// Runs every step; returns whether each detection was the expected one.
pub fn run() -> bool {
    let steps: [(&str, SlabErrorKind, Step); 5] = [
        (
            "slab misuse: a write past the requested size",
            SlabErrorKind::KmallocRedzone,
            overflow_request,
        ),
        ("slab misuse: a write past the object", SlabErrorKind::RightRedzone, overflow_object),
        ("slab misuse: a write after free", SlabErrorKind::PoisonOverwritten, write_after_free),
        ("slab misuse: a double free", SlabErrorKind::DoubleFree, double_free),
        ("slab misuse: a free inside an object", SlabErrorKind::NotAtBoundary, bad_free),
    ];
    let mut passed = true;
    for (name, expected, step) in steps {
        let found = step();
        hypercall::checkpoint(checkpoint::PROGRESS);
        let mut detail = crate::console::Line::new();
        let ok = match found {
            Ok(error) => {
                let _ = core::fmt::Write::write_fmt(&mut detail, format_args!("{error}"));
                error.kind == expected
            }
            Err(why) => {
                let _ = core::fmt::Write::write_str(&mut detail, why);
                false
            }
        };
        if ok {
            log::info!("{name}: detected: {}", detail.as_str());
        } else {
            log::error!("{name}: expected {}, got {}", expected.describe(), detail.as_str());
        }
        hypercall::report_test(name, ok, detail.as_str());
        passed &= ok;
    }
    passed
}

/// A fresh kmalloc object of `size` bytes.
fn kmalloc(size: u64) -> Result<u64, &'static str> {
    mm::global::with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        kmalloc.kmalloc(&mut pages, size).ok().flatten().ok_or("kmalloc failed")
    })
}

/// kfree of `addr`: what the allocator says.
///
/// # Safety
/// As [`guest::slab::Kmalloc::kfree`], except that the misuses under test are allowed: the
/// debug caches refuse them.
unsafe fn kfree(addr: u64) -> Result<(), SlabError> {
    mm::global::with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        // SAFETY: the caller's contract.
        unsafe { kmalloc.kfree(&mut pages, addr) }
    })
}

/// Writes `value` to byte `offset` of `object`.
///
/// # Safety
/// `object + offset` lies inside the stride of a live slab's object (red zones included).
unsafe fn poke(object: u64, offset: u64, value: u8) {
    // SAFETY: the caller's contract; slabs are reached through the direct map.
    unsafe { ((object + offset) as *mut u8).write_volatile(value) }
}

/// Writes `value` at byte `offset` of a fresh `size`-byte object (a red-zone byte), lets
/// the host see it, then frees: refused. Mends the byte and frees for real.
fn overflow(size: u64, offset: u64) -> Result<SlabError, &'static str> {
    let object = kmalloc(size)?;
    // SAFETY: a red-zone byte of the live object: the misuse under test.
    unsafe { poke(object, offset, 0) };
    hypercall::checkpoint(checkpoint::PROGRESS);
    // SAFETY: `object` is live; its debug class refuses the free over the damaged byte.
    let found = unsafe { kfree(object) }.err().ok_or("the free was accepted");
    // SAFETY: the same byte, mended.
    unsafe { poke(object, offset, RED_ACTIVE) };
    // SAFETY: `object` is still live: the refused free changed nothing.
    unsafe { kfree(object) }.map_err(|_| "the mended object was refused")?;
    found
}

fn overflow_request() -> Result<SlabError, &'static str> {
    overflow(18, 18)
}

fn overflow_object() -> Result<SlabError, &'static str> {
    overflow(64, 64)
}

fn write_after_free() -> Result<SlabError, &'static str> {
    let object = kmalloc(64)?;
    // SAFETY: `object` is live.
    unsafe { kfree(object) }.map_err(|_| "the first free was refused")?;
    // SAFETY: a payload byte of the freed object, which stays in its slab: the misuse.
    unsafe { poke(object, 16, 1) };
    hypercall::checkpoint(checkpoint::PROGRESS);
    // The freed object heads its slab's freelist: the next allocation meets it.
    let found = mm::global::with(|mm| {
        let (kmalloc, mut pages) = mm.slab();
        kmalloc.kmalloc(&mut pages, 64).err().ok_or("the damaged object was handed out")
    })?;
    let mut live = [0u64; AFTER_DAMAGE];
    for slot in &mut live {
        *slot = kmalloc(64).map_err(|_| "the cache stopped allocating after the damage")?;
    }
    for &object in &live {
        // SAFETY: each is live and freed once.
        unsafe { kfree(object) }.map_err(|_| "an allocation after the damage was refused")?;
    }
    Ok(found)
}

fn double_free() -> Result<SlabError, &'static str> {
    let object = kmalloc(64)?;
    // SAFETY: `object` is live.
    unsafe { kfree(object) }.map_err(|_| "the first free was refused")?;
    // SAFETY: the second free is the misuse under test, which the debug class refuses.
    unsafe { kfree(object) }.err().ok_or("the second free was accepted")
}

fn bad_free() -> Result<SlabError, &'static str> {
    let object = kmalloc(64)?;
    // SAFETY: the misuse under test: the debug class refuses a pointer inside an object.
    let found = unsafe { kfree(object + 8) }.err().ok_or("the free was accepted");
    // SAFETY: `object` is still live.
    unsafe { kfree(object) }.map_err(|_| "the object itself was refused")?;
    found
}
