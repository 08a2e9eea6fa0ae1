// Test arithmetic on small sizes.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::buddy::SliceMemmap;
use proptest::prelude::*;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const BASE_PFN: u64 = 1 << 20;
const PAGES: u64 = 4096;

/// Slab pages from the real buddy allocator over 16 MiB of host memory.
type Backend = BuddyPages<'static, SliceMemmap<'static>>;

fn backend() -> Box<Backend> {
    let memory: &'static mut [u8] =
        Box::leak(vec![0u8; (PAGES as usize + 1) * 4096].into_boxed_slice());
    let arena = (memory.as_ptr() as u64).next_multiple_of(4096);
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); PAGES as usize].into_boxed_slice());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    Box::new(BuddyPages {
        buddy: Box::leak(Box::new(buddy)),
        base: arena.wrapping_sub(BASE_PFN << 12),
    })
}

fn cache(size: u64, debug: bool) -> Box<KmemCache> {
    Box::new(KmemCache::new("test", size, 8, debug).expect("valid size"))
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
    assert_eq!(debug.stride(), 64 + RED_ZONE);
    assert!(KmemCache::new("k", 0, 8, false).is_none());
    assert!(KmemCache::new("k", 1 << 20, 8, false).is_none());
}

#[test]
fn objects_round_trip_and_shrink_gives_every_page_back() {
    let mut pages = backend();
    let free = pages.buddy.nr_free_pages();
    let mut c = cache(96, false);
    let objects: Vec<u64> =
        (0..500).map(|_| c.alloc(&mut *pages).expect("no error").expect("memory")).collect();
    let (in_use, _, slabs) = c.counts();
    assert_eq!(in_use, 500);
    assert!(slabs >= 500 / c.geometry().1);
    for &object in &objects {
        c.free(&mut *pages, object).expect("valid free");
    }
    assert_eq!(c.counts().0, 0);
    assert_eq!(c.destroy(&mut *pages), Ok(()));
    assert_eq!(pages.buddy.nr_free_pages(), free, "slabs went back to the buddy allocator");
}

#[test]
fn kmalloc_power_of_two_classes_are_naturally_aligned_even_with_red_zones() {
    let mut pages = backend();
    for debug in [false, true] {
        let mut k = Box::new(Kmalloc::new(debug).expect("caches"));
        for size in [16u64, 64, 256, 1024, 4096] {
            for _ in 0..5 {
                let addr = k.kmalloc(&mut *pages, size).expect("ok").expect("memory");
                assert_eq!(addr % size, 0, "{size}-byte object at {addr:#x} (debug {debug})");
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
    let mut c = Box::new(KmemCache::new("ctor", 32, 8, true).expect("valid").with_ctor(construct));
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    // SAFETY: a live 32-byte object; its first word was the free pointer.
    let bytes = unsafe { (a as *const [u8; 32]).read() };
    assert!(bytes[8..].iter().all(|&b| b == 0xab), "{bytes:x?}");
    c.free(&mut *pages, a).expect("valid free");
    // No poison: the object keeps its constructed state, and reallocating it is fine.
    assert_eq!(c.alloc(&mut *pages).expect("no false write-after-free"), Some(a));
}

#[test]
fn destroy_is_refused_while_objects_live() {
    let mut pages = backend();
    let mut c = cache(32, false);
    let object = c.alloc(&mut *pages).expect("ok").expect("memory");
    assert_eq!(c.destroy(&mut *pages), Err(1));
    c.free(&mut *pages, object).expect("valid free");
    assert_eq!(c.destroy(&mut *pages), Ok(()));
}

fn kind(result: Result<(), SlabError>) -> Option<SlabErrorKind> {
    result.err().map(|e| e.kind)
}

#[test]
fn debug_mode_catches_each_kind_of_misuse() {
    let mut pages = backend();
    let mut c = cache(64, true);
    let mut other = cache(64, true);
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    let b = c.alloc(&mut *pages).expect("ok").expect("memory");
    let foreign = other.alloc(&mut *pages).expect("ok").expect("memory");

    assert_eq!(kind(c.free(&mut *pages, foreign)), Some(SlabErrorKind::NotAnObject));
    assert_eq!(kind(c.free(&mut *pages, a + 8)), Some(SlabErrorKind::NotAtBoundary));

    // SAFETY: one byte past the payload of a live object of ours: its red zone.
    unsafe { ((b + 64) as *mut u8).write(0) };
    let err = c.free(&mut *pages, b).expect_err("red zone");
    assert_eq!((err.kind, err.cache, err.object), (SlabErrorKind::RedZoneOverwritten, "test", b));

    c.free(&mut *pages, a).expect("valid free");
    assert_eq!(kind(c.free(&mut *pages, a)), Some(SlabErrorKind::DoubleFree));

    // A write after free, into the poison: found when the object is next handed out.
    // SAFETY: a freed object of ours; the write is the misuse under test.
    unsafe { ((a + 16) as *mut u8).write(1) };
    let err = c.alloc(&mut *pages).expect_err("write after free");
    assert_eq!((err.kind, err.object), (SlabErrorKind::WriteAfterFree, a));
    assert_eq!(
        std::format!("{err}"),
        std::format!("test: write after free (poison overwritten), object {a:#x}")
    );
}

#[test]
fn an_overwritten_free_pointer_is_not_followed() {
    let mut pages = backend();
    let mut c = cache(128, true);
    let a = c.alloc(&mut *pages).expect("ok").expect("memory");
    c.free(&mut *pages, a).expect("valid free");
    // SAFETY: a freed object's first word (its free pointer), overwritten on purpose.
    unsafe { (a as *mut u64).write(0xdead_beef) };
    assert_eq!(c.alloc(&mut *pages).map_err(|e| e.kind), Err(SlabErrorKind::WriteAfterFree));
    // The allocator goes on with a fresh slab.
    assert!(c.alloc(&mut *pages).expect("ok").is_some());
}

#[test]
fn kmalloc_serves_every_class_zero_and_large_sizes() {
    let mut pages = backend();
    let free = pages.buddy.nr_free_pages();
    let mut k = Box::new(Kmalloc::new(true).expect("caches"));
    assert_eq!(k.kmalloc(&mut *pages, 0), Ok(Some(ZERO_SIZE_PTR)));
    assert_eq!(k.kfree(&mut *pages, ZERO_SIZE_PTR), Ok(()));
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
    let grown = k.krealloc(&mut *pages, live[3], 5000).expect("ok").expect("memory");
    // SAFETY: the grown allocation holds the old contents.
    assert_eq!(unsafe { (grown as *const [u8; 16]).read() }, [7; 16]);
    live[3] = grown;
    for addr in live {
        k.kfree(&mut *pages, addr).expect("valid free");
    }
    for cache in &mut k.caches {
        cache.shrink(&mut *pages);
    }
    pages.buddy.drain_pcp();
    assert_eq!(pages.buddy.nr_free_pages(), free, "every page is back");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_kmalloc_and_kfree_keep_objects_apart_intact_and_in_their_slab(
        ops in proptest::collection::vec((any::<bool>(), 1u64..3000, any::<usize>(), any::<bool>()), 1..300),
    ) {
        let mut pages = backend();
        let free = pages.buddy.nr_free_pages();
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
                k.kfree(&mut *pages, addr).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
                live.remove(&addr);
            }
            let counted: u64 = k.caches.iter().map(|c| c.counts().0).sum();
            let small = live.values().filter(|(size, _)| *size <= KMALLOC_SIZES[12]).count() as u64;
            prop_assert_eq!(counted, small, "cache counters match the live small objects");
        }
        for &addr in live.keys() {
            k.kfree(&mut *pages, addr).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        }
        for cache in &mut k.caches {
            cache.shrink(&mut *pages);
        }
        pages.buddy.drain_pcp();
        prop_assert_eq!(pages.buddy.nr_free_pages(), free, "the buddy allocator is back to its state before");
    }
}
