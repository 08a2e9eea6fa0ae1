//! The VMA tree against what a user would pick instead: a `BTreeMap` keyed by VMA end (the
//! usual interval map) and the `rangemap` crate. 10 000 one-page VMAs with one-page gaps,
//! so nothing merges; find, and remove + insert of the same VMA, at random positions.
//!
//! `cargo bench -p guest --bench vma`; figures and method in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function; VMA numbers are below 10 000.
#![allow(missing_docs, clippy::cast_possible_truncation)]

use criterion::{criterion_group, criterion_main, Criterion};
use guest::rng::Rng;
use guest::vma::tree::VmaTree;
use rangemap::RangeMap;
use shared::process::{Vma, VmaKind};
use std::collections::BTreeMap;
use std::hint::black_box;

const VMAS: u64 = 10_000;
const PAGE: u64 = 4096;
const BASE: u64 = 0x4000_0000;
/// Random positions per batch: enough to defeat the branch predictor's memory of a path.
const PROBES: usize = 4096;

fn vma(i: u64) -> Vma {
    let start = BASE + 2 * i * PAGE;
    Vma::new(start, start + PAGE, 0x73, VmaKind::Anonymous)
}

/// Addresses inside random VMAs, and the VMA numbers.
fn probes() -> Vec<(u64, u64)> {
    let mut rng = Rng::new(7);
    (0..PROBES)
        .map(|_| {
            let i = rng.below(VMAS);
            (vma(i).start + rng.below(PAGE), i)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let probes = probes();
    let mut tree = VmaTree::new();
    let indices: Vec<u32> = (0..VMAS).map(|i| tree.insert(vma(i))).collect();
    let mut btree: BTreeMap<u64, Vma> = (0..VMAS).map(|i| (vma(i).end, vma(i))).collect();
    let mut ranges: RangeMap<u64, u64> =
        (0..VMAS).map(|i| (vma(i).start..vma(i).end, 0x73)).collect();

    let mut group = c.benchmark_group("vma find (10 000 VMAs)");
    group.throughput(criterion::Throughput::Elements(PROBES as u64));
    group.bench_function("VmaTree", |b| {
        b.iter(|| {
            for &(addr, _) in &probes {
                black_box(tree.find(black_box(addr)));
            }
        })
    });
    group.bench_function("BTreeMap by end", |b| {
        b.iter(|| {
            for &(addr, _) in &probes {
                black_box(btree.range(black_box(addr) + 1..).next());
            }
        })
    });
    group.bench_function("rangemap", |b| {
        b.iter(|| {
            for &(addr, _) in &probes {
                black_box(ranges.get_key_value(&black_box(addr)));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("vma remove + insert (10 000 VMAs)");
    group.throughput(criterion::Throughput::Elements(PROBES as u64));
    let mut indices = indices;
    group.bench_function("VmaTree", |b| {
        b.iter(|| {
            for &(_, i) in &probes {
                let slot = &mut indices[i as usize];
                let removed = tree.remove(*slot);
                *slot = tree.insert(black_box(removed));
            }
        })
    });
    group.bench_function("BTreeMap by end", |b| {
        b.iter(|| {
            for &(_, i) in &probes {
                let v = vma(i);
                let removed = btree.remove(&v.end);
                btree.insert(v.end, black_box(removed.unwrap_or(v)));
            }
        })
    });
    group.bench_function("rangemap", |b| {
        b.iter(|| {
            for &(_, i) in &probes {
                let v = vma(i);
                ranges.remove(v.start..v.end);
                ranges.insert(v.start..v.end, black_box(0x73));
            }
        })
    });
    group.finish();
    tree.validate().expect("the tree is still sound after the benchmark");
}

criterion_group!(benches, bench);
criterion_main!(benches);
