//! kmalloc's classes and sizes, and each misuse slub_debug finds: a double free, a bad
//! pointer, red zones overwritten (past the object, and past the requested size), and a
//! write after free, after which the cache keeps allocating from sound slabs.

use super::{all_pages_back, detail, ensure, CheckResult};
use crate::mm::setup::Mm;
use crate::mm::vmemmap::Vmemmap;
use guest::e820::E820Map;
use guest::slab::{BuddyPages, Kmalloc, KmemCache, SlabError, SlabErrorKind, ZERO_SIZE_PTR};

pub fn kmalloc_classes(mm: &mut Mm, _: &E820Map) -> CheckResult {
    const SIZES: [u64; 15] =
        [0, 1, 8, 9, 64, 96, 100, 192, 256, 1000, 2048, 4096, 8192, 8193, 20_000];
    let free = mm.buddy.nr_free_pages();
    let (kmalloc, mut pages) = mm.slab();
    let mut live = [0u64; SIZES.len()];
    for (slot, &size) in live.iter_mut().zip(&SIZES) {
        let addr = kmalloc.kmalloc(&mut pages, size).map_err(|e| detail(format_args!("{e}")))?;
        let addr = addr.ok_or_else(|| detail(format_args!("no memory for {size} bytes")))?;
        let usable = kmalloc.ksize(&mut pages, addr);
        ensure!(usable >= size, "ksize of {size} bytes is {usable}");
        if size > 0 {
            // SAFETY: a fresh allocation of `size` bytes, reached through the direct map.
            unsafe {
                (addr as *mut u8)
                    .write_bytes(size.to_le_bytes()[0] | 1, usize::try_from(size).unwrap_or(0))
            };
        }
        *slot = addr;
    }
    ensure!(live[0] == ZERO_SIZE_PTR, "kmalloc(0) gave {:#x}", live[0]);
    for (&addr, &size) in live.iter().zip(&SIZES).skip(1) {
        let fill = size.to_le_bytes()[0] | 1;
        // SAFETY: a live allocation of `size` bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts(addr as *const u8, usize::try_from(size).unwrap_or(0))
        };
        ensure!(
            bytes.iter().all(|&b| b == fill),
            "the {size}-byte allocation at {addr:#x} lost its contents"
        );
    }
    for &addr in &live {
        // SAFETY: each is a live allocation of this kmalloc, freed once.
        unsafe { kmalloc.kfree(&mut pages, addr) }.map_err(|e| detail(format_args!("{e}")))?;
    }
    for cache in &mut kmalloc.caches {
        cache.shrink(&mut pages);
    }
    all_pages_back(mm, free)
}

/// Runs `misuse` on two objects of a fresh debug cache (which refuses to be destroyed
/// while they live), expects `kind`, then frees what is left, destroys the cache (slabs
/// the misuse put out of service included) and checks no page leaked.
fn with_debug_cache(
    mm: &mut Mm,
    kind: SlabErrorKind,
    misuse: impl FnOnce(&mut KmemCache, &mut BuddyPages<'_, Vmemmap>, u64, u64) -> Option<SlabError>,
) -> CheckResult {
    let free = mm.buddy.nr_free_pages();
    // The kernel's one slab backend; the caches here meet no other.
    let (_, mut pages) = mm.slab();
    // The cache stays in this frame while it has slabs: they point back to it.
    let mut cache = KmemCache::new("selftest-debug", 64, 8, true)
        .ok_or_else(|| detail(format_args!("no cache")))?;
    let take = |cache: &mut KmemCache, pages: &mut BuddyPages<'_, _>| {
        cache.alloc(pages).ok().flatten().ok_or_else(|| detail(format_args!("no object")))
    };
    let a = take(&mut cache, &mut pages)?;
    let b = take(&mut cache, &mut pages)?;
    ensure!(cache.destroy(&mut pages) == Err(2), "destroy with two live objects was not refused");
    let found = misuse(&mut cache, &mut pages, a, b);
    ensure!(found.map(|e| e.kind) == Some(kind), "expected {kind:?}, found {found:?}");
    ensure!(
        found.is_some_and(|e| e.cache == "selftest-debug"),
        "the report does not name the cache"
    );
    for object in [a, b] {
        // SAFETY: objects of this debug cache; what the misuse already freed or took out of
        // service is refused by its checks.
        let _ = unsafe { cache.free(&mut pages, object) };
    }
    let destroyed = cache.destroy(&mut pages);
    ensure!(destroyed.is_ok(), "the cache still counts {destroyed:?} live objects");
    all_pages_back(mm, free)
}

pub fn double_free(mm: &mut Mm, _: &E820Map) -> CheckResult {
    with_debug_cache(mm, SlabErrorKind::DoubleFree, |cache, pages, a, _| {
        // SAFETY: `a` is live; the second free is the misuse under test, which the debug
        // cache refuses.
        unsafe {
            cache.free(pages, a).ok()?;
            cache.free(pages, a).err()
        }
    })
}

pub fn bad_free(mm: &mut Mm, _: &E820Map) -> CheckResult {
    with_debug_cache(mm, SlabErrorKind::NotAtBoundary, |cache, pages, a, _| {
        // SAFETY: the misuse under test, which the debug cache refuses.
        unsafe { cache.free(pages, a + 8) }.err()
    })
}

pub fn red_zone(mm: &mut Mm, _: &E820Map) -> CheckResult {
    with_debug_cache(mm, SlabErrorKind::RightRedzone, |cache, pages, _, b| {
        // SAFETY: the first red-zone byte after the live object `b`: the misuse under test.
        unsafe { ((b + 64) as *mut u8).write(0) };
        // SAFETY: `b` is live; the debug cache refuses the free over its red zone.
        let found = unsafe { cache.free(pages, b) }.err();
        // Mend the red zone so the object can be freed afterwards.
        // SAFETY: as above.
        unsafe { ((b + 64) as *mut u8).write(guest::slab::RED_ACTIVE) };
        found
    })
}

pub fn kmalloc_red_zone(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let free = mm.buddy.nr_free_pages();
    // The kernel's one slab backend; the caches here meet no other.
    let (_, mut pages) = mm.slab();
    // Debug classes of their own, in this frame while they have slabs.
    let mut kmalloc = Kmalloc::new(true).ok_or_else(|| detail(format_args!("no caches")))?;
    let p = kmalloc
        .kmalloc(&mut pages, 18)
        .ok()
        .flatten()
        .ok_or_else(|| detail(format_args!("no object")))?;
    // SAFETY: byte 18 of a 32-byte object whose caller asked for 18: the misuse under test.
    unsafe { ((p + 18) as *mut u8).write(0) };
    // SAFETY: `p` is live; the debug class refuses the free over its kmalloc red zone.
    let found = unsafe { kmalloc.kfree(&mut pages, p) }.err();
    // SAFETY: mend the byte, then free for real.
    unsafe { ((p + 18) as *mut u8).write(guest::slab::RED_ACTIVE) };
    // SAFETY: `p` is live.
    let freed = unsafe { kmalloc.kfree(&mut pages, p) };
    for cache in &mut kmalloc.caches {
        cache.shrink(&mut pages);
    }
    ensure!(found.map(|e| e.kind) == Some(SlabErrorKind::KmallocRedzone), "found {found:?}");
    ensure!(freed.is_ok(), "the mended object was refused: {freed:?}");
    all_pages_back(mm, free)
}

pub fn write_after_free(mm: &mut Mm, _: &E820Map) -> CheckResult {
    // The damaged slab is taken out of service until the cache is destroyed.
    with_debug_cache(mm, SlabErrorKind::PoisonOverwritten, |cache, pages, a, _| {
        // SAFETY: `a` is live.
        unsafe { cache.free(pages, a) }.ok()?;
        // SAFETY: a byte of the freed object `a`: the misuse under test.
        unsafe { ((a + 16) as *mut u8).write(1) };
        let found = cache.alloc(pages).err();
        // The damaged slab is out of service; the cache goes on with a sound one.
        let next = cache.alloc(pages).ok().flatten()?;
        // SAFETY: `next` is live.
        unsafe { cache.free(pages, next) }.ok()?;
        found
    })
}
