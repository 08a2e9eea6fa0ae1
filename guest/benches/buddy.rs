//! Our buddy allocator against buddy_system_allocator's `FrameAllocator` and `Heap`,
//! host-native, over 1 GiB (262 144 page frames), in a warm steady state:
//!
//! - an order-0 allocate+free pair (ours through the per-CPU list and through the buddy
//!   lists);
//! - a mixed-order random workload: 4096 operations on 256 slots, each freeing the slot's
//!   block if it holds one, else allocating a block of random order 0–5; then the same
//!   with orders 0–3 only and 4–5 only; the loop with no allocator gives its own cost.
//!
//! `cargo bench -p guest --bench buddy`; figures and method in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function; the casts are of small
// constants and of values reduced modulo small bounds.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use buddy_system_allocator::{FrameAllocator, Heap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guest::buddy::{Buddy, SliceMemmap, Watermark};
use guest::rng::Rng;
use shared::page::{Page, ZoneType};
use std::alloc::Layout;
use std::hint::black_box;
use std::ops::Range;
use std::ptr::NonNull;

const PAGES: u64 = 1 << 18;
/// Page frames from 4 GiB: ZONE_NORMAL.
const BASE_PFN: u64 = 1 << 20;
const SLOTS: usize = 256;
const OPS: usize = 4096;

fn ours() -> Buddy<SliceMemmap<'static>> {
    let pages: &'static mut [Page] =
        Box::leak(vec![Page::default(); PAGES as usize].into_boxed_slice());
    let mut buddy = Buddy::new(SliceMemmap { base_pfn: BASE_PFN, pages });
    buddy.add_present(BASE_PFN, BASE_PFN + PAGES);
    buddy.hand_off(BASE_PFN, BASE_PFN + PAGES);
    buddy.setup_watermarks();
    buddy
}

fn frame_allocator() -> FrameAllocator<32> {
    let mut frames = FrameAllocator::new();
    frames.add_frame(BASE_PFN as usize, (BASE_PFN + PAGES) as usize);
    frames
}

fn byte_heap() -> Heap<32> {
    let bytes = (PAGES as usize) * 4096;
    let layout = Layout::from_size_align(bytes, 4096).expect("valid layout");
    // SAFETY: a fresh allocation of `bytes` that is leaked, so the heap owns it for good.
    let start = unsafe { std::alloc::alloc(layout) } as usize;
    assert_ne!(start, 0, "cannot allocate the heap's memory");
    let mut heap = Heap::empty();
    // SAFETY: `start..start + bytes` is memory nothing else uses.
    unsafe { heap.add_to_heap(start, start + bytes) };
    heap
}

fn page_layout(order: u32) -> Layout {
    Layout::from_size_align(4096 << order, 4096 << order).expect("valid layout")
}

/// The random workload's operations: (slot, order if the slot is empty), orders uniform in
/// `orders`.
fn workload(orders: Range<u32>) -> Vec<(usize, u32)> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let span = u64::from(orders.end - orders.start);
    (0..OPS)
        .map(|_| {
            let value = rng.next_u64();
            ((value % SLOTS as u64) as usize, orders.start + ((value >> 32) % span) as u32)
        })
        .collect()
}

fn order0_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("order-0 alloc+free pair");
    // Warm: one page is held, so a pair splits and merges nothing (a steady state).
    let mut buddy = ours();
    let _held = buddy.alloc_page(ZoneType::Normal);
    group.bench_function("ours, per-CPU list", |b| {
        b.iter(|| {
            let pfn = buddy.alloc_page(ZoneType::Normal).expect("page");
            buddy.free_page(black_box(pfn)).expect("valid free");
        })
    });
    let mut buddy = ours();
    let _held = buddy.alloc(0, ZoneType::Normal, Watermark::Min);
    group.bench_function("ours, buddy lists, warm", |b| {
        b.iter(|| {
            let pfn = buddy.alloc(0, ZoneType::Normal, Watermark::Min).expect("page");
            buddy.free(black_box(pfn), 0).expect("valid free");
        })
    });
    let mut frames = frame_allocator();
    let _held = frames.alloc(1);
    group.bench_function("buddy_system_allocator FrameAllocator, warm", |b| {
        b.iter(|| {
            let frame = frames.alloc(1).expect("frame");
            frames.dealloc(black_box(frame), 1);
        })
    });
    let mut heap = byte_heap();
    let _held = heap.alloc(page_layout(0));
    group.bench_function("buddy_system_allocator Heap, warm", |b| {
        b.iter(|| {
            let ptr = heap.alloc(page_layout(0)).expect("page");
            heap.dealloc(black_box(ptr), page_layout(0));
        })
    });
    // Cold: memory is whole blocks of the largest order, so every pair splits them down
    // and merges them back up.
    let mut buddy = ours();
    group.bench_function("ours, buddy lists, from whole blocks", |b| {
        b.iter(|| {
            let pfn = buddy.alloc(0, ZoneType::Normal, Watermark::Min).expect("page");
            buddy.free(black_box(pfn), 0).expect("valid free");
        })
    });
    let mut frames = frame_allocator();
    group.bench_function("buddy_system_allocator FrameAllocator, from one block", |b| {
        b.iter(|| {
            let frame = frames.alloc(1).expect("frame");
            frames.dealloc(black_box(frame), 1);
        })
    });
    group.finish();
}

fn mixed_random(c: &mut Criterion) {
    // The whole mix, then its two halves: orders the per-CPU lists serve, and orders that
    // go to the buddy lists.
    for (name, orders) in [("0-5", 0..6), ("0-3", 0..4), ("4-5", 4..6)] {
        let ops = workload(orders.clone());
        let mut group = c.benchmark_group(format!("mixed orders {name}, random, per operation"));
        group.throughput(Throughput::Elements(OPS as u64));
        let whole_mix = orders == (0..6);

        if whole_mix {
            // The loop and slot bookkeeping alone, with a counter for an allocator: what
            // every row spends besides its allocator.
            let mut slots: Vec<Option<(u64, u32)>> = vec![None; SLOTS];
            let mut next = 0u64;
            group.bench_function("workload loop alone", |b| {
                b.iter(|| {
                    for &(slot, order) in &ops {
                        match slots[slot].take() {
                            Some(block) => _ = black_box(block),
                            None => {
                                next += 1;
                                slots[slot] = Some((black_box(next), order));
                            }
                        }
                    }
                })
            });
        }

        let mut buddy = ours();
        let mut slots: Vec<Option<(u64, u32)>> = vec![None; SLOTS];
        group.bench_function("ours", |b| {
            b.iter(|| {
                for &(slot, order) in &ops {
                    match slots[slot].take() {
                        Some((pfn, order)) => buddy.free_pages(pfn, order).expect("valid free"),
                        None => {
                            let pfn = buddy.alloc_pages(order, ZoneType::Normal).expect("block");
                            slots[slot] = Some((pfn, order));
                        }
                    }
                }
            })
        });

        if whole_mix {
            let mut frames = frame_allocator();
            let mut slots: Vec<Option<(usize, u32)>> = vec![None; SLOTS];
            group.bench_function("buddy_system_allocator FrameAllocator", |b| {
                b.iter(|| {
                    for &(slot, order) in &ops {
                        match slots[slot].take() {
                            Some((frame, order)) => frames.dealloc(frame, 1 << order),
                            None => {
                                let frame = frames.alloc(1 << order).expect("frames");
                                slots[slot] = Some((frame, order));
                            }
                        }
                    }
                })
            });
        }

        let mut heap = byte_heap();
        let mut slots: Vec<Option<(NonNull<u8>, u32)>> = vec![None; SLOTS];
        group.bench_function("buddy_system_allocator Heap", |b| {
            b.iter(|| {
                for &(slot, order) in &ops {
                    match slots[slot].take() {
                        Some((ptr, order)) => heap.dealloc(ptr, page_layout(order)),
                        None => {
                            let ptr = heap.alloc(page_layout(order)).expect("block");
                            slots[slot] = Some((ptr, order));
                        }
                    }
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, order0_pair, mixed_random);
criterion_main!(benches);
