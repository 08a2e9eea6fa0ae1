//! Linux's userspace memblock tests (`tools/testing/memblock/tests/`: `basic_api.c`,
//! `alloc_api.c`, `alloc_helpers_api.c`, `alloc_nid_api.c`), written again for our
//! memblock: each test keeps the name of the C function whose assertions it checks.
//! docs/CONFORMANCE.md lists the C functions left out, and where we differ on purpose.
//!
//! Translation of Linux's API and fixtures:
//! - `memblock.memory.cnt`, `.total_size`, `.max` are `regions().len()`, `total()`,
//!   `capacity()`; `memblock_free`/`memblock_phys_free` is `free`; `memblock_reserve_kern`
//!   is `reserve` (we have no region flags); `memblock_set_bottom_up` sets `direction`.
//! - `memblock_alloc` is `alloc(size, align, u64::MAX)`; `memblock_alloc_try_nid` (and its
//!   `_raw`/`exact_nid_raw` forms, all with `NUMA_NO_NODE`) and `memblock_alloc_from` are
//!   [`alloc_try_nid`]: `alloc_range`, then without the lower bound, as Linux's
//!   `memblock_alloc_internal`. Our allocations never touch the memory, so the zeroed and
//!   raw variants of a case are one test, without Linux's content checks.
//! - `setup_memblock()` (one `MEM_SIZE` region) uses a plain address: nothing is
//!   dereferenced. Where a set must double (`memblock_allow_resize()`), memblock writes its
//!   new array, so memory is a [`DummyPhysicalMemory`] block of host memory whose addresses
//!   stand in for physical ones, as Linux's `dummy_physical_memory_init()`.

use guest::memblock::{Direction, Memblock, Region, RegionSet, MAX_REGIONS};
use std::alloc::{alloc_zeroed, dealloc, Layout};

const SZ_2: u64 = 2;
const SZ_8: u64 = 8;
const SZ_16: u64 = 16;
const SZ_32: u64 = 32;
const SZ_64: u64 = 64;
const SZ_128: u64 = 128;
const SZ_256: u64 = 256;
const SZ_512: u64 = 512;
const SZ_1K: u64 = 1 << 10;
const SZ_2K: u64 = 2 << 10;
const SZ_4K: u64 = 4 << 10;
const SZ_8K: u64 = 8 << 10;
const SZ_16K: u64 = 16 << 10;
const SZ_32K: u64 = 32 << 10;
const SZ_64K: u64 = 64 << 10;
const SZ_128K: u64 = 128 << 10;
const SZ_512K: u64 = 512 << 10;
const SZ_1M: u64 = 1 << 20;
const SZ_2M: u64 = 2 << 20;
const SZ_4M: u64 = 4 << 20;
const SZ_8M: u64 = 8 << 20;
const SZ_16M: u64 = 16 << 20;
const SZ_32M: u64 = 32 << 20;
const SZ_64M: u64 = 64 << 20;
const SZ_128M: u64 = 128 << 20;
const SZ_256M: u64 = 256 << 20;
const SZ_512M: u64 = 512 << 20;
const SZ_1G: u64 = 1 << 30;
const SZ_2G: u64 = 2 << 30;

const PHYS_ADDR_MAX: u64 = u64::MAX;
/// `MEMBLOCK_ALLOC_ACCESSIBLE`/`MEMBLOCK_ALLOC_ANYWHERE`: we have no `current_limit`.
const ALLOC_ANYWHERE: u64 = u64::MAX;
const PAGE_SIZE: u64 = 4096;
/// The memory `setup_memblock()` registers (Linux's common.h).
const MEM_SIZE: u64 = SZ_32K;
/// The dummy physical memory (Linux's common.h `PHYS_MEM_SIZE`).
const PHYS_MEM_SIZE: u64 = SZ_16M;
/// tools/include/linux/cache.h: `L1_CACHE_SHIFT` 5.
const SMP_CACHE_BYTES: u64 = 32;
const INIT_MEMBLOCK_REGIONS: usize = MAX_REGIONS;
const REGION_BYTES: u64 = std::mem::size_of::<Region>() as u64;
/// Where `setup_memblock()`'s memory starts (a plain address, never dereferenced).
const DRAM_BASE: u64 = SZ_1G;

fn page_align(bytes: u64) -> u64 {
    bytes.next_multiple_of(PAGE_SIZE)
}

/// `cnt` of a set.
fn cnt(set: &RegionSet) -> usize {
    set.regions().len()
}

/// Region `index` of a set as `(base, size)`.
fn rgn(set: &RegionSet, index: usize) -> (u64, u64) {
    let region = set.regions().get(index).copied().unwrap_or_default();
    (region.base, region.size)
}

/// `reset_memblock_regions()` and `reset_memblock_attributes()` with `direction`.
fn reset_memblock(direction: Direction) -> Memblock {
    let mut mb = Memblock::new();
    mb.direction = direction;
    mb
}

/// `setup_memblock()`: memory is `[DRAM_BASE, DRAM_BASE + MEM_SIZE)`.
fn setup_memblock(direction: Direction) -> Memblock {
    let mut mb = reset_memblock(direction);
    mb.add(DRAM_BASE, MEM_SIZE).expect("room");
    mb
}

fn start_of_dram(mb: &Memblock) -> u64 {
    mb.memory.regions().first().map_or(0, |r| r.base)
}

fn end_of_dram(mb: &Memblock) -> u64 {
    mb.memory.regions().last().map_or(0, |r| r.end())
}

/// `memblock_alloc(size, align)`.
fn memblock_alloc(mb: &mut Memblock, size: u64, align: u64) -> Option<u64> {
    mb.alloc(size, align, ALLOC_ANYWHERE)
}

/// `memblock_alloc_try_nid(size, align, min_addr, max_addr, NUMA_NO_NODE)`: the range,
/// then, if that fails, without its lower bound (Linux's `memblock_alloc_internal`).
fn alloc_try_nid(mb: &mut Memblock, size: u64, align: u64, min: u64, max: u64) -> Option<u64> {
    mb.alloc_range(size, align, min, max).or_else(|| match min {
        0 => None,
        _ => mb.alloc_range(size, align, 0, max),
    })
}

/// `memblock_alloc_from(size, align, min_addr)`.
fn alloc_from(mb: &mut Memblock, size: u64, align: u64, min_addr: u64) -> Option<u64> {
    alloc_try_nid(mb, size, align, min_addr, ALLOC_ANYWHERE)
}

const BOTH_DIRECTIONS: [Direction; 2] = [Direction::TopDown, Direction::BottomUp];

/// `dummy_physical_memory_init()`: `PHYS_MEM_SIZE` bytes of page-aligned host memory,
/// freed on drop. A memblock growing into it must be dropped first.
struct DummyPhysicalMemory {
    start: *mut u8,
}

impl DummyPhysicalMemory {
    fn layout() -> Layout {
        let size = usize::try_from(PHYS_MEM_SIZE).expect("fits the host");
        let align = usize::try_from(PAGE_SIZE).expect("fits the host");
        Layout::from_size_align(size, align).expect("valid")
    }

    fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let start = unsafe { alloc_zeroed(Self::layout()) };
        assert!(!start.is_null(), "out of host memory");
        let memory = Self { start };
        // The basic tests reserve fake ranges below 16 MiB; host memory must not meet them.
        assert!(memory.base() >= SZ_16M, "host memory at {:#x}", memory.base());
        memory
    }

    /// `dummy_physical_memory_base()`.
    fn base(&self) -> u64 {
        self.start as u64
    }
}

impl Drop for DummyPhysicalMemory {
    fn drop(&mut self) {
        // SAFETY: `start` came from `alloc_zeroed` with this layout and is freed once.
        unsafe { dealloc(self.start, Self::layout()) }
    }
}

/// `memblock_allow_resize()`: full sets double into memory memblock allocates, reached at
/// its host address.
///
/// # Safety
/// Until `mb` is dropped, every range of its `memory` from which it allocates (it does so
/// only to double a set) must lie in one `DummyPhysicalMemory` that outlives it.
unsafe fn allow_resize(mb: &mut Memblock) {
    // SAFETY: the caller's contract is `enable_growth`'s, with addresses translating to
    // themselves.
    unsafe { mb.enable_growth(|phys| phys as *mut u8) };
}

// ---------------------------------------------------------------------------------------
// basic_api.c
// ---------------------------------------------------------------------------------------

// tools/testing/memblock/tests/basic_api.c: memblock_initialization_check()
#[test]
fn memblock_initialization_check() {
    for mb in [Memblock::new(), Memblock::default()] {
        assert_eq!(cnt(&mb.memory), 0);
        assert_eq!(mb.memory.capacity(), INIT_MEMBLOCK_REGIONS);
        assert_eq!(cnt(&mb.reserved), 0);
        assert_eq!(mb.reserved.capacity(), INIT_MEMBLOCK_REGIONS);
        assert_eq!(mb.direction, Direction::TopDown, "bottom_up is false");
    }
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_simple_check()
#[test]
fn memblock_add_simple_check() {
    let (base, size) = (SZ_1G, SZ_4M);
    let mut mb = Memblock::new();
    mb.add(base, size).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (base, size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_disjoint_check()
#[test]
fn memblock_add_disjoint_check() {
    let r1 = (SZ_1G, SZ_8K);
    let r2 = (SZ_1G + SZ_16K, SZ_8K);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), r1);
    assert_eq!(rgn(&mb.memory, 1), r2);
    assert_eq!(cnt(&mb.memory), 2);
    assert_eq!(mb.memory.total(), r1.1 + r2.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_overlap_top_check()
#[test]
fn memblock_add_overlap_top_check() {
    let r1 = (SZ_512M, SZ_1G);
    let r2 = (SZ_256M, SZ_512M);
    let total_size = (r1.0 - r2.0) + r1.1;
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r2.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_overlap_bottom_check()
#[test]
fn memblock_add_overlap_bottom_check() {
    let r1 = (SZ_128M, SZ_512M);
    let r2 = (SZ_256M, SZ_1G);
    let total_size = (r2.0 - r1.0) + r2.1;
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_within_check()
#[test]
fn memblock_add_within_check() {
    let r1 = (SZ_8M, SZ_32M);
    let r2 = (SZ_16M, SZ_1M);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), r1);
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), r1.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_twice_check()
#[test]
fn memblock_add_twice_check() {
    let r = (SZ_16K, SZ_2M);
    let mut mb = Memblock::new();
    mb.add(r.0, r.1).expect("room");
    mb.add(r.0, r.1).expect("room");
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), r.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_between_check()
#[test]
fn memblock_add_between_check() {
    let r1 = (SZ_1G, SZ_8K);
    let r2 = (SZ_1G + SZ_16K, SZ_8K);
    let r3 = (SZ_1G + SZ_8K, SZ_8K);
    let total_size = r1.1 + r2.1 + r3.1;
    let mut mb = Memblock::new();
    for r in [r1, r2, r3] {
        mb.add(r.0, r.1).expect("room");
    }
    assert_eq!(rgn(&mb.memory, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_near_max_check()
#[test]
fn memblock_add_near_max_check() {
    let r = (PHYS_ADDR_MAX - SZ_1M, SZ_2M);
    let total_size = PHYS_ADDR_MAX - r.0;
    let mut mb = Memblock::new();
    mb.add(r.0, r.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_add_many_check()
#[test]
fn memblock_add_many_check() {
    let dummy = DummyPhysicalMemory::new();
    let r = (SZ_16K, SZ_16K);
    let (size, gap_size) = (SZ_64, SZ_64);
    let mut mb = Memblock::new();
    // SAFETY: until the last add, all memory lies in `dummy`, declared before `mb`; the
    // last add (of a fake range) comes after the only doubling.
    unsafe { allow_resize(&mut mb) };

    // The one range large enough for the doubled array; then 128 small ones.
    let mut base = page_align(dummy.base());
    let new_memory_regions_size = page_align(INIT_MEMBLOCK_REGIONS as u64 * 2 * REGION_BYTES);
    mb.add(base, new_memory_regions_size).expect("room");
    base += new_memory_regions_size + gap_size;
    for i in 0..INIT_MEMBLOCK_REGIONS {
        mb.add(base, size).expect("room or growth");
        base += size + gap_size;
        assert_eq!(cnt(&mb.memory), i + 2);
        assert_eq!(mb.memory.total(), new_memory_regions_size + (i as u64 + 1) * size);
    }
    assert_eq!(mb.memory.capacity(), INIT_MEMBLOCK_REGIONS * 2);
    // The doubling reserved the array it moved into.
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), new_memory_regions_size);

    mb.add(r.0, r.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), r);
    assert_eq!(cnt(&mb.memory), INIT_MEMBLOCK_REGIONS + 2);
    assert_eq!(
        mb.memory.total(),
        INIT_MEMBLOCK_REGIONS as u64 * size + new_memory_regions_size + r.1
    );
    assert_eq!(mb.memory.capacity(), INIT_MEMBLOCK_REGIONS * 2);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_simple_check()
#[test]
fn memblock_reserve_simple_check() {
    let r = (SZ_2G, SZ_128M);
    let mut mb = Memblock::new();
    mb.reserve(r.0, r.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_disjoint_check()
#[test]
fn memblock_reserve_disjoint_check() {
    let r1 = (SZ_256M, SZ_16M);
    let r2 = (SZ_512M, SZ_512M);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r1);
    assert_eq!(rgn(&mb.reserved, 1), r2);
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_overlap_top_check()
#[test]
fn memblock_reserve_overlap_top_check() {
    let r1 = (SZ_1G, SZ_1G);
    let r2 = (SZ_128M, SZ_1G);
    let total_size = (r1.0 - r2.0) + r1.1;
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r2.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_overlap_bottom_check()
#[test]
fn memblock_reserve_overlap_bottom_check() {
    let r1 = (SZ_2K, SZ_128K);
    let r2 = (SZ_128K, SZ_128K);
    let total_size = (r2.0 - r1.0) + r2.1;
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_within_check()
#[test]
fn memblock_reserve_within_check() {
    let r1 = (SZ_1M, SZ_8M);
    let r2 = (SZ_2M, SZ_64K);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r1);
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), r1.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_twice_check()
#[test]
fn memblock_reserve_twice_check() {
    let r = (SZ_16K, SZ_2M);
    let mut mb = Memblock::new();
    mb.reserve(r.0, r.1).expect("room");
    mb.reserve(r.0, r.1).expect("room");
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), r.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_between_check()
#[test]
fn memblock_reserve_between_check() {
    let r1 = (SZ_1G, SZ_8K);
    let r2 = (SZ_1G + SZ_16K, SZ_8K);
    let r3 = (SZ_1G + SZ_8K, SZ_8K);
    let total_size = r1.1 + r2.1 + r3.1;
    let mut mb = Memblock::new();
    for r in [r1, r2, r3] {
        mb.reserve(r.0, r.1).expect("room");
    }
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_near_max_check()
#[test]
fn memblock_reserve_near_max_check() {
    let r = (PHYS_ADDR_MAX - SZ_1M, SZ_2M);
    let total_size = PHYS_ADDR_MAX - r.0;
    let mut mb = Memblock::new();
    mb.reserve(r.0, r.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

/// The size of the reserved array after one doubling, as Linux reserves it.
fn new_reserved_regions_size() -> u64 {
    page_align(INIT_MEMBLOCK_REGIONS as u64 * 2 * REGION_BYTES)
}

/// After the 129th reservation: 129 ranges of `MEM_SIZE`, the doubled array, 256 slots;
/// then a reservation below all of them still works.
fn assert_reserved_doubled_then_reserve_works(mb: &mut Memblock) {
    let reserved_size = (INIT_MEMBLOCK_REGIONS as u64 + 1) * MEM_SIZE;
    assert_eq!(cnt(&mb.reserved), INIT_MEMBLOCK_REGIONS + 2);
    assert_eq!(mb.reserved.total(), reserved_size + new_reserved_regions_size());
    assert_eq!(mb.reserved.capacity(), INIT_MEMBLOCK_REGIONS * 2);

    let r = (SZ_16K, SZ_16K);
    mb.reserve(r.0, r.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r);
    assert_eq!(cnt(&mb.reserved), INIT_MEMBLOCK_REGIONS + 3);
    assert_eq!(mb.reserved.total(), reserved_size + new_reserved_regions_size() + r.1);
    assert_eq!(mb.reserved.capacity(), INIT_MEMBLOCK_REGIONS * 2);
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_many_check()
#[test]
fn memblock_reserve_many_check() {
    let dummy = DummyPhysicalMemory::new();
    let mut mb = Memblock::new();
    // SAFETY: memory is only `dummy`, declared before `mb`.
    unsafe { allow_resize(&mut mb) };
    mb.add(dummy.base(), MEM_SIZE).expect("room");

    // Fake reservations, with gaps so that they do not merge.
    let mut memory_base = SZ_128K;
    for i in 0..INIT_MEMBLOCK_REGIONS as u64 {
        mb.reserve(memory_base, MEM_SIZE).expect("room");
        assert_eq!(cnt(&mb.reserved) as u64, i + 1);
        assert_eq!(mb.reserved.total(), (i + 1) * MEM_SIZE);
        memory_base += MEM_SIZE * 2;
    }
    mb.reserve(memory_base, MEM_SIZE).expect("doubles");

    assert_reserved_doubled_then_reserve_works(&mut mb);
}

/// `MEMORY_BASE(idx)` of basic_api.c: fake ranges with gaps so that they do not merge.
fn memory_base(index: u64) -> u64 {
    SZ_128K + MEM_SIZE * 2 * index
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_all_locations_check()
#[test]
fn memblock_reserve_all_locations_check() {
    let dummy = DummyPhysicalMemory::new();
    // The 129th reservation at every position among the others.
    for skip in 0..=INIT_MEMBLOCK_REGIONS as u64 {
        let mut mb = Memblock::new();
        // SAFETY: memory is only `dummy`, which outlives `mb` (dropped in this iteration).
        unsafe { allow_resize(&mut mb) };
        mb.add(dummy.base(), MEM_SIZE).expect("room");

        for i in (0..=INIT_MEMBLOCK_REGIONS as u64).filter(|&i| i != skip) {
            mb.reserve(memory_base(i), MEM_SIZE).expect("room");
            let reserved = if i < skip { i + 1 } else { i };
            assert_eq!(cnt(&mb.reserved) as u64, reserved, "skip {skip}");
            assert_eq!(mb.reserved.total(), reserved * MEM_SIZE, "skip {skip}");
        }
        mb.reserve(memory_base(skip), MEM_SIZE).expect("doubles");

        assert_reserved_doubled_then_reserve_works(&mut mb);
    }
}

// tools/testing/memblock/tests/basic_api.c: memblock_reserve_many_may_conflict_check()
#[test]
fn memblock_reserve_many_may_conflict_check() {
    let dummy = DummyPhysicalMemory::new();
    let offset = page_align(dummy.base());
    // Range `index` of `MEM_SIZE` in the dummy memory, with gaps so that none merge.
    let range = |index: u64| offset + MEM_SIZE * 2 * index;
    assert!(range(INIT_MEMBLOCK_REGIONS as u64 + 2) <= dummy.base() + PHYS_MEM_SIZE);

    // Memory: range 0, free for the doubled array, and range `skip`, reserved last: it
    // is free and above range 0 until then, but the array must not go there.
    for skip in 1..=INIT_MEMBLOCK_REGIONS as u64 + 1 {
        let mut mb = Memblock::new();
        // SAFETY: memory lies in `dummy`, which outlives `mb` (dropped in this iteration).
        unsafe { allow_resize(&mut mb) };
        mb.add(range(0), MEM_SIZE).expect("room");
        mb.add(range(skip), MEM_SIZE).expect("room");

        for i in (1..=INIT_MEMBLOCK_REGIONS as u64 + 1).filter(|&i| i != skip) {
            mb.reserve(range(i), MEM_SIZE).expect("room");
            let reserved = if i < skip { i } else { i - 1 };
            assert_eq!(cnt(&mb.reserved) as u64, reserved, "skip {skip}");
            assert_eq!(mb.reserved.total(), reserved * MEM_SIZE, "skip {skip}");
        }
        mb.reserve(range(skip), MEM_SIZE).expect("doubles");

        let reserved_size = (INIT_MEMBLOCK_REGIONS as u64 + 1) * MEM_SIZE;
        assert_eq!(cnt(&mb.reserved), INIT_MEMBLOCK_REGIONS + 2, "skip {skip}");
        assert_eq!(mb.reserved.total(), reserved_size + new_reserved_regions_size());
        assert_eq!(mb.reserved.capacity(), INIT_MEMBLOCK_REGIONS * 2);
        // The array is at the top of range 0, below the range being reserved.
        let (array_base, array_size) = rgn(&mb.reserved, 0);
        assert_eq!(array_base + array_size, range(0) + SZ_32K, "skip {skip}");
        assert_eq!(array_size, new_reserved_regions_size());

        let r = (SZ_16K, SZ_16K);
        mb.reserve(r.0, r.1).expect("room");
        assert_eq!(rgn(&mb.reserved, 0), r);
        assert_eq!(cnt(&mb.reserved), INIT_MEMBLOCK_REGIONS + 3);
        assert_eq!(mb.reserved.total(), reserved_size + new_reserved_regions_size() + r.1);
        assert_eq!(mb.reserved.capacity(), INIT_MEMBLOCK_REGIONS * 2);
    }
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_simple_check()
#[test]
fn memblock_remove_simple_check() {
    let r1 = (SZ_2K, SZ_4K);
    let r2 = (SZ_128K, SZ_4M);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    mb.remove(r1.0, r1.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), r2);
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), r2.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_absent_check()
#[test]
fn memblock_remove_absent_check() {
    let r1 = (SZ_512K, SZ_4M);
    let r2 = (SZ_64M, SZ_1G);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), r1);
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), r1.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_overlap_top_check()
#[test]
fn memblock_remove_overlap_top_check() {
    let r1 = (SZ_32M, SZ_32M);
    let r2 = (SZ_16M, SZ_32M);
    let (r1_end, r2_end) = (r1.0 + r1.1, r2.0 + r2.1);
    let total_size = r1_end - r2_end;
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0 + r2.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_overlap_bottom_check()
#[test]
fn memblock_remove_overlap_bottom_check() {
    let r1 = (SZ_2M, SZ_64M);
    let r2 = (SZ_32M, SZ_256M);
    let total_size = r2.0 - r1.0;
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_within_check()
#[test]
fn memblock_remove_within_check() {
    let r1 = (SZ_1M, SZ_32M);
    let r2 = (SZ_16M, SZ_1M);
    let r1_size = r2.0 - r1.0;
    let r2_size = (r1.0 + r1.1) - (r2.0 + r2.1);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0, r1_size));
    assert_eq!(rgn(&mb.memory, 1), (r2.0 + r2.1, r2_size));
    assert_eq!(cnt(&mb.memory), 2);
    assert_eq!(mb.memory.total(), r1_size + r2_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_only_region_check()
#[test]
fn memblock_remove_only_region_check() {
    let r1 = (SZ_2K, SZ_4K);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r1.0, r1.1).expect("room");
    assert_eq!(cnt(&mb.memory), 0);
    assert_eq!(mb.memory.total(), 0);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_near_max_check()
#[test]
fn memblock_remove_near_max_check() {
    let r1 = (PHYS_ADDR_MAX - SZ_2M, SZ_2M);
    let r2 = (PHYS_ADDR_MAX - SZ_1M, SZ_2M);
    let total_size = r1.1 - (PHYS_ADDR_MAX - r2.0);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.remove(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.memory), 1);
    assert_eq!(mb.memory.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_remove_overlap_two_check()
#[test]
fn memblock_remove_overlap_two_check() {
    let r1 = (SZ_16M, SZ_32M);
    let r2 = (SZ_64M, SZ_64M);
    let r3 = (SZ_32M, SZ_64M);
    let (r2_end, r3_end) = (r2.0 + r2.1, r3.0 + r3.1);
    let (new_r1_size, new_r2_size) = (r3.0 - r1.0, r2_end - r3_end);
    let mut mb = Memblock::new();
    mb.add(r1.0, r1.1).expect("room");
    mb.add(r2.0, r2.1).expect("room");
    mb.remove(r3.0, r3.1).expect("room");
    assert_eq!(rgn(&mb.memory, 0), (r1.0, new_r1_size));
    assert_eq!(rgn(&mb.memory, 1), (r3_end, new_r2_size));
    assert_eq!(cnt(&mb.memory), 2);
    assert_eq!(mb.memory.total(), new_r1_size + new_r2_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_simple_check()
#[test]
fn memblock_free_simple_check() {
    let r1 = (SZ_4M, SZ_1M);
    let r2 = (SZ_8M, SZ_1M);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    mb.free(r1.0, r1.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r2);
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), r2.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_absent_check()
#[test]
fn memblock_free_absent_check() {
    let r1 = (SZ_2M, SZ_8K);
    let r2 = (SZ_16M, SZ_128M);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), r1);
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), r1.1);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_overlap_top_check()
#[test]
fn memblock_free_overlap_top_check() {
    let r1 = (SZ_8M, SZ_32M);
    let r2 = (SZ_1M, SZ_8M);
    let total_size = (r1.1 + r1.0) - (r2.0 + r2.1);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r2.0 + r2.1, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_overlap_bottom_check()
#[test]
fn memblock_free_overlap_bottom_check() {
    let r1 = (SZ_8M, SZ_32M);
    let r2 = (SZ_32M, SZ_32M);
    let total_size = r2.0 - r1.0;
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_within_check()
#[test]
fn memblock_free_within_check() {
    let r1 = (SZ_1M, SZ_8M);
    let r2 = (SZ_4M, SZ_1M);
    let r1_size = r2.0 - r1.0;
    let r2_size = (r1.0 + r1.1) - (r2.0 + r2.1);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, r1_size));
    assert_eq!(rgn(&mb.reserved, 1), (r2.0 + r2.1, r2_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1_size + r2_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_only_region_check()
#[test]
fn memblock_free_only_region_check() {
    let r1 = (SZ_2K, SZ_4K);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r1.0, r1.1).expect("room");
    assert_eq!(cnt(&mb.reserved), 0);
    assert_eq!(mb.reserved.total(), 0);
}

// tools/testing/memblock/tests/basic_api.c: memblock_phys_free_near_max_check()
#[test]
fn memblock_phys_free_near_max_check() {
    let r1 = (PHYS_ADDR_MAX - SZ_2M, SZ_2M);
    let r2 = (PHYS_ADDR_MAX - SZ_1M, SZ_2M);
    let total_size = r1.1 - (PHYS_ADDR_MAX - r2.0);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.free(r2.0, r2.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_free_overlap_two_check()
#[test]
fn memblock_free_overlap_two_check() {
    let r1 = (SZ_16M, SZ_32M);
    let r2 = (SZ_64M, SZ_64M);
    let r3 = (SZ_32M, SZ_64M);
    let (r2_end, r3_end) = (r2.0 + r2.1, r3.0 + r3.1);
    let (new_r1_size, new_r2_size) = (r3.0 - r1.0, r2_end - r3_end);
    let mut mb = Memblock::new();
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    mb.free(r3.0, r3.1).expect("room");
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, new_r1_size));
    assert_eq!(rgn(&mb.reserved, 1), (r3_end, new_r2_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), new_r1_size + new_r2_size);
}

// tools/testing/memblock/tests/basic_api.c: memblock_set_bottom_up_check()
#[test]
fn memblock_set_bottom_up_check() {
    let mut mb = Memblock::new();
    mb.direction = Direction::TopDown;
    assert_eq!(mb.direction, Direction::TopDown);
    mb.direction = Direction::BottomUp;
    assert_eq!(mb.direction, Direction::BottomUp);
}

// tools/testing/memblock/tests/basic_api.c: memblock_bottom_up_check()
#[test]
fn memblock_bottom_up_check() {
    // Linux checks that memblock_bottom_up() reads what memblock_set_bottom_up() set; our
    // direction is a field, so check that allocation follows it.
    let mut mb = setup_memblock(Direction::TopDown);
    assert_eq!(memblock_alloc(&mut mb, SZ_1K, SZ_1K), Some(end_of_dram(&mb) - SZ_1K));
    mb.direction = Direction::BottomUp;
    assert_eq!(memblock_alloc(&mut mb, SZ_1K, SZ_1K), Some(start_of_dram(&mb)));
}

// tools/testing/memblock/tests/basic_api.c: memblock_overlaps_region_check()
#[test]
fn memblock_overlaps_region_check() {
    let mut mb = Memblock::new();
    mb.add(SZ_1G, SZ_4M).expect("room");
    let overlaps = |base, size| mb.memory.intersects(base, size);
    // Far away.
    assert!(!overlaps(SZ_1M, SZ_1M));
    assert!(!overlaps(SZ_2G, SZ_1M));
    // Neighbours.
    assert!(!overlaps(SZ_1G - SZ_1M, SZ_1M));
    assert!(!overlaps(SZ_1G + SZ_4M, SZ_1M));
    // Partial overlap.
    assert!(overlaps(SZ_1G - SZ_1M, SZ_2M));
    assert!(overlaps(SZ_1G + SZ_2M, SZ_2M));
    // Total overlap.
    assert!(overlaps(SZ_1G, SZ_4M));
    assert!(overlaps(SZ_1G - SZ_2M, SZ_8M));
    assert!(overlaps(SZ_1G + SZ_1M, SZ_1M));
}

// ---------------------------------------------------------------------------------------
// alloc_api.c: memblock_alloc (and memblock_alloc_raw) into setup_memblock()'s memory.
// ---------------------------------------------------------------------------------------

// tools/testing/memblock/tests/alloc_api.c: alloc_top_down_simple_check()
#[test]
fn alloc_top_down_simple_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_2;
    let expected_start = end_of_dram(&mb) - SMP_CACHE_BYTES;
    assert_eq!(memblock_alloc(&mut mb, size, SMP_CACHE_BYTES), Some(expected_start));
    assert_eq!(rgn(&mb.reserved, 0), (expected_start, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_top_down_disjoint_check()
#[test]
fn alloc_top_down_disjoint_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let r1 = (end_of_dram(&mb) - SZ_2, SZ_2);
    let (r2_size, alignment) = (SZ_16, SMP_CACHE_BYTES * 2);
    let expected_start = end_of_dram(&mb) - alignment;
    mb.reserve(r1.0, r1.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r2_size, alignment), Some(expected_start));
    // Sorted by address: the new region comes first, the old one is unchanged.
    assert_eq!(rgn(&mb.reserved, 0), (expected_start, r2_size));
    assert_eq!(rgn(&mb.reserved, 1), r1);
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_top_down_before_check()
#[test]
fn alloc_top_down_before_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let (r1_size, r2_size) = (SMP_CACHE_BYTES, SZ_512);
    let total_size = r1_size + r2_size;
    mb.reserve(end_of_dram(&mb) - total_size, r1_size).expect("room");
    assert!(memblock_alloc(&mut mb, r2_size, SMP_CACHE_BYTES).is_some());
    assert_eq!(rgn(&mb.reserved, 0), (end_of_dram(&mb) - total_size, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_top_down_after_check()
#[test]
fn alloc_top_down_after_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let r1 = (end_of_dram(&mb) - SMP_CACHE_BYTES, SZ_8);
    let r2_size = SZ_512;
    let total_size = r1.1 + r2_size;
    mb.reserve(r1.0, r1.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r2_size, SMP_CACHE_BYTES), Some(r1.0 - r2_size));
    assert_eq!(rgn(&mb.reserved, 0), (r1.0 - r2_size, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_top_down_second_fit_check()
#[test]
fn alloc_top_down_second_fit_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let r1 = (end_of_dram(&mb) - SZ_512, SZ_512);
    let r2 = (r1.0 - SZ_512, SZ_256);
    let r3_size = SZ_1K;
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r3_size, SMP_CACHE_BYTES), Some(r2.0 - r3_size));
    assert_eq!(rgn(&mb.reserved, 0), (r2.0 - r3_size, r2.1 + r3_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_in_between_generic_check()
#[test]
fn alloc_in_between_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let (gap_size, r3_size) = (SMP_CACHE_BYTES, SZ_64);
        // Just enough room between the two regions for the new one.
        let rgn_size = (MEM_SIZE - (2 * gap_size + r3_size)) / 2;
        let r1 = (end_of_dram(&mb) - (gap_size + rgn_size), rgn_size);
        let r2 = (start_of_dram(&mb) + gap_size, rgn_size);
        let total_size = r1.1 + r2.1 + r3_size;
        mb.reserve(r1.0, r1.1).expect("room");
        mb.reserve(r2.0, r2.1).expect("room");
        let got = memblock_alloc(&mut mb, r3_size, SMP_CACHE_BYTES);
        assert_eq!(got, Some(r2.0 + r2.1), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (r1.0 - r2.1 - r3_size, total_size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), total_size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_small_gaps_generic_check()
#[test]
fn alloc_small_gaps_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let (region_size, gap_size) = (SZ_1K, SZ_256);
        let mut region_end = start_of_dram(&mb);
        while region_end < end_of_dram(&mb) {
            mb.reserve(region_end + gap_size, region_size).expect("room");
            region_end += gap_size + region_size;
        }
        assert_eq!(memblock_alloc(&mut mb, region_size, SMP_CACHE_BYTES), None, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_all_reserved_generic_check()
#[test]
fn alloc_all_reserved_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        mb.reserve(start_of_dram(&mb), MEM_SIZE).expect("room");
        assert_eq!(memblock_alloc(&mut mb, SZ_256, SMP_CACHE_BYTES), None, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_no_space_generic_check()
#[test]
fn alloc_no_space_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let available_size = SZ_256;
        mb.reserve(start_of_dram(&mb), MEM_SIZE - available_size).expect("room");
        assert_eq!(memblock_alloc(&mut mb, SZ_1K, SMP_CACHE_BYTES), None, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_limited_space_generic_check()
#[test]
fn alloc_limited_space_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let available_size = SZ_256;
        mb.reserve(start_of_dram(&mb), MEM_SIZE - available_size).expect("room");
        let got = memblock_alloc(&mut mb, available_size, SMP_CACHE_BYTES);
        assert_eq!(got, Some(end_of_dram(&mb) - available_size), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (start_of_dram(&mb), MEM_SIZE), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), MEM_SIZE, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_no_memory_generic_check()
#[test]
fn alloc_no_memory_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = reset_memblock(direction);
        assert_eq!(memblock_alloc(&mut mb, SZ_1K, SMP_CACHE_BYTES), None, "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 0, "{direction:?}");
        assert_eq!(mb.reserved.total(), 0, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_too_large_generic_check()
#[test]
fn alloc_too_large_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let got = memblock_alloc(&mut mb, MEM_SIZE + SZ_2, SMP_CACHE_BYTES);
        assert_eq!(got, None, "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 0, "{direction:?}");
        assert_eq!(mb.reserved.total(), 0, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_api.c: alloc_bottom_up_simple_check()
#[test]
fn alloc_bottom_up_simple_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let start = start_of_dram(&mb);
    assert_eq!(memblock_alloc(&mut mb, SZ_2, SMP_CACHE_BYTES), Some(start));
    assert_eq!(rgn(&mb.reserved, 0), (start, SZ_2));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), SZ_2);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_bottom_up_disjoint_check()
#[test]
fn alloc_bottom_up_disjoint_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let r1 = (start_of_dram(&mb) + SZ_2, SZ_2);
    let (r2_size, alignment) = (SZ_16, SMP_CACHE_BYTES * 2);
    let expected_start = start_of_dram(&mb) + alignment;
    mb.reserve(r1.0, r1.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r2_size, alignment), Some(expected_start));
    assert_eq!(rgn(&mb.reserved, 0), r1);
    assert_eq!(rgn(&mb.reserved, 1), (expected_start, r2_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_bottom_up_before_check()
#[test]
fn alloc_bottom_up_before_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let (r1_size, r2_size) = (SZ_512, SZ_128);
    let total_size = r1_size + r2_size;
    mb.reserve(start_of_dram(&mb) + r1_size, r2_size).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r1_size, SMP_CACHE_BYTES), Some(start_of_dram(&mb)));
    assert_eq!(rgn(&mb.reserved, 0), (start_of_dram(&mb), total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_bottom_up_after_check()
#[test]
fn alloc_bottom_up_after_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let r1 = (start_of_dram(&mb) + SMP_CACHE_BYTES, SZ_64);
    let r2_size = SZ_512;
    let total_size = r1.1 + r2_size;
    mb.reserve(r1.0, r1.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r2_size, SMP_CACHE_BYTES), Some(r1.0 + r1.1));
    assert_eq!(rgn(&mb.reserved, 0), (r1.0, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/alloc_api.c: alloc_bottom_up_second_fit_check()
#[test]
fn alloc_bottom_up_second_fit_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let r1 = (start_of_dram(&mb), SZ_512);
    let r2 = (r1.0 + r1.1 + SZ_512, SZ_256);
    let r3_size = SZ_1K;
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    assert_eq!(memblock_alloc(&mut mb, r3_size, SMP_CACHE_BYTES), Some(r2.0 + r2.1));
    assert_eq!(rgn(&mb.reserved, 1), (r2.0, r2.1 + r3_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// ---------------------------------------------------------------------------------------
// alloc_helpers_api.c: memblock_alloc_from.
// ---------------------------------------------------------------------------------------

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_simple_generic_check()
#[test]
fn alloc_from_simple_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let size = SZ_16;
        let min_addr = end_of_dram(&mb) - SMP_CACHE_BYTES;
        let got = alloc_from(&mut mb, size, SMP_CACHE_BYTES, min_addr);
        assert_eq!(got, Some(min_addr), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (min_addr, size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_misaligned_generic_check()
#[test]
fn alloc_from_misaligned_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let size = SZ_32;
        let min_addr = end_of_dram(&mb) - (SMP_CACHE_BYTES * 2 - 1);
        let expected = end_of_dram(&mb) - SMP_CACHE_BYTES;
        let got = alloc_from(&mut mb, size, SMP_CACHE_BYTES, min_addr);
        assert_eq!(got, Some(expected), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (expected, size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_top_down_high_addr_check()
#[test]
fn alloc_from_top_down_high_addr_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_32;
    // Too close to the end of memory: the lower bound is dropped.
    let min_addr = end_of_dram(&mb) - SZ_16;
    let expected = end_of_dram(&mb) - SMP_CACHE_BYTES;
    assert_eq!(alloc_from(&mut mb, size, SMP_CACHE_BYTES, min_addr), Some(expected));
    assert_eq!(rgn(&mb.reserved, 0), (expected, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_top_down_no_space_above_check()
#[test]
fn alloc_from_top_down_no_space_above_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let (r1_size, r2_size) = (SZ_64, SZ_2);
    let total_size = r1_size + r2_size;
    let min_addr = end_of_dram(&mb) - SMP_CACHE_BYTES * 2;
    // No room above min_addr.
    mb.reserve(min_addr, r2_size).expect("room");
    assert_eq!(alloc_from(&mut mb, r1_size, SMP_CACHE_BYTES, min_addr), Some(min_addr - r1_size));
    assert_eq!(rgn(&mb.reserved, 0), (min_addr - r1_size, total_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), total_size);
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_top_down_min_addr_cap_check()
#[test]
fn alloc_from_top_down_min_addr_cap_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let r1_size = SZ_64;
    let start_addr = start_of_dram(&mb);
    let min_addr = start_addr - SMP_CACHE_BYTES * 3;
    mb.reserve(start_addr + r1_size, MEM_SIZE - r1_size).expect("room");
    assert_eq!(alloc_from(&mut mb, r1_size, SMP_CACHE_BYTES, min_addr), Some(start_addr));
    assert_eq!(rgn(&mb.reserved, 0), (start_addr, MEM_SIZE));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), MEM_SIZE);
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_bottom_up_high_addr_check()
#[test]
fn alloc_from_bottom_up_high_addr_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let size = SZ_32;
    let min_addr = end_of_dram(&mb) - SZ_8;
    let start = start_of_dram(&mb);
    assert_eq!(alloc_from(&mut mb, size, SMP_CACHE_BYTES, min_addr), Some(start));
    assert_eq!(rgn(&mb.reserved, 0), (start, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_bottom_up_no_space_above_check()
#[test]
fn alloc_from_bottom_up_no_space_above_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let r1_size = SZ_64;
    let min_addr = start_of_dram(&mb) + SZ_128;
    let r2_size = end_of_dram(&mb) - min_addr;
    // No room above min_addr.
    let r2 = (min_addr - SMP_CACHE_BYTES, r2_size);
    mb.reserve(r2.0, r2.1).expect("room");
    let start = start_of_dram(&mb);
    assert_eq!(alloc_from(&mut mb, r1_size, SMP_CACHE_BYTES, min_addr), Some(start));
    assert_eq!(rgn(&mb.reserved, 0), (start, r1_size));
    assert_eq!(rgn(&mb.reserved, 1), r2);
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1_size + r2_size);
}

// tools/testing/memblock/tests/alloc_helpers_api.c: alloc_from_bottom_up_min_addr_cap_check()
#[test]
fn alloc_from_bottom_up_min_addr_cap_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let r1_size = SZ_64;
    let start_addr = start_of_dram(&mb);
    let min_addr = start_addr - SMP_CACHE_BYTES * 3;
    assert_eq!(alloc_from(&mut mb, r1_size, SMP_CACHE_BYTES, min_addr), Some(start_addr));
    assert_eq!(rgn(&mb.reserved, 0), (start_addr, r1_size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), r1_size);
}

// ---------------------------------------------------------------------------------------
// alloc_nid_api.c, range tests: memblock_alloc_try_nid(_raw) and
// memblock_alloc_exact_nid_raw with NUMA_NO_NODE.
// ---------------------------------------------------------------------------------------

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_simple_check()
#[test]
fn alloc_nid_top_down_simple_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_128;
    let min_addr = start_of_dram(&mb) + SMP_CACHE_BYTES * 2;
    let max_addr = min_addr + SZ_512;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(max_addr - size));
    assert_eq!(rgn(&mb.reserved, 0), (max_addr - size, size), "ends at max_addr");
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_end_misaligned_check()
#[test]
fn alloc_nid_top_down_end_misaligned_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let (size, misalign) = (SZ_128, SZ_2);
    let min_addr = start_of_dram(&mb) + SMP_CACHE_BYTES * 2;
    let max_addr = min_addr + SZ_512 + misalign;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(max_addr - size - misalign));
    assert_eq!(rgn(&mb.reserved, 0), (max_addr - size - misalign, size));
    assert!(max_addr - misalign < max_addr, "ends before max_addr");
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_exact_address_generic_check()
#[test]
fn alloc_nid_exact_address_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let size = SZ_1K;
        let min_addr = start_of_dram(&mb) + SMP_CACHE_BYTES;
        let max_addr = min_addr + size;
        let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, Some(min_addr), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (min_addr, size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_narrow_range_check()
#[test]
fn alloc_nid_top_down_narrow_range_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_256;
    let min_addr = start_of_dram(&mb) + SZ_512;
    let max_addr = min_addr + SMP_CACHE_BYTES;
    // Too narrow: the lower bound is dropped.
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(max_addr - size));
    assert_eq!(rgn(&mb.reserved, 0), (max_addr - size, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_low_max_generic_check()
#[test]
fn alloc_nid_low_max_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let min_addr = start_of_dram(&mb);
        let max_addr = min_addr + SMP_CACHE_BYTES;
        let got = alloc_try_nid(&mut mb, SZ_1K, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, None, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_min_reserved_generic_check()
#[test]
fn alloc_nid_min_reserved_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let (r1_size, r2_size) = (SZ_128, SZ_64);
        let total_size = r1_size + r2_size;
        let max_addr = end_of_dram(&mb);
        let min_addr = max_addr - r2_size;
        let reserved_base = min_addr - r1_size;
        mb.reserve(reserved_base, r1_size).expect("room");
        let got = alloc_try_nid(&mut mb, r2_size, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, Some(min_addr), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (reserved_base, total_size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), total_size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_max_reserved_generic_check()
#[test]
fn alloc_nid_max_reserved_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let (r1_size, r2_size) = (SZ_64, SZ_128);
        let total_size = r1_size + r2_size;
        let max_addr = end_of_dram(&mb) - r1_size;
        let min_addr = max_addr - r2_size;
        mb.reserve(max_addr, r1_size).expect("room");
        let got = alloc_try_nid(&mut mb, r2_size, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, Some(min_addr), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (min_addr, total_size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), total_size, "{direction:?}");
    }
}

/// Two reserved regions around `[min_addr, max_addr)`: r1 high, r2 `gap` below it.
struct Borders {
    r1: (u64, u64),
    r2: (u64, u64),
    min_addr: u64,
    max_addr: u64,
}

fn reserve_borders(mb: &mut Memblock, gap: u64) -> Borders {
    let r1 = (end_of_dram(mb) - SMP_CACHE_BYTES * 2, SMP_CACHE_BYTES);
    let r2 = (r1.0 - (gap + SZ_128), SZ_128);
    mb.reserve(r1.0, r1.1).expect("room");
    mb.reserve(r2.0, r2.1).expect("room");
    Borders { r1, r2, min_addr: r2.0 + r2.1, max_addr: r1.0 }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_reserved_with_space_check()
#[test]
fn alloc_nid_top_down_reserved_with_space_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let (r3_size, gap_size) = (SZ_64, SMP_CACHE_BYTES);
    let Borders { r1, r2, min_addr, max_addr } = reserve_borders(&mut mb, r3_size + gap_size);
    let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(max_addr - r3_size));
    assert_eq!(rgn(&mb.reserved, 1), (max_addr - r3_size, r1.1 + r3_size));
    assert_eq!(rgn(&mb.reserved, 0), r2);
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_reserved_full_merge_generic_check()
#[test]
fn alloc_nid_reserved_full_merge_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let r3_size = SZ_64;
        let Borders { r1, r2, min_addr, max_addr } = reserve_borders(&mut mb, r3_size);
        let total_size = r1.1 + r2.1 + r3_size;
        let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, Some(min_addr), "{direction:?}");
        assert_eq!(rgn(&mb.reserved, 0), (r2.0, total_size), "{direction:?}");
        assert_eq!(cnt(&mb.reserved), 1, "{direction:?}");
        assert_eq!(mb.reserved.total(), total_size, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_reserved_no_space_check()
#[test]
fn alloc_nid_top_down_reserved_no_space_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let (r3_size, gap_size) = (SZ_256, SMP_CACHE_BYTES);
    let Borders { r1, r2, min_addr, max_addr } = reserve_borders(&mut mb, gap_size);
    // The gap is too small: the lower bound is dropped.
    let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(r2.0 - r3_size));
    assert_eq!(rgn(&mb.reserved, 1), r1);
    assert_eq!(rgn(&mb.reserved, 0), (r2.0 - r3_size, r2.1 + r3_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_reserved_all_generic_check()
#[test]
fn alloc_nid_reserved_all_generic_check() {
    for direction in BOTH_DIRECTIONS {
        let mut mb = setup_memblock(direction);
        let (r3_size, gap_size) = (SZ_256, SMP_CACHE_BYTES);
        let r1 = (end_of_dram(&mb) - SMP_CACHE_BYTES, SMP_CACHE_BYTES);
        let r2 = (start_of_dram(&mb), MEM_SIZE - (r1.1 + gap_size));
        let (min_addr, max_addr) = (r2.0 + r2.1, r1.0);
        mb.reserve(r1.0, r1.1).expect("room");
        mb.reserve(r2.0, r2.1).expect("room");
        let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
        assert_eq!(got, None, "{direction:?}");
    }
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_cap_max_check()
#[test]
fn alloc_nid_top_down_cap_max_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_256;
    let min_addr = end_of_dram(&mb) - SZ_1K;
    let max_addr = end_of_dram(&mb) + SZ_256;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(end_of_dram(&mb) - size));
    assert_eq!(rgn(&mb.reserved, 0), (end_of_dram(&mb) - size, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_top_down_cap_min_check()
#[test]
fn alloc_nid_top_down_cap_min_check() {
    let mut mb = setup_memblock(Direction::TopDown);
    let size = SZ_1K;
    let min_addr = start_of_dram(&mb) - SZ_256;
    let max_addr = end_of_dram(&mb);
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(end_of_dram(&mb) - size));
    assert_eq!(rgn(&mb.reserved, 0), (end_of_dram(&mb) - size, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_simple_check()
#[test]
fn alloc_nid_bottom_up_simple_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let size = SZ_128;
    let min_addr = start_of_dram(&mb) + SMP_CACHE_BYTES * 2;
    let max_addr = min_addr + SZ_512;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(min_addr));
    assert_eq!(rgn(&mb.reserved, 0), (min_addr, size));
    assert!(min_addr + size < max_addr, "ends before max_addr");
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_start_misaligned_check()
#[test]
fn alloc_nid_bottom_up_start_misaligned_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let (size, misalign) = (SZ_128, SZ_2);
    let min_addr = start_of_dram(&mb) + misalign;
    let max_addr = min_addr + SZ_512;
    let expected = min_addr + (SMP_CACHE_BYTES - misalign);
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(expected));
    assert_eq!(rgn(&mb.reserved, 0), (expected, size));
    assert!(expected + size < max_addr, "ends before max_addr");
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_narrow_range_check()
#[test]
fn alloc_nid_bottom_up_narrow_range_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let size = SZ_256;
    let min_addr = start_of_dram(&mb) + SZ_512;
    let max_addr = min_addr + SMP_CACHE_BYTES;
    let start = start_of_dram(&mb);
    // Too narrow: the lower bound is dropped.
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(start));
    assert_eq!(rgn(&mb.reserved, 0), (start, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_reserved_with_space_check()
#[test]
fn alloc_nid_bottom_up_reserved_with_space_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let (r3_size, gap_size) = (SZ_64, SMP_CACHE_BYTES);
    let Borders { r1, r2, min_addr, max_addr } = reserve_borders(&mut mb, r3_size + gap_size);
    let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(min_addr));
    assert_eq!(rgn(&mb.reserved, 1), (max_addr, r1.1));
    assert_eq!(rgn(&mb.reserved, 0), (r2.0, r2.1 + r3_size));
    assert_eq!(cnt(&mb.reserved), 2);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_reserved_no_space_check()
#[test]
fn alloc_nid_bottom_up_reserved_no_space_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let (r3_size, gap_size) = (SZ_256, SMP_CACHE_BYTES);
    let Borders { r1, r2, min_addr, max_addr } = reserve_borders(&mut mb, gap_size);
    let start = start_of_dram(&mb);
    // The gap is too small: the lower bound is dropped.
    let got = alloc_try_nid(&mut mb, r3_size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(start));
    assert_eq!(rgn(&mb.reserved, 0), (start, r3_size));
    assert_eq!(rgn(&mb.reserved, 1), r2);
    assert_eq!(rgn(&mb.reserved, 2), r1);
    assert_eq!(cnt(&mb.reserved), 3);
    assert_eq!(mb.reserved.total(), r1.1 + r2.1 + r3_size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_cap_max_check()
#[test]
fn alloc_nid_bottom_up_cap_max_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let size = SZ_256;
    let min_addr = start_of_dram(&mb) + SZ_1K;
    let max_addr = end_of_dram(&mb) + SZ_256;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(min_addr));
    assert_eq!(rgn(&mb.reserved, 0), (min_addr, size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}

// tools/testing/memblock/tests/alloc_nid_api.c: alloc_nid_bottom_up_cap_min_check()
#[test]
fn alloc_nid_bottom_up_cap_min_check() {
    let mut mb = setup_memblock(Direction::BottomUp);
    let size = SZ_1K;
    let min_addr = start_of_dram(&mb);
    let max_addr = end_of_dram(&mb) - SZ_256;
    let got = alloc_try_nid(&mut mb, size, SMP_CACHE_BYTES, min_addr, max_addr);
    assert_eq!(got, Some(start_of_dram(&mb)));
    assert_eq!(rgn(&mb.reserved, 0), (start_of_dram(&mb), size));
    assert_eq!(cnt(&mb.reserved), 1);
    assert_eq!(mb.reserved.total(), size);
}
