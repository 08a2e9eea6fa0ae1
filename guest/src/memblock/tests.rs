//! Host tests of memblock: region sets, allocation, growth and a page-set model.

use super::*;
use proptest::prelude::*;
use std::boxed::Box;
use std::collections::BTreeSet;
use std::vec;
use std::vec::Vec;

fn regions(set: &RegionSet) -> Vec<(u64, u64)> {
    set.regions().iter().map(|r| (r.base, r.end())).collect()
}

#[test]
fn add_merges_overlapping_and_adjacent_regions() {
    let mut set = RegionSet::new();
    set.add(0x3000, 0x1000).expect("room");
    set.add(0x1000, 0x1000).expect("room");
    assert_eq!(regions(&set), [(0x1000, 0x2000), (0x3000, 0x4000)]);
    set.add(0x2000, 0x1000).expect("room");
    assert_eq!(regions(&set), [(0x1000, 0x4000)]);
    set.add(0x0, 0x8000).expect("room");
    assert_eq!(regions(&set), [(0, 0x8000)]);
}

#[test]
fn remove_splits_and_trims() {
    let mut set = RegionSet::new();
    set.add(0, 0x10000).expect("room");
    set.remove(0x4000, 0x1000).expect("room");
    assert_eq!(regions(&set), [(0, 0x4000), (0x5000, 0x10000)]);
    set.remove(0x3000, 0x3000).expect("room");
    assert_eq!(regions(&set), [(0, 0x3000), (0x6000, 0x10000)]);
    set.remove(0, u64::MAX).expect("room");
    assert!(set.regions().is_empty());
}

#[test]
fn a_full_set_refuses_new_regions_but_accepts_merges() {
    let mut set = RegionSet::new();
    for i in 0..MAX_REGIONS as u64 {
        set.add(i * 0x2000, 0x1000).expect("room");
    }
    assert_eq!(set.add(0x10_0000_0000, 0x1000), Err(MemblockError::Full));
    assert_eq!(set.remove(0x400, 0x100), Err(MemblockError::Full), "a split needs a slot");
    set.add(0x1000, 0x1000).expect("merges two regions into one");
    assert_eq!(set.regions().len(), MAX_REGIONS - 1);
}

#[test]
fn allocation_is_top_down_below_the_limit_by_default() {
    let mut mb = Memblock::new();
    mb.memory.add(0, 0x10_0000).expect("room");
    mb.reserved.add(0xf_0000, 0x1_0000).expect("room");
    assert_eq!(mb.alloc(0x1000, 0x1000, u64::MAX), Some(0xe_f000));
    assert_eq!(mb.alloc(0x1000, 0x1_0000, 0x8_0000), Some(0x7_0000));
    mb.direction = Direction::BottomUp;
    assert_eq!(mb.alloc(0x100, 0x1000, u64::MAX), Some(0));
    assert_eq!(mb.alloc(0x100, 0x1000, u64::MAX), Some(0x1000));
    assert_eq!(mb.alloc(0x20_0000, 0x1000, u64::MAX), None);
    assert_eq!(mb.alloc(0x1000, 3, u64::MAX), None, "alignment must be a power of two");
}

#[test]
fn alloc_range_stays_inside_its_bounds_in_either_direction() {
    let mut mb = Memblock::new();
    mb.memory.add(0x1_0000, 0x1_0000).expect("room");
    // Top-down: the highest aligned fit below max_addr, not below min_addr.
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_4000, 0x1_8000), Some(0x1_7000));
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_4000, 0x1_7800), Some(0x1_6000));
    // A range below memory, or one too small once aligned, fails: no fallback.
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0, 0x1_0000), None);
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_4800, 0x1_5800), None);
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_8000, 0x1_4000), None, "min above max");
    // Bottom-up: the lowest aligned fit at or above min_addr.
    mb.direction = Direction::BottomUp;
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_4001, u64::MAX), Some(0x1_5000));
    assert_eq!(mb.alloc_range(0x800, 0x800, 0, 0x1_1000), Some(0x1_0000));
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_e000, u64::MAX), Some(0x1_e000));
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_e000, u64::MAX), Some(0x1_f000));
    assert_eq!(mb.alloc_range(0x1000, 0x1000, 0x1_e000, u64::MAX), None, "no room above");
    let reserved: Vec<_> = regions(&mb.reserved);
    assert_eq!(reserved, [(0x1_0000, 0x1_0800), (0x1_5000, 0x1_8000), (0x1_e000, 0x2_0000)]);
}

#[test]
fn free_ranges_are_memory_minus_reserved() {
    let mut mb = Memblock::new();
    mb.memory.add(0, 0x9f000).expect("room");
    mb.memory.add(0x10_0000, 0x100_0000).expect("room");
    mb.reserved.add(0, 0x1000).expect("room");
    mb.reserved.add(0x9e000, 0x70000).expect("room");
    let free: Vec<_> = mb.free_ranges().map(|r| (r.base, r.end())).collect();
    assert_eq!(free, [(0x1000, 0x9e000), (0x10e000, 0x110_0000)]);
}

#[test]
fn full_sets_double_into_memory_memblock_allocates() {
    // Host memory stands in for physical memory: its addresses translate to themselves.
    let arena: &'static mut [u64] = Box::leak(vec![0u64; 64 * 1024].into_boxed_slice());
    let base = (arena.as_ptr() as u64).next_multiple_of(4096);
    let mut mb = Memblock::new();
    mb.add(base, 256 * 1024).expect("room");
    for i in 0..MAX_REGIONS as u64 {
        mb.reserve(base + i * 0x200, 0x100).expect("room");
    }
    assert_eq!(mb.reserve(base + 0x3_0000, 0x100), Err(MemblockError::Full), "no growth yet");
    // SAFETY: every address in `memory` lies in `arena`, leaked and used by nothing else.
    unsafe { mb.enable_growth(|phys| phys as *mut u8) };
    for i in MAX_REGIONS as u64..300 {
        mb.reserve(base + i * 0x200, 0x100).expect("grows");
    }
    assert!(mb.reserved.capacity() >= 512, "doubled twice: {}", mb.reserved.capacity());
    // 300 small regions, the current array (reserved), the first array freed again.
    let arrays: Vec<_> = mb.reserved.regions().iter().filter(|r| r.size >= 256 * 16).collect();
    assert_eq!(arrays.len(), 1, "{arrays:?}");
    assert_eq!(arrays[0].size, 512 * 16);
    assert_eq!(mb.reserved.regions().len(), 301);
    for i in 0..300 {
        assert!(mb.reserved.contains(base + i * 0x200, 0x100));
    }
}

/// Page-aligned host memory of `bytes`, leaked: its addresses stand in for physical ones.
fn host_memory(bytes: usize) -> u64 {
    let words = bytes / 8 + 4096 / 8;
    let arena: &'static mut [u64] = Box::leak(vec![0u64; words].into_boxed_slice());
    (arena.as_ptr() as u64).next_multiple_of(4096)
}

/// Lets `mb` grow into host memory: physical addresses translate to themselves.
fn grow_in_host_memory(mb: &mut Memblock) {
    // SAFETY: every test gives `memory` only ranges of `host_memory`, leaked and used by
    // nothing else.
    unsafe { mb.enable_growth(|phys| phys as *mut u8) };
}

/// Fills the reserved set with `MAX_REGIONS` small regions below `limit`, outside memory.
fn fill_reserved_below(mb: &mut Memblock, limit: u64) {
    for i in 0..MAX_REGIONS as u64 {
        mb.reserve(i * 0x200, 0x100).expect("room");
    }
    assert!(MAX_REGIONS as u64 * 0x200 <= limit, "the filler stays below memory");
    assert_eq!(mb.reserved.regions().len(), mb.reserved.capacity(), "full");
}

/// Where a set's array is (host addresses are physical ones here) and its size in bytes.
fn array_of(set: &RegionSet) -> (u64, u64) {
    (set.regions().as_ptr() as u64, (set.capacity() * core::mem::size_of::<Region>()) as u64)
}

fn overlaps((a, a_size): (u64, u64), (b, b_size): (u64, u64)) -> bool {
    a < b + b_size && b < a + a_size
}

#[test]
fn a_reservation_that_doubles_the_set_does_not_get_the_new_array() {
    // Memory: a low and a high range; the high one is reserved when the set is full.
    // Top-down, the highest free page is in the range being reserved: the array must go
    // below it (Linux: above the range first, then below it).
    let low = host_memory(0x2_0000);
    let high = low + 0x1_0000;
    let mut mb = Memblock::new();
    mb.add(low, 0x8000).expect("room");
    mb.add(high, 0x8000).expect("room");
    fill_reserved_below(&mut mb, low);
    grow_in_host_memory(&mut mb);

    mb.reserve(high, 0x8000).expect("grows");

    let array = array_of(&mb.reserved);
    assert_eq!(array.1, 0x1000, "doubled once, to 256 regions");
    assert!(!overlaps(array, (high, 0x8000)), "array {array:x?} in the reserved range");
    assert_eq!(array.0, low + 0x7000, "the highest page below the range");
    assert!(mb.reserved.contains(high, 0x8000) && mb.reserved.contains(array.0, array.1));
    assert_eq!(mb.reserved.regions().len(), MAX_REGIONS + 2);
}

#[test]
fn an_allocation_that_doubles_the_set_is_not_the_new_array() {
    // The brief's case: the range alloc finds is free until it is reserved, so a doubling
    // that ignores it hands out the same page twice.
    let base = host_memory(0x1_0000);
    let mut mb = Memblock::new();
    mb.add(base, 0x1_0000).expect("room");
    fill_reserved_below(&mut mb, base);
    grow_in_host_memory(&mut mb);

    let got = mb.alloc(0x1000, 0x1000, u64::MAX).expect("memory is free");

    assert_eq!(got, base + 0xf000);
    let array = array_of(&mb.reserved);
    assert!(!overlaps(array, (got, 0x1000)), "array {array:x?} is the allocation {got:x}");
    assert_eq!(array.0, base + 0xe000);
    // The caller owns the allocation: writing all of it leaves memblock intact.
    // SAFETY: `got..got + 0x1000` lies in `host_memory`, and memblock reserved it for us.
    unsafe { (got as *mut u8).write_bytes(0xff, 0x1000) };
    assert_eq!(mb.reserved.regions().len(), MAX_REGIONS + 1, "array and allocation merge");
    assert!(mb.reserved.contains(base + 0xe000, 0x2000));
    for i in 0..MAX_REGIONS as u64 {
        assert!(mb.reserved.contains(i * 0x200, 0x100));
    }
}

/// Memory: `[base, base + 64K)` and 127 small regions above it, all in host memory.
fn fill_memory(mb: &mut Memblock, base: u64) {
    mb.add(base, 0x1_0000).expect("room");
    for i in 1..MAX_REGIONS as u64 {
        mb.add(base + 0x1_0000 + i * 0x80, 0x40).expect("room");
    }
    assert_eq!(mb.memory.regions().len(), mb.memory.capacity(), "full");
}

#[test]
fn a_removal_that_doubles_the_memory_set_keeps_the_array_in_memory() {
    // Removing the middle of the top page splits a region; the array doubled for it must
    // not sit in the range removed, where `enable_growth` no longer promises it is
    // reachable. (Linux's memblock_double_array excludes the range only for `reserved`.)
    let base = host_memory(0x2_0000);
    let mut mb = Memblock::new();
    fill_memory(&mut mb, base);
    grow_in_host_memory(&mut mb);

    mb.remove(base + 0xf000, 0x800).expect("grows");

    let array = array_of(&mb.memory);
    assert_eq!(array.1, 0x1000, "doubled once, to 256 regions");
    assert!(mb.memory.contains(array.0, array.1), "array {array:x?} outside memory");
    assert!(mb.reserved.contains(array.0, array.1));
    assert!(!mb.memory.intersects(base + 0xf000, 0x800));
    assert_eq!(mb.memory.regions().len(), MAX_REGIONS + 1);
}

#[test]
fn when_both_sets_are_full_their_new_arrays_do_not_overlap() {
    // Both sets full: doubling `memory` reserves its new array, which needs `reserved` to
    // double; neither array may land on the other.
    let base = host_memory(0x2_0000);
    let mut mb = Memblock::new();
    fill_memory(&mut mb, base);
    fill_reserved_below(&mut mb, base);
    grow_in_host_memory(&mut mb);

    let extra = base + 0x1_0000 + MAX_REGIONS as u64 * 0x80;
    mb.add(extra, 0x40).expect("grows");

    let (memory_array, reserved_array) = (array_of(&mb.memory), array_of(&mb.reserved));
    assert!(!overlaps(memory_array, reserved_array), "{memory_array:x?} {reserved_array:x?}");
    assert_eq!(mb.memory.regions().len(), MAX_REGIONS + 1);
    assert!(mb.memory.contains(base, 0x1_0000) && mb.memory.contains(extra, 0x40));
    for i in 1..MAX_REGIONS as u64 {
        assert!(mb.memory.contains(base + 0x1_0000 + i * 0x80, 0x40));
    }
    assert!(mb.reserved.contains(memory_array.0, memory_array.1));
    assert!(mb.reserved.contains(reserved_array.0, reserved_array.1));
}

#[test]
fn when_both_sets_are_full_a_removal_keeps_both_new_arrays_in_memory() {
    // As above, but the removal that fills `memory` is at the top page: the reserved
    // array, doubled on the way, must keep out of the removed range too.
    let base = host_memory(0x2_0000);
    let mut mb = Memblock::new();
    fill_memory(&mut mb, base);
    fill_reserved_below(&mut mb, base);
    grow_in_host_memory(&mut mb);

    mb.remove(base + 0xf000, 0x800).expect("grows");

    let (memory_array, reserved_array) = (array_of(&mb.memory), array_of(&mb.reserved));
    assert!(mb.memory.contains(memory_array.0, memory_array.1), "{memory_array:x?}");
    assert!(mb.memory.contains(reserved_array.0, reserved_array.1), "{reserved_array:x?}");
    assert!(!overlaps(memory_array, reserved_array));
}

/// Operations on a universe of 64 pages.
#[derive(Clone, Debug)]
enum Op {
    Add(u64, u64),
    Remove(u64, u64),
    Reserve(u64, u64),
    Free(u64, u64),
    /// `alloc_range`; `min_page` is 0 half the time, as `alloc`.
    Alloc {
        pages: u64,
        align_pages: u64,
        min_page: u64,
        limit_page: u64,
        bottom_up: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0u64..64, 0u64..12);
    prop_oneof![
        range.clone().prop_map(|(p, n)| Op::Add(p, n)),
        range.clone().prop_map(|(p, n)| Op::Remove(p, n)),
        range.clone().prop_map(|(p, n)| Op::Reserve(p, n)),
        range.prop_map(|(p, n)| Op::Free(p, n)),
        (1u64..6, 0u32..4, prop_oneof![Just(0u64), 0u64..70], 0u64..70, any::<bool>()).prop_map(
            |(pages, a, min_page, limit_page, bottom_up)| Op::Alloc {
                pages,
                align_pages: 1 << a,
                min_page,
                limit_page,
                bottom_up
            }
        ),
    ]
}

const PAGE: u64 = 0x1000;

fn pages_of(set: &RegionSet) -> BTreeSet<u64> {
    set.regions().iter().flat_map(|r| r.base / PAGE..r.end() / PAGE).collect()
}

fn check_shape(set: &RegionSet) -> Result<(), TestCaseError> {
    prop_assert!(set.regions().iter().all(|r| r.size > 0));
    for pair in set.regions().windows(2) {
        prop_assert!(pair[0].end() < pair[1].base, "sorted, disjoint, non-adjacent: {:?}", pair);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn memblock_matches_a_page_set_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut mb = Memblock::new();
        let (mut memory, mut reserved) = (BTreeSet::new(), BTreeSet::new());
        for op in ops {
            match op {
                Op::Add(p, n) => { mb.memory.add(p * PAGE, n * PAGE).expect("room"); memory.extend(p..p + n); }
                Op::Remove(p, n) => { mb.memory.remove(p * PAGE, n * PAGE).expect("room"); (p..p + n).for_each(|q| { memory.remove(&q); }); }
                Op::Reserve(p, n) => { mb.reserved.add(p * PAGE, n * PAGE).expect("room"); reserved.extend(p..p + n); }
                Op::Free(p, n) => { mb.reserved.remove(p * PAGE, n * PAGE).expect("room"); (p..p + n).for_each(|q| { reserved.remove(&q); }); }
                Op::Alloc { pages, align_pages, min_page, limit_page, bottom_up } => {
                    mb.direction = if bottom_up { Direction::BottomUp } else { Direction::TopDown };
                    let free = |q: &u64| memory.contains(q) && !reserved.contains(q);
                    // Every aligned base at or above min_page whose pages are all free and end
                    // below the limit.
                    let candidates: Vec<u64> = (min_page..80u64)
                        .filter(|b| b % align_pages == 0 && b + pages <= limit_page)
                        .filter(|b| (*b..b + pages).all(|q| free(&q)))
                        .collect();
                    let expected = if bottom_up { candidates.first() } else { candidates.last() };
                    let got = mb.alloc_range(pages * PAGE, align_pages * PAGE, min_page * PAGE, limit_page * PAGE);
                    prop_assert_eq!(got, expected.map(|b| b * PAGE));
                    if let Some(base) = got {
                        reserved.extend(base / PAGE..base / PAGE + pages);
                    }
                }
            }
            check_shape(&mb.memory)?;
            check_shape(&mb.reserved)?;
            prop_assert_eq!(pages_of(&mb.memory), memory.clone());
            prop_assert_eq!(pages_of(&mb.reserved), reserved.clone());
            let free: BTreeSet<u64> = mb.free_ranges().flat_map(|r| r.base / PAGE..r.end() / PAGE).collect();
            let model_free: BTreeSet<u64> = memory.difference(&reserved).copied().collect();
            prop_assert_eq!(free, model_free);
        }
    }
}
