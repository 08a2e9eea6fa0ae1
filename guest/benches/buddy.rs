//! Our buddy allocator against buddy_system_allocator's `FrameAllocator` and `Heap`,
//! host-native, over 1 GiB (262 144 page frames), in a warm steady state:
//!
//! - an order-0 allocate+free pair (ours through the per-CPU list and through the buddy
//!   lists);
//! - a mixed-order random workload: 4096 operations on 256 slots, each freeing the slot's
//!   block if it holds one, else allocating a block of random order 0–5; then the same
//!   with orders 0–3 only and 4–5 only; the loop with no allocator gives its own cost.
//!
//! The mixed workload lives in `support/mix.rs`, shared with the `buddy_mix` example.
//!
//! `cargo bench -p guest --bench buddy`; figures and method in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

#[path = "support/mix.rs"]
mod mix;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use guest::buddy::Watermark;
use mix::{byte_heap, frame_allocator, ours, page_layout, workload, Counter, Mix, OPS};
use shared::page::ZoneType;
use std::hint::black_box;

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
            let mut mix = Mix::new(Counter::default());
            group.bench_function("workload loop alone", |b| b.iter(|| mix.run(&ops)));
        }
        let mut mix = Mix::new(ours());
        group.bench_function("ours", |b| b.iter(|| mix.run(&ops)));
        if whole_mix {
            let mut mix = Mix::new(frame_allocator());
            group.bench_function("buddy_system_allocator FrameAllocator", |b| {
                b.iter(|| mix.run(&ops));
            });
        }
        let mut mix = Mix::new(byte_heap());
        group.bench_function("buddy_system_allocator Heap", |b| b.iter(|| mix.run(&ops)));
        group.finish();
    }
}

criterion_group!(benches, order0_pair, mixed_random);
criterion_main!(benches);
