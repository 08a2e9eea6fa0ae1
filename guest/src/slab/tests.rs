// Test arithmetic on small sizes.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::buddy::{Buddy, SliceMemmap};
use proptest::prelude::*;
use shared::page::Page;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const BASE_PFN: u64 = 1 << 20;
const PAGES: u64 = 4096;

/// Slab pages from the real buddy allocator over 16 MiB of host memory.
type Backend = BuddyPages<'static, SliceMemmap<'static>>;

fn backend() -> Box<Backend> {
    // Aligned like the kernel's direct map, whose base is 1 GiB aligned, so that a block
    // aligned to its size in frames is aligned to its size in addresses too.
    let memory: &'static mut [u8] =
        Box::leak(vec![0u8; (PAGES as usize + 512) * 4096].into_boxed_slice());
    let arena = (memory.as_mut_ptr() as u64).next_multiple_of(2 << 20);
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); PAGES as usize].into_boxed_slice());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    // SAFETY: the buddy allocator's frames are the leaked arena's pages, at this base.
    Box::new(unsafe {
        BuddyPages::new(Box::leak(Box::new(buddy)), arena.wrapping_sub(BASE_PFN << 12))
    })
}

fn cache(size: u64, debug: bool) -> Box<KmemCache> {
    Box::new(KmemCache::new("test", size, 8, debug).expect("valid size"))
}

/// Frees `object` to `cache`: a live object of it, or, in debug mode, a misuse the test
/// wants refused.
fn free(cache: &mut KmemCache, pages: &mut Backend, object: u64) -> Result<(), SlabError> {
    // SAFETY: the tests pass live objects of `cache`, or misuse a debug cache on purpose,
    // which its checks refuse before touching anything.
    unsafe { cache.free(pages, object) }
}

/// Frees `addr` with `kfree`, as `free` does.
fn kfree(k: &mut Kmalloc, pages: &mut Backend, addr: u64) -> Result<(), SlabError> {
    // SAFETY: as in `free`.
    unsafe { k.kfree(pages, addr) }
}

fn kind(result: Result<(), SlabError>) -> Option<SlabErrorKind> {
    result.err().map(|e| e.kind)
}

/// What `/proc/slabinfo` shows for the kmalloc classes on a one-CPU Linux (objperslab,
/// pagesperslab): `calculate_order` with 8 objects at least, and at most 1/16 wasted.
#[test]
fn kmalloc_slab_orders_are_linuxs() {
    let expected: [(u64, u64, u32); 13] = [
        (8, 512, 0),
        (16, 256, 0),
        (32, 128, 0),
        (64, 64, 0),
        (96, 42, 0),
        (128, 32, 0),
        (192, 21, 0),
        (256, 16, 0),
        (512, 8, 0),
        (1024, 8, 1),
        (2048, 8, 2),
        (4096, 8, 3),
        (8192, 4, 3),
    ];
    for (size, objects, order) in expected {
        let cache = KmemCache::new("k", size, 1 << size.trailing_zeros(), false).expect("valid");
        assert_eq!(cache.geometry(), (order, objects), "kmalloc-{size}");
    }
}

#[test]
fn geometry_bounds_the_waste() {
    for size in KMALLOC_SIZES {
        let cache = KmemCache::new("k", size, 8, false).expect("valid");
        let (order, objects) = cache.geometry();
        assert!(objects >= 1 && order <= MAX_SLAB_ORDER);
        assert!(
            cache.waste_per_slab() * 8 <= 4096 << order,
            "{size}: {} of {} wasted",
            cache.waste_per_slab(),
            4096 << order
        );
    }
    let debug = KmemCache::new("k", 64, 8, true).expect("valid");
    assert_eq!(debug.stride(), 64 + 8 + 8, "payload, red zone, free pointer");
    assert_eq!(debug.raw().free_offset, 72);
    assert!(KmemCache::new("k", 0, 8, false).is_none());
    assert!(KmemCache::new("k", 1 << 20, 8, false).is_none());
}

#[test]
fn objects_round_trip_and_shrink_gives_every_page_back() {
    let mut pages = backend();
    let free_pages = pages.buddy().nr_free_pages();
    let mut c = cache(96, false);
    let objects: Vec<u64> =
        (0..500).map(|_| c.alloc(&mut *pages).expect("no error").expect("memory")).collect();
    let (in_use, _, slabs) = c.counts();
    assert_eq!(in_use, 500);
    assert!(slabs >= 500 / c.geometry().1);
    for &object in &objects {
        free(&mut c, &mut pages, object).expect("valid free");
    }
    assert_eq!(c.counts().0, 0);
    assert_eq!(c.destroy(&mut *pages), Ok(()));
    assert_eq!(pages.buddy().nr_free_pages(), free_pages, "slabs went back to the buddy allocator");
}

#[test]
fn kmalloc_objects_are_aligned_to_the_largest_power_of_two_dividing_their_class() {
    let mut pages = backend();
    for debug in [false, true] {
        let mut k = Box::new(Kmalloc::new(debug).expect("caches"));
        for size in KMALLOC_SIZES {
            let align = 1 << size.trailing_zeros();
            for _ in 0..5 {
                let addr = k.kmalloc(&mut *pages, size).expect("ok").expect("memory");
                assert_eq!(addr % align, 0, "kmalloc-{size} object at {addr:#x} (debug {debug})");
            }
        }
    }
}

#[test]
fn constructors_run_on_every_object_and_disable_poisoning() {
    fn construct(object: u64) {
        // SAFETY: the slab allocator passes an object of at least 32 bytes.
        unsafe { (object as *mut [u8; 32]).write([0xab; 32]) };
    }
    let mut pages = backend();
    for debug in [false, true] {
        let mut c = Box::new(KmemCache::with_ctor("ctor", 32, 8, debug, construct).expect("valid"));
        let a = c.alloc(&mut *pages).expect("ok").expect("memory");
        let read = |a: u64| -> [u8; 32] {
            // SAFETY: a live 32-byte object.
            unsafe { (a as *const [u8; 32]).read() }
        };
        assert_eq!(read(a), [0xab; 32], "the free pointer lies outside a constructed object");
        free(&mut c, &mut pages, a).expect("valid free");
        // No poison: the object keeps its constructed state, and reallocating it is fine.
        assert_eq!(c.alloc(&mut *pages).expect("no false write-after-free"), Some(a));
        assert_eq!(read(a), [0xab; 32]);
    }
}

#[test]
fn destroy_is_refused_while_objects_live() {
    let mut pages = backend();
    let mut c = cache(32, false);
    let object = c.alloc(&mut *pages).expect("ok").expect("memory");
    assert_eq!(c.destroy(&mut *pages), Err(1));
    free(&mut c, &mut pages, object).expect("valid free");
    assert_eq!(c.destroy(&mut *pages), Ok(()));
}

#[test]
fn debug_mode_catches_each_kind_of_misuse() {
    let mut pages = backend();
    let mut c = cache(64, true);
    let mut other = cache(64, true);
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    let b = c.alloc(&mut *pages).expect("ok").expect("memory");
    let foreign = other.alloc(&mut *pages).expect("ok").expect("memory");

    assert_eq!(kind(free(&mut c, &mut pages, foreign)), Some(SlabErrorKind::NotAnObject));
    assert_eq!(kind(free(&mut c, &mut pages, a + 8)), Some(SlabErrorKind::NotAtBoundary));

    // SAFETY: one byte past the payload of a live object of ours: its red zone.
    unsafe { ((b + 64) as *mut u8).write(0) };
    let err = free(&mut c, &mut pages, b).expect_err("red zone");
    assert_eq!((err.kind, err.cache, err.object), (SlabErrorKind::RightRedzone, "test", b));
    assert_eq!(
        std::format!("{err}"),
        std::format!("test: Right Redzone overwritten, object {b:#x}")
    );

    free(&mut c, &mut pages, a).expect("valid free");
    assert_eq!(kind(free(&mut c, &mut pages, a)), Some(SlabErrorKind::DoubleFree));

    // A write after free, into the poison (even its first word: the free pointer lies
    // outside the payload): found when the object is next handed out.
    // SAFETY: a freed object of ours; the write is the misuse under test.
    unsafe { (a as *mut u8).write(1) };
    let err = c.alloc(&mut *pages).expect_err("write after free");
    assert_eq!((err.kind, err.object), (SlabErrorKind::PoisonOverwritten, a));
    assert_eq!(
        std::format!("{err}"),
        std::format!("test: Poison overwritten (a write after free), object {a:#x}")
    );
}

#[test]
fn a_write_into_the_red_zone_of_a_free_object_is_named_as_linux_names_it() {
    let mut pages = backend();
    let mut c = cache(64, true);
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    free(&mut c, &mut pages, a).expect("valid free");
    // SAFETY: the red zone of a freed object of ours; the write is the misuse under test.
    unsafe { ((a + 64) as *mut u8).write(0) };
    assert_eq!(c.alloc(&mut *pages).map_err(|e| e.kind), Err(SlabErrorKind::RightRedzone));
}

#[test]
fn an_overwritten_free_pointer_is_not_followed() {
    let mut pages = backend();
    let mut c = cache(128, true);
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    free(&mut c, &mut pages, a).expect("valid free");
    // SAFETY: a freed object's free pointer (after its payload and red zone), overwritten
    // on purpose.
    unsafe { ((a + u64::from(c.raw().free_offset)) as *mut u64).write(0xdead_beef) };
    assert_eq!(c.alloc(&mut *pages).map_err(|e| e.kind), Err(SlabErrorKind::FreePointerCorrupt));
    // The allocator goes on with a fresh slab.
    assert!(c.alloc(&mut *pages).expect("ok").is_some());
}

/// After a debug check finds a damaged slab, the cache keeps allocating from sound slabs
/// (Linux's `alloc_debug_processing` marks the slab full), and its counters stay true.
#[test]
fn a_cache_keeps_allocating_after_it_finds_a_write_after_free() {
    for damage in ["poison", "zeroed free pointer", "red zone"] {
        let mut pages = backend();
        let mut c = cache(64, true);
        let a = c.alloc(&mut *pages).expect("ok").expect("memory");
        free(&mut c, &mut pages, a).expect("valid free");
        let free_pointer = a + u64::from(c.raw().free_offset);
        // SAFETY: bytes of the freed object `a`: the misuse under test.
        unsafe {
            match damage {
                "poison" => ((a + 5) as *mut u8).write(0),
                "zeroed free pointer" => (free_pointer as *mut u64).write(0),
                _ => ((a + 70) as *mut u8).write(0),
            }
        }
        let first = c.alloc(&mut *pages);
        let mut live = Vec::new();
        for i in 0..10_000 {
            let object = c
                .alloc(&mut *pages)
                .expect("no error")
                .unwrap_or_else(|| panic!("{damage}: allocation {i} after the damage failed"));
            live.push(object);
        }
        match damage {
            // A zeroed link ends the freelist early: the rest of the slab is never reached,
            // the object it held is handed out sound.
            "zeroed free pointer" => assert_eq!(first, Ok(Some(a))),
            _ => assert!(first.is_err() && !live.contains(&a), "{damage}: {first:?}"),
        }
        let written_off = c.raw().written_off;
        assert_eq!(c.counts().0, live.len() as u64 + u64::from(first.is_ok()) + written_off);
        assert_eq!(c.destroy(&mut *pages), Err(c.counts().0 - written_off), "{damage}");
        for object in live.into_iter().chain(first.ok().flatten()) {
            free(&mut c, &mut pages, object).expect("valid free");
        }
        assert_eq!(c.counts().0, written_off, "{damage}: only the written-off objects count");
        let free_pages = pages.buddy().nr_free_pages();
        assert_eq!(c.destroy(&mut *pages), Ok(()), "{damage}: nothing live is left");
        assert_eq!(c.counts(), (0, 0, 0), "{damage}: every slab went back");
        assert!(pages.buddy().nr_free_pages() > free_pages);
    }
}

#[test]
fn kmalloc_red_zone_starts_at_the_requested_size() {
    let mut pages = backend();
    let mut k = Box::new(Kmalloc::new(true).expect("caches"));
    let p = k.kmalloc(&mut *pages, 18).expect("ok").expect("memory");
    assert_eq!(k.ksize(&mut *pages, p), 32);
    // SAFETY: byte 18 of a 32-byte object whose caller asked for 18: off by one.
    unsafe { ((p + 18) as *mut u8).write(0) };
    let err = kfree(&mut k, &mut pages, p).expect_err("overflow past the requested size");
    assert_eq!(err.kind, SlabErrorKind::KmallocRedzone);
    assert_eq!(
        std::format!("{err}"),
        std::format!("kmalloc-32: kmalloc Redzone overwritten, object {p:#x}")
    );
    // SAFETY: mend the byte; the free then goes through.
    unsafe { ((p + 18) as *mut u8).write(RED_ACTIVE) };
    kfree(&mut k, &mut pages, p).expect("valid free");
}

#[test]
fn krealloc_moves_the_red_zone_and_clears_what_it_grows_into() {
    let mut pages = backend();
    let mut k = Box::new(Kmalloc::new(true).expect("caches"));
    let p = k.kmalloc(&mut *pages, 48).expect("ok").expect("memory");
    let bytes = |p: u64| -> [u8; 64] {
        // SAFETY: the 64 bytes of a live kmalloc-64 object.
        unsafe { (p as *const [u8; 64]).read() }
    };
    // SAFETY: the 48 bytes asked for.
    unsafe { (p as *mut u8).write_bytes(0xff, 48) };
    // SAFETY: `p` is live.
    let shrunk = unsafe { k.krealloc(&mut *pages, p, 40) }.expect("ok");
    assert_eq!(shrunk, Some(p), "a smaller size keeps the object");
    assert!(bytes(p)[40..].iter().all(|&b| b == RED_ACTIVE), "{:x?}", bytes(p));
    // SAFETY: `p` is live.
    let grown = unsafe { k.krealloc(&mut *pages, p, 56) }.expect("ok");
    assert_eq!(grown, Some(p));
    assert!(bytes(p)[..40].iter().all(|&b| b == 0xff));
    assert!(bytes(p)[40..56].iter().all(|&b| b == 0), "{:x?}", bytes(p));
    assert!(bytes(p)[56..].iter().all(|&b| b == RED_ACTIVE));
    // SAFETY: byte 56 is past the new requested size: an overflow the free must find.
    unsafe { ((p + 56) as *mut u8).write(1) };
    assert_eq!(kind(kfree(&mut k, &mut pages, p)), Some(SlabErrorKind::KmallocRedzone));
}

/// Linux's `krealloc` with `__GFP_ZERO` (slub_kunit's `test_krealloc_redzone_zeroing`):
/// what a larger size grows into reads as zero when the allocation moves too, in either
/// mode; without debug, a shrink in place clears the tail, so growing back reads zeros.
#[test]
fn krealloc_clears_what_it_grows_into_when_it_moves() {
    let mut pages = backend();
    for debug in [false, true] {
        let mut k = Box::new(Kmalloc::new(debug).expect("caches"));
        // A kmalloc-128 object with stale bytes, next in line to be handed out.
        let stale = k.kmalloc(&mut *pages, 128).expect("ok").expect("memory");
        // SAFETY: the 128 bytes of a live allocation.
        unsafe { (stale as *mut u8).write_bytes(0xee, 128) };
        kfree(&mut k, &mut pages, stale).expect("valid free");

        let p = k.kmalloc(&mut *pages, 48).expect("ok").expect("memory");
        // What the caller may use: the requested size in debug mode, the class without.
        let old = if debug { 48 } else { 64 };
        // SAFETY: `old` bytes of a live allocation.
        unsafe { (p as *mut u8).write_bytes(0xff, old) };
        // SAFETY: `p` is live.
        let q = unsafe { k.krealloc(&mut *pages, p, 112) }.expect("ok").expect("memory");
        assert_eq!(q, stale, "the stale object was reused");
        // SAFETY: the 112 bytes asked for.
        let bytes = unsafe { core::slice::from_raw_parts(q as *const u8, 112) };
        assert!(bytes[..old].iter().all(|&b| b == 0xff), "debug {debug}: {bytes:x?}");
        assert!(bytes[old..].iter().all(|&b| b == 0), "debug {debug}: {bytes:x?}");
        kfree(&mut k, &mut pages, q).expect("valid free");

        let p = k.kmalloc(&mut *pages, 64).expect("ok").expect("memory");
        // SAFETY: the 64 bytes of a live allocation.
        unsafe { (p as *mut u8).write_bytes(0xff, 64) };
        // SAFETY: `p` is live, and stays where it is.
        unsafe {
            assert_eq!(k.krealloc(&mut *pages, p, 40), Ok(Some(p)));
            assert_eq!(k.krealloc(&mut *pages, p, 64), Ok(Some(p)));
        }
        // SAFETY: the 64 bytes asked for.
        let bytes = unsafe { core::slice::from_raw_parts(p as *const u8, 64) };
        assert!(bytes[..40].iter().all(|&b| b == 0xff), "debug {debug}: {bytes:x?}");
        assert!(bytes[40..].iter().all(|&b| b == 0), "debug {debug}: {bytes:x?}");
        kfree(&mut k, &mut pages, p).expect("valid free");
    }
}

/// `krealloc` makes `kfree`'s checks before it touches the old allocation: in debug mode
/// a freed object (KASAN's `krealloc_uaf`), a pointer inside an object or an overwritten
/// red zone is refused, and in either mode a pointer that is no allocation; nothing
/// changes, and no new allocation is left behind.
#[test]
fn krealloc_refuses_what_kfree_refuses_and_changes_nothing() {
    let mut pages = backend();
    let mut k = Box::new(Kmalloc::new(true).expect("caches"));
    let live = |k: &Kmalloc| -> Vec<u64> { k.caches.iter().map(|c| c.counts().0).collect() };
    let krealloc = |k: &mut Kmalloc, pages: &mut Backend, addr: u64, size: u64| {
        // SAFETY: misuse of a debug kmalloc, refused before anything changes.
        unsafe { k.krealloc(pages, addr, size) }.map_err(|e| e.kind)
    };

    let freed = k.kmalloc(&mut *pages, 201).expect("ok").expect("memory");
    kfree(&mut k, &mut pages, freed).expect("valid free");
    let before = live(&k);
    for size in [235, 300] {
        assert_eq!(krealloc(&mut k, &mut pages, freed, size), Err(SlabErrorKind::DoubleFree));
        assert_eq!(live(&k), before, "{size}: nothing allocated");
    }
    // The free object's poison is intact.
    assert_eq!(k.kmalloc(&mut *pages, 201), Ok(Some(freed)));

    let q = k.kmalloc(&mut *pages, 100).expect("ok").expect("memory");
    assert_eq!(krealloc(&mut k, &mut pages, q + 8, 50), Err(SlabErrorKind::NotAtBoundary));
    // SAFETY: byte 100 of a 100-byte allocation in kmalloc-128: an overflow.
    unsafe { ((q + 100) as *mut u8).write(0) };
    let before = live(&k);
    assert_eq!(krealloc(&mut k, &mut pages, q, 300), Err(SlabErrorKind::KmallocRedzone));
    assert_eq!(live(&k), before, "the new object went back");
    // SAFETY: mend the byte; the object is still the caller's.
    unsafe { ((q + 100) as *mut u8).write(RED_ACTIVE) };
    kfree(&mut k, &mut pages, q).expect("valid free");

    let large = k.kmalloc(&mut *pages, 10_000).expect("ok").expect("memory");
    assert_eq!(krealloc(&mut k, &mut pages, large + 8, 100), Err(SlabErrorKind::NotAnObject));
    kfree(&mut k, &mut pages, large).expect("valid free");
    kfree(&mut k, &mut pages, freed).expect("valid free");
}

/// In debug mode `ksize` of a free object is 0, as Linux's when KASAN finds the object
/// invalid (KASAN's `ksize_uaf`); without debug nothing is checked.
#[test]
fn ksize_of_a_free_object_is_zero_in_debug_mode() {
    let mut pages = backend();
    for debug in [false, true] {
        let mut k = Box::new(Kmalloc::new(debug).expect("caches"));
        let p = k.kmalloc(&mut *pages, 120).expect("ok").expect("memory");
        assert_eq!(k.ksize(&mut *pages, p), 128);
        kfree(&mut k, &mut pages, p).expect("valid free");
        assert_eq!(k.ksize(&mut *pages, p), if debug { 0 } else { 128 });
    }
}

#[test]
fn kmalloc_serves_every_class_zero_and_large_sizes() {
    let mut pages = backend();
    let free_pages = pages.buddy().nr_free_pages();
    let mut k = Box::new(Kmalloc::new(true).expect("caches"));
    assert_eq!(k.kmalloc(&mut *pages, 0), Ok(Some(ZERO_SIZE_PTR)));
    assert_eq!(kfree(&mut k, &mut pages, ZERO_SIZE_PTR), Ok(()));
    assert_eq!(k.kmalloc(&mut *pages, KMALLOC_MAX_SIZE + 1), Ok(None));
    let mut live = Vec::new();
    for size in [1, 8, 9, 96, 97, 192, 1000, 4096, 8192, 8193, 100_000] {
        let addr = k.kmalloc(&mut *pages, size).expect("ok").expect("memory");
        assert!(k.ksize(&mut *pages, addr) >= size, "ksize of {size}");
        live.push(addr);
    }
    assert_eq!(k.ksize(&mut *pages, live[0]), 8);
    assert_eq!(k.ksize(&mut *pages, live[4]), 128);
    // SAFETY: the first 16 bytes of a live 96-byte allocation.
    unsafe { (live[3] as *mut [u8; 16]).write([7; 16]) };
    // SAFETY: a live allocation.
    let grown = unsafe { k.krealloc(&mut *pages, live[3], 5000) }.expect("ok").expect("memory");
    // SAFETY: the grown allocation holds the old contents.
    assert_eq!(unsafe { (grown as *const [u8; 16]).read() }, [7; 16]);
    live[3] = grown;
    // Not a kmalloc allocation: refused in either mode, and nothing changes.
    let inside = live[10] + 4096;
    assert_eq!(kind(kfree(&mut k, &mut pages, inside)), Some(SlabErrorKind::NotAnObject));
    for addr in live {
        kfree(&mut k, &mut pages, addr).expect("valid free");
    }
    for cache in &mut k.caches {
        cache.shrink(&mut *pages);
    }
    pages.drain_pcp();
    assert_eq!(pages.buddy().nr_free_pages(), free_pages, "every page is back");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_kmalloc_and_kfree_keep_objects_apart_intact_and_in_their_slab(
        ops in proptest::collection::vec((any::<bool>(), 1u64..3000, any::<usize>(), any::<bool>()), 1..300),
    ) {
        let mut pages = backend();
        let free_pages = pages.buddy().nr_free_pages();
        let mut k = Box::new(Kmalloc::new(true).expect("caches"));
        // Live allocations: address -> (size, fill byte).
        let mut live: BTreeMap<u64, (u64, u8)> = BTreeMap::new();
        for (allocate, size, pick, large) in ops {
            if allocate || live.is_empty() {
                let size = if large { size * 16 } else { size };
                let addr = k.kmalloc(&mut *pages, size).map_err(|e| TestCaseError::fail(std::format!("{e}")))?.expect("memory");
                // Disjoint from every live allocation.
                if let Some((&prev, &(prev_size, _))) = live.range(..=addr).next_back() {
                    prop_assert!(prev + prev_size <= addr, "{:#x} overlaps {:#x}", addr, prev);
                }
                if let Some((&next, _)) = live.range(addr + 1..).next() {
                    prop_assert!(addr + size <= next, "{:#x}+{} overlaps {:#x}", addr, size, next);
                }
                if size <= KMALLOC_SIZES[12] {
                    // Inside one slab of a cache whose objects hold `size` bytes.
                    let pfn = pages.pfn(addr);
                    let cache = &k.caches[k.cache_of(&mut *pages, pfn).expect("a slab page")];
                    let mask = !((1u64 << cache.raw().order) - 1);
                    prop_assert!(cache.object_size() >= size, "{} bytes in {}", size, cache.name());
                    prop_assert_eq!(pages.pfn(addr + size - 1) & mask, pfn & mask, "{:#x}+{} leaves its slab", addr, size);
                }
                let fill = (addr >> 4) as u8 | 1;
                // SAFETY: a fresh allocation of `size` bytes.
                unsafe { (addr as *mut u8).write_bytes(fill, size as usize) };
                live.insert(addr, (size, fill));
            } else {
                let (&addr, &(size, fill)) = live.iter().nth(pick % live.len()).expect("non-empty");
                // SAFETY: a live allocation of `size` bytes.
                let intact = unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) }.iter().all(|&b| b == fill);
                prop_assert!(intact, "contents of {:#x} changed", addr);
                kfree(&mut k, &mut pages, addr).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                live.remove(&addr);
            }
            let counted: u64 = k.caches.iter().map(|c| c.counts().0).sum();
            let small = live.values().filter(|(size, _)| *size <= KMALLOC_SIZES[12]).count() as u64;
            prop_assert_eq!(counted, small, "cache counters match the live small objects");
        }
        for &addr in live.keys() {
            kfree(&mut k, &mut pages, addr).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        }
        for cache in &mut k.caches {
            cache.shrink(&mut *pages);
        }
        pages.drain_pcp();
        prop_assert_eq!(pages.buddy().nr_free_pages(), free_pages, "the buddy allocator is back to its state before");
    }
}
