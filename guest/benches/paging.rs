//! Our page-table mapper against the `x86_64` crate's `OffsetPageTable`, host-native, on
//! tables in a host arena: map, translate and unmap 1 GiB in 4 KiB pages, and 1 GiB in
//! 2 MiB pages; and fork's copy of 1 GiB of user mappings (`copy_present`, ours alone: the
//! crate has none). Figures are per page (criterion's throughput in elements).
//!
//! `cargo bench -p guest --bench paging`; figures and method in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function; the casts are of small
// constants.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use guest::paging::{
    Frame, Mapper, PageSize, PageTableEntry, PteFlags, TableAlloc, TableMemory, VirtPage,
};

const WRITABLE: PteFlags = PteFlags::WRITABLE;
use shared::addr::{PhysAddr as Phys, VirtAddr as Virt};
use std::hint::black_box;
use x86_64::structures::paging::{
    FrameAllocator, Mapper as _, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame,
    Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

/// Where the mapped range starts (virtual) and the frames it maps (physical).
const VIRT: u64 = 0xffff_c900_0000_0000;
const PHYS: u64 = 0x1_0000_0000;
const GIB: u64 = 1 << 30;
const PAGES_4K: u64 = GIB >> 12;
const PAGES_2M: u64 = GIB >> 21;
/// "Physical" address of the first arena table.
const ARENA_BASE: u64 = 0x1000_0000;
const ARENA_TABLES: usize = 1024;

/// Page tables in host memory for our mapper.
struct Arena {
    tables: Vec<[PageTableEntry; 512]>,
    used: Vec<u64>,
    free: Vec<usize>,
}

impl Arena {
    fn new() -> Self {
        Self {
            tables: Vec::with_capacity(ARENA_TABLES),
            used: Vec::with_capacity(ARENA_TABLES),
            free: Vec::new(),
        }
    }

    fn index(table: u64) -> usize {
        ((table - ARENA_BASE) >> 12) as usize
    }
}

impl TableMemory for Arena {
    unsafe fn entries(&mut self, table: Phys) -> &mut [PageTableEntry; 512] {
        &mut self.tables[Self::index(table.as_u64())]
    }
}

impl TableAlloc for Arena {
    fn used(&mut self, table: Phys) -> &mut u64 {
        &mut self.used[Self::index(table.as_u64())]
    }

    fn alloc_table(&mut self) -> Option<Phys> {
        let index = match self.free.pop() {
            Some(index) => {
                self.tables[index] = [PageTableEntry::UNUSED; 512];
                self.used[index] = 0;
                index
            }
            None => {
                self.tables.push([PageTableEntry::UNUSED; 512]);
                self.used.push(0);
                self.tables.len() - 1
            }
        };
        Some(Phys::new(ARENA_BASE + ((index as u64) << 12)))
    }

    fn free_table(&mut self, table: Phys) {
        self.free.push(Self::index(table.as_u64()));
    }
}

fn page(virt: u64, size: PageSize) -> VirtPage {
    VirtPage::new(Virt::new(virt), size).expect("aligned")
}

fn frame(phys: u64, size: PageSize) -> Frame {
    Frame::new(Phys::new(phys), size).expect("aligned")
}

fn ours() -> Mapper<Arena> {
    Mapper::create(Arena::new()).expect("root")
}

fn ours_mapped(size: PageSize) -> Mapper<Arena> {
    let mut mapper = ours();
    mapper.map_range(Virt::new(VIRT), Phys::new(PHYS), GIB, WRITABLE, size).expect("maps").ignore();
    mapper
}

/// Page tables in host memory for `OffsetPageTable`, which reaches "physical" address `p`
/// at `base + p - ARENA_BASE`.
struct OffsetArena {
    tables: Box<[PageTable]>,
    next: usize,
}

impl OffsetArena {
    fn new() -> Self {
        let tables: Box<[PageTable]> = (0..ARENA_TABLES).map(|_| PageTable::new()).collect();
        Self { tables, next: 1 }
    }

    fn mapper(&mut self) -> (OffsetPageTable<'_>, Frames<'_>) {
        let offset = VirtAddr::new(self.tables.as_ptr() as u64 - ARENA_BASE);
        let (root, _) = self.tables.split_at_mut(1);
        // SAFETY: the arena holds every table the mapper creates, at `offset + phys`.
        let table = unsafe { OffsetPageTable::new(&mut root[0], offset) };
        (table, Frames { next: &mut self.next })
    }
}

struct Frames<'a> {
    next: &'a mut usize,
}

// SAFETY: each frame is handed out once and lies in the arena.
unsafe impl FrameAllocator<Size4KiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if *self.next == ARENA_TABLES {
            return None;
        }
        let frame =
            PhysFrame::containing_address(PhysAddr::new(ARENA_BASE + ((*self.next as u64) << 12)));
        *self.next += 1;
        Some(frame)
    }
}

const FLAGS: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

fn offset_map_4k(arena: &mut OffsetArena) {
    let (mut table, mut frames) = arena.mapper();
    for i in 0..PAGES_4K {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(VIRT + (i << 12)));
        let frame = PhysFrame::containing_address(PhysAddr::new(PHYS + (i << 12)));
        // SAFETY: the frames are never accessed; the tables are the arena's.
        unsafe { table.map_to(page, frame, FLAGS, &mut frames) }.expect("maps").ignore();
    }
}

fn map_4k(c: &mut Criterion) {
    let mut group = c.benchmark_group("map 1 GiB in 4 KiB pages, per page");
    group.throughput(Throughput::Elements(PAGES_4K)).sample_size(10);
    group.bench_function("ours, map per page", |b| {
        b.iter_batched(
            ours,
            |mut m| {
                for i in 0..PAGES_4K {
                    m.map(
                        page(VIRT + (i << 12), PageSize::Size4K),
                        frame(PHYS + (i << 12), PageSize::Size4K),
                        WRITABLE,
                    )
                    .expect("maps")
                    .ignore();
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("ours, map_range", |b| {
        b.iter_batched(
            ours,
            |mut m| {
                m.map_range(Virt::new(VIRT), Phys::new(PHYS), GIB, WRITABLE, PageSize::Size4K)
                    .expect("maps")
                    .ignore();
                m
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("x86_64 OffsetPageTable, map_to", |b| {
        b.iter_batched(
            OffsetArena::new,
            |mut arena| {
                offset_map_4k(&mut arena);
                arena
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn translate_4k(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate every 4 KiB page of 1 GiB, per address");
    group.throughput(Throughput::Elements(PAGES_4K)).sample_size(20);
    let mut m = ours_mapped(PageSize::Size4K);
    group.bench_function("ours, translate per address", |b| {
        b.iter(|| {
            for i in 0..PAGES_4K {
                black_box(m.translate(Virt::new(VIRT + (i << 12) + 8)));
            }
        })
    });
    group.bench_function("ours, translate_each (sequential sweep)", |b| {
        b.iter(|| {
            m.translate_each(Virt::new(VIRT), PAGES_4K, |virt, t| {
                black_box((virt, t));
            })
        })
    });
    let mut arena = OffsetArena::new();
    offset_map_4k(&mut arena);
    let (table, _) = arena.mapper();
    group.bench_function("x86_64 OffsetPageTable, translate_addr", |b| {
        b.iter(|| {
            for i in 0..PAGES_4K {
                black_box(table.translate_addr(VirtAddr::new(VIRT + (i << 12) + 8)));
            }
        })
    });
    group.finish();
}

fn unmap_4k(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmap 1 GiB of 4 KiB pages, per page");
    group.throughput(Throughput::Elements(PAGES_4K)).sample_size(10);
    group.bench_function("ours, unmap per page (frees tables)", |b| {
        b.iter_batched(
            || ours_mapped(PageSize::Size4K),
            |mut m| {
                for i in 0..PAGES_4K {
                    m.unmap(Virt::new(VIRT + (i << 12))).expect("unmaps").1.ignore();
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("ours, unmap_range (frees tables)", |b| {
        b.iter_batched(
            || ours_mapped(PageSize::Size4K),
            |mut m| {
                m.unmap_range(Virt::new(VIRT), GIB).expect("unmaps").ignore();
                m
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("x86_64 OffsetPageTable, unmap (keeps tables)", |b| {
        b.iter_batched(
            || {
                let mut arena = OffsetArena::new();
                offset_map_4k(&mut arena);
                arena
            },
            |mut arena| {
                {
                    let (mut table, _) = arena.mapper();
                    for i in 0..PAGES_4K {
                        let page =
                            Page::<Size4KiB>::containing_address(VirtAddr::new(VIRT + (i << 12)));
                        table.unmap(page).expect("unmaps").1.ignore();
                    }
                }
                arena
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn map_unmap_2m(c: &mut Criterion) {
    let mut group = c.benchmark_group("map and unmap 1 GiB in 2 MiB pages, per page");
    group.throughput(Throughput::Elements(PAGES_2M));
    let mut m = ours();
    group.bench_function("ours, per page", |b| {
        b.iter(|| {
            for i in 0..PAGES_2M {
                m.map(
                    page(VIRT + (i << 21), PageSize::Size2M),
                    frame(PHYS + (i << 21), PageSize::Size2M),
                    WRITABLE,
                )
                .expect("maps")
                .ignore();
            }
            for i in 0..PAGES_2M {
                m.unmap(Virt::new(VIRT + (i << 21))).expect("unmaps").1.ignore();
            }
        })
    });
    group.bench_function("ours, map_range and unmap_range", |b| {
        b.iter(|| {
            m.map_range(Virt::new(VIRT), Phys::new(PHYS), GIB, WRITABLE, PageSize::Size2M)
                .expect("maps")
                .ignore();
            m.unmap_range(Virt::new(VIRT), GIB).expect("unmaps").ignore();
        })
    });
    let mut arena = OffsetArena::new();
    group.bench_function("x86_64 OffsetPageTable", |b| {
        b.iter(|| {
            let (mut table, mut frames) = arena.mapper();
            for i in 0..PAGES_2M {
                let page = Page::<Size2MiB>::containing_address(VirtAddr::new(VIRT + (i << 21)));
                let frame = PhysFrame::containing_address(PhysAddr::new(PHYS + (i << 21)));
                // SAFETY: the frames are never accessed; the tables are the arena's.
                unsafe { table.map_to(page, frame, FLAGS, &mut frames) }.expect("maps").ignore();
            }
            for i in 0..PAGES_2M {
                let page = Page::<Size2MiB>::containing_address(VirtAddr::new(VIRT + (i << 21)));
                table.unmap(page).expect("unmaps").1.ignore();
            }
        })
    });
    group.finish();
}

/// Where fork's benchmark maps its gigabyte: user space.
const USER_VIRT: u64 = 0x7f00_0000_0000;

/// A tree with 1 GiB of user memory mapped writable in pages of `size`.
fn user_mapped(size: PageSize) -> Mapper<Arena> {
    let mut mapper = ours();
    let flags = WRITABLE | PteFlags::USER;
    mapper
        .map_range(Virt::new(USER_VIRT), Phys::new(PHYS), GIB, flags, size)
        .expect("maps")
        .ignore();
    mapper
}

/// fork's page-table work for 1 GiB: copy every entry into a new tree and write-protect
/// both; alone, and with a reference taken per page (an increment in a host array, as the
/// kernel bumps `struct page`'s mapcount and refcount).
fn fork_1g(c: &mut Criterion) {
    for (size, pages, name) in
        [(PageSize::Size4K, PAGES_4K, "4 KiB"), (PageSize::Size2M, PAGES_2M, "2 MiB")]
    {
        let mut group = c.benchmark_group(format!("fork: copy 1 GiB mapped in {name} pages"));
        group.throughput(Throughput::Elements(pages)).sample_size(10);
        group.bench_function("ours, copy_present with write-protect (mapper alone)", |b| {
            b.iter_batched(
                || user_mapped(size),
                |mut m| {
                    let child = m.memory.alloc_table().expect("a root");
                    let mut shared = 0u64;
                    m.copy_present(child, Virt::new(USER_VIRT), GIB, true, &mut |_, _| shared += 1)
                        .expect("copies")
                        .ignore();
                    black_box(shared);
                    m
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(
            "ours, copy_present with write-protect and a reference per page",
            |b| {
                b.iter_batched(
                    || (user_mapped(size), vec![0u32; pages as usize]),
                    |(mut m, mut refs)| {
                        let child = m.memory.alloc_table().expect("a root");
                        let shift = if size == PageSize::Size4K { 12 } else { 21 };
                        m.copy_present(child, Virt::new(USER_VIRT), GIB, true, &mut |_, frame| {
                            refs[((frame.start().as_u64() - PHYS) >> shift) as usize] += 1;
                        })
                        .expect("copies")
                        .ignore();
                        (m, refs)
                    },
                    BatchSize::LargeInput,
                )
            },
        );
        group.finish();
    }
}

criterion_group!(benches, map_4k, translate_4k, unmap_4k, map_unmap_2m, fork_1g);
criterion_main!(benches);
