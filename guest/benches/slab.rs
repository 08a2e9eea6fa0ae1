//! Our kmalloc (SLUB-style caches over our buddy allocator, debug off) against talc,
//! slabmalloc, linked_list_allocator and glibc malloc, host-native:
//!
//! - a hot pair: allocate and free 64 bytes;
//! - a random workload: 4096 operations on 4096 slots, each freeing the slot's block if
//!   it has one, else allocating 16–1024 bytes.
//!
//! `cargo bench -p guest --bench slab`; figures and method in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function; the casts are of small
// constants.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guest::buddy::{Buddy, SliceMemmap};
use guest::rng::Rng;
use guest::slab::{BuddyPages, Kmalloc};
use shared::page::Page;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;

const BASE_PFN: u64 = 1 << 20;
const PAGES: u64 = 16_384;
const ARENA: usize = (PAGES as usize) * 4096;
const SLOTS: usize = 4096;

fn arena() -> *mut u8 {
    let layout = Layout::from_size_align(ARENA, 4096).expect("valid layout");
    // SAFETY: a fresh allocation, leaked: each allocator under test owns one for good.
    let memory = unsafe { std::alloc::alloc(layout) };
    assert!(!memory.is_null(), "cannot allocate the arena");
    memory
}

/// Our kmalloc on our buddy allocator over 64 MiB of host memory.
fn ours() -> (Box<Kmalloc>, Box<BuddyPages<'static, SliceMemmap<'static>>>) {
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); PAGES as usize].into_boxed_slice());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    let base = (arena() as u64).wrapping_sub(BASE_PFN << 12);
    let buddy = Box::leak(Box::new(buddy));
    // SAFETY: the buddy allocator's frames are the leaked arena's pages, at this base.
    let pages = unsafe { BuddyPages::new(buddy, base) };
    (Box::new(Kmalloc::new(false).expect("caches")), Box::new(pages))
}

fn talc() -> talc::Talc<talc::ErrOnOom> {
    let mut talc = talc::Talc::new(talc::ErrOnOom);
    // SAFETY: the arena is ours alone.
    unsafe { talc.claim(talc::Span::from_base_size(arena(), ARENA)) }.expect("claims");
    talc
}

fn linked_list() -> linked_list_allocator::Heap {
    let mut heap = linked_list_allocator::Heap::empty();
    // SAFETY: the arena is ours alone.
    unsafe { heap.init(arena(), ARENA) };
    heap
}

/// slabmalloc's zone allocator, refilled with a fresh page whenever it runs out: a 4 KiB
/// `ObjectPage` for its small classes, a 2 MiB `LargeObjectPage` for the large ones.
struct Slabmalloc(slabmalloc::ZoneAllocator<'static>);

/// A leaked, zero-initialised, `size`-aligned page of `T` (slabmalloc's page types are
/// plain data that must be aligned to their size).
fn leaked_page<T: Default>(size: usize) -> &'static mut T {
    let layout = Layout::from_size_align(size, size).expect("valid layout");
    // SAFETY: a fresh allocation of `size` bytes (the page type's size), aligned to it,
    // written with a default page before the reference is made; it is leaked, so the zone
    // allocator owns it for good.
    unsafe {
        let raw = std::alloc::alloc(layout).cast::<T>();
        assert!(!raw.is_null(), "no page for slabmalloc");
        raw.write(T::default());
        &mut *raw
    }
}

impl Slabmalloc {
    fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        use slabmalloc::Allocator;
        loop {
            match self.0.allocate(layout) {
                Ok(ptr) => return ptr,
                Err(slabmalloc::AllocationError::OutOfMemory) => {
                    // SAFETY: the page is empty and the zone allocator's alone.
                    let small = unsafe { self.0.refill(layout, leaked_page(4096)) };
                    if small.is_err() {
                        // SAFETY: as above.
                        unsafe { self.0.refill_large(layout, leaked_page(2 << 20)) }
                            .expect("refill");
                    }
                }
                Err(err) => panic!("slabmalloc: {err:?}"),
            }
        }
    }

    fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        use slabmalloc::Allocator;
        self.0.deallocate(ptr, layout).expect("valid free");
    }
}

/// The random workload: (slot, size if the slot is empty).
fn workload() -> Vec<(usize, usize)> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    (0..SLOTS)
        .map(|_| {
            let value = rng.next_u64();
            ((value % SLOTS as u64) as usize, 16 + ((value >> 32) % 1009) as usize)
        })
        .collect()
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

fn hot_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc+free 64 bytes, hot");
    let (mut k, mut pages) = ours();
    group.bench_function("ours, kmalloc/kfree", |b| {
        b.iter(|| {
            let addr = k.kmalloc(&mut *pages, 64).expect("ok").expect("memory");
            // SAFETY: a live allocation, freed once.
            unsafe { k.kfree(&mut *pages, black_box(addr)) }.expect("valid free");
        })
    });
    let mut t = talc();
    group.bench_function("talc", |b| {
        b.iter(|| {
            // SAFETY: the allocation is freed right away with its layout.
            unsafe {
                let ptr = t.malloc(layout(64)).expect("memory");
                t.free(black_box(ptr), layout(64));
            }
        })
    });
    let mut slab = Slabmalloc(slabmalloc::ZoneAllocator::new());
    group.bench_function("slabmalloc", |b| {
        b.iter(|| {
            let ptr = slab.alloc(layout(64));
            slab.free(black_box(ptr), layout(64));
        })
    });
    let mut heap = linked_list();
    group.bench_function("linked_list_allocator", |b| {
        b.iter(|| {
            let ptr = heap.allocate_first_fit(layout(64)).expect("memory");
            // SAFETY: freed with its layout.
            unsafe { heap.deallocate(black_box(ptr), layout(64)) };
        })
    });
    group.bench_function("glibc malloc", |b| {
        b.iter(|| {
            // SAFETY: freed right away with its layout.
            unsafe {
                let ptr = System.alloc(layout(64));
                System.dealloc(black_box(ptr), layout(64));
            }
        })
    });
    group.finish();
}

fn random(c: &mut Criterion) {
    let ops = workload();
    let mut group = c.benchmark_group("random 16-1024 bytes, 4096 slots, per operation");
    group.throughput(Throughput::Elements(SLOTS as u64));

    let (mut k, mut pages) = ours();
    let mut slots = vec![0u64; SLOTS];
    group.bench_function("ours, kmalloc/kfree", |b| {
        b.iter(|| {
            for &(slot, size) in &ops {
                match slots[slot] {
                    0 => {
                        slots[slot] =
                            k.kmalloc(&mut *pages, size as u64).expect("ok").expect("memory")
                    }
                    addr => {
                        // SAFETY: a live allocation, freed once.
                        unsafe { k.kfree(&mut *pages, addr) }.expect("valid free");
                        slots[slot] = 0;
                    }
                }
            }
        })
    });

    let mut t = talc();
    let mut slots: Vec<Option<(NonNull<u8>, usize)>> = vec![None; SLOTS];
    group.bench_function("talc", |b| {
        b.iter(|| {
            for &(slot, size) in &ops {
                match slots[slot].take() {
                    // SAFETY: a live allocation of ours, freed with its layout.
                    Some((ptr, size)) => unsafe { t.free(ptr, layout(size)) },
                    None => {
                        // SAFETY: a fresh allocation, freed later with its layout.
                        let ptr = unsafe { t.malloc(layout(size)) }.expect("memory");
                        slots[slot] = Some((ptr, size));
                    }
                }
            }
        })
    });

    let mut slab = Slabmalloc(slabmalloc::ZoneAllocator::new());
    let mut slots: Vec<Option<(NonNull<u8>, usize)>> = vec![None; SLOTS];
    group.bench_function("slabmalloc", |b| {
        b.iter(|| {
            for &(slot, size) in &ops {
                match slots[slot].take() {
                    Some((ptr, size)) => slab.free(ptr, layout(size)),
                    None => slots[slot] = Some((slab.alloc(layout(size)), size)),
                }
            }
        })
    });

    let mut heap = linked_list();
    let mut slots: Vec<Option<(NonNull<u8>, usize)>> = vec![None; SLOTS];
    group.bench_function("linked_list_allocator", |b| {
        b.iter(|| {
            for &(slot, size) in &ops {
                match slots[slot].take() {
                    // SAFETY: a live allocation of ours, freed with its layout.
                    Some((ptr, size)) => unsafe { heap.deallocate(ptr, layout(size)) },
                    None => {
                        slots[slot] =
                            Some((heap.allocate_first_fit(layout(size)).expect("memory"), size))
                    }
                }
            }
        })
    });

    let mut slots: Vec<Option<(*mut u8, usize)>> = vec![None; SLOTS];
    group.bench_function("glibc malloc", |b| {
        b.iter(|| {
            for &(slot, size) in &ops {
                match slots[slot].take() {
                    // SAFETY: a live allocation of ours, freed with its layout.
                    Some((ptr, size)) => unsafe { System.dealloc(ptr, layout(size)) },
                    // SAFETY: a fresh allocation.
                    None => slots[slot] = Some((unsafe { System.alloc(layout(size)) }, size)),
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, hot_pair, random);
criterion_main!(benches);
