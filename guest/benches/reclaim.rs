//! Reclaim's own cost, host-native on the lib code: `shrink` of 4 096 anonymous pages to
//! swap, per page reclaimed. The swap device's writes are counted, not made (the host's
//! side of a copy is `vmm`'s `swap` bench), so this is the kernel's part: the LRU scan,
//! the reverse-map walks (Accessed bits, then the unmapping), slot allocation and the
//! frees.
//!
//! Cases: pages mapped once or shared by two processes (fork), and each either fresh (on
//! the active list, where a new page starts, its Accessed bit set by its fault: aged onto
//! the inactive list, then reclaimed) or referenced again after aging (activated at its
//! first scan, aged again, then reclaimed: two scans a page).
//!
//! `cargo bench -p guest --bench reclaim`; figures and method in docs/PERFORMANCE.md.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use guest::anon::{map_new, share, AnonMemory};
use guest::lru::LruMemory;
use guest::paging::{
    Mapper, PageSize, PageTableEntry, PteFlags, TableAlloc, TableMemory, VirtPage,
};
use guest::reclaim::{deactivate, shrink, Rmap};
use guest::swap_map::SwapMap;
use guest::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::mm::Lruvec;
use shared::page::Page;
use std::hint::black_box;

const PAGES: u64 = 4096;
const BASE: u64 = 0x40_0000;
/// Data frames are pfns 0.. of `pages`; tables live above, in their own vector.
const TABLE_BASE: u64 = 1 << 40;
const RW: PteFlags = PteFlags::USER.union(PteFlags::WRITABLE);

/// Memory for the benchmark: descriptors in a vector by pfn, frames from a free stack,
/// tables in host memory, a swap map and a device that only counts writes.
struct Memory {
    pages: Vec<Page>,
    free: Vec<u64>,
    tables: Vec<[PageTableEntry; 512]>,
    used: Vec<u64>,
    free_tables: Vec<usize>,
    lruvec: Lruvec,
    swap: SwapMap,
    writes: u64,
    group: u32,
}

impl Memory {
    fn new(frames: u64) -> Self {
        Self {
            pages: vec![Page::default(); frames as usize],
            free: (0..frames).rev().collect(),
            tables: Vec::new(),
            used: Vec::new(),
            free_tables: Vec::new(),
            lruvec: Lruvec::EMPTY,
            swap: SwapMap::new(2 * frames as usize),
            writes: 0,
            group: 0,
        }
    }

    fn table(table: PhysAddr) -> usize {
        ((table.as_u64() - TABLE_BASE) >> 12) as usize
    }
}

impl TableMemory for Memory {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        &mut self.tables[Self::table(table)]
    }
}

impl TableAlloc for Memory {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        &mut self.used[Self::table(table)]
    }
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let index = self.free_tables.pop().unwrap_or_else(|| {
            self.tables.push([PageTableEntry::UNUSED; 512]);
            self.used.push(0);
            self.tables.len() - 1
        });
        Some(PhysAddr::new(TABLE_BASE + ((index as u64) << 12)))
    }
    fn free_table(&mut self, table: PhysAddr) {
        self.free_tables.push(Self::table(table));
    }
    fn swap_entry_dropped(&mut self, entry: PageTableEntry) {
        guest::reclaim::drop_entry(self, entry);
    }
    fn swap_entry_copied(&mut self, entry: PageTableEntry) {
        guest::reclaim::dup_entry(self, entry);
    }
}

impl VmallocMemory for Memory {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        self.free.pop().map(|pfn| PhysAddr::new(pfn << 12))
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        self.free.push(frame.pfn());
    }
}

impl LruMemory for Memory {
    fn lru_page(&mut self, pfn: u64) -> Option<&mut Page> {
        self.pages.get_mut(pfn as usize)
    }
    fn lruvec(&mut self) -> &mut Lruvec {
        &mut self.lruvec
    }
}

impl AnonMemory for Memory {
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page> {
        self.pages.get_mut(frame.pfn() as usize)
    }
    fn anon_vma(&self) -> u32 {
        self.group
    }
    fn zero_frame(&mut self, _frame: PhysAddr) -> bool {
        false
    }
    fn copy_frame(&mut self, _from: PhysAddr, _to: PhysAddr) {}
    fn alloc_huge(&mut self) -> Option<PhysAddr> {
        None
    }
    fn free_huge(&mut self, _block: PhysAddr) {}
    fn split_huge(&mut self, _block: PhysAddr) {}
    fn swap_map(&mut self) -> Option<&mut SwapMap> {
        Some(&mut self.swap)
    }
    fn swap_write(&mut self, pages: &[(PhysAddr, u64)]) -> bool {
        self.writes += pages.len() as u64;
        true
    }
}

/// The state a case starts from: `PAGES` pages mapped by one process, or by it and a
/// forked child, each entry's Accessed bit set (its fault's reference); if `referenced`,
/// aged onto the inactive list and referenced again.
fn populated(sharers: usize, referenced: bool) -> (Mapper<Memory>, Rmap, PhysAddr) {
    let mut tree = Mapper::create(Memory::new(PAGES + 64)).expect("a root");
    let home = tree.root();
    let mut rmap = Rmap::default();
    let root = tree.memory.alloc_table().expect("a root");
    // SAFETY: trees of this memory, alive for the whole case.
    tree.memory.group = unsafe { rmap.add(root, None) }.expect("room");
    // SAFETY: as above.
    unsafe { tree.set_root(root) };
    for page in 0..PAGES {
        let virt =
            VirtPage::new(VirtAddr::new(BASE + page * 4096), PageSize::Size4K).expect("a page");
        map_new(&mut tree, virt, RW).expect("maps");
    }
    if sharers == 2 {
        let child = tree.memory.alloc_table().expect("a root");
        tree.copy_present(child, VirtAddr::new(0), 1 << 47, true, &mut |m, f| share(m, f))
            .expect("copies")
            .ignore();
        // SAFETY: as above.
        unsafe { rmap.add(child, Some(tree.memory.group)) }.expect("room");
    }
    let touch = |tree: &mut Mapper<Memory>| {
        for page in 0..PAGES {
            let entry = tree.pte(VirtAddr::new(BASE + page * 4096)).expect("mapped");
            *entry = PageTableEntry::from_raw(entry.raw() | PteFlags::ACCESSED.bits());
        }
    };
    touch(&mut tree);
    if referenced {
        deactivate(&mut tree, &mut rmap, PAGES as usize);
        touch(&mut tree);
    }
    // SAFETY: as above.
    unsafe { tree.set_root(home) };
    (tree, rmap, home)
}

fn reclaim(c: &mut Criterion) {
    let mut group = c.benchmark_group("reclaim 4096 pages to swap, per page");
    group.throughput(Throughput::Elements(PAGES)).sample_size(20);
    for (name, sharers, referenced) in [
        ("mapped once, fresh", 1, false),
        ("mapped once, referenced after aging", 1, true),
        ("shared by two, fresh", 2, false),
        ("shared by two, referenced after aging", 2, true),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || populated(sharers, referenced),
                |(mut tree, mut rmap, _)| {
                    let (done, flush) = shrink(&mut tree, &mut rmap, PAGES, 4 * PAGES);
                    flush.ignore();
                    assert_eq!(done.reclaimed, PAGES, "{done:?}");
                    black_box((tree, rmap))
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, reclaim);
criterion_main!(benches);
