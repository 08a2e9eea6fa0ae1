//! `shared::workload::compute_loop` natively on the host, the same code `user-cost` times
//! at CPL3 in the guest: cycles per million rounds, read with `rdtsc` as the guest reads
//! them (the guest's TSC is the host's), the fastest of many runs.
//!
//! `cargo bench -p guest --bench compute`; the guest's figure is `loop=` in
//! `vmm run --workload user-cost`'s report. Method and figures in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn compute(c: &mut Criterion) {
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let mut fastest = u64::MAX;
    for run in 0..64 {
        let start = tsc();
        black_box(shared::workload::compute_loop(1_000_000, run));
        fastest = fastest.min(tsc() - start);
    }
    println!("compute_loop: {fastest} TSC cycles per million rounds, natively (fastest of 64)");
    c.bench_function("compute_loop, a million rounds", |b| {
        b.iter(|| black_box(shared::workload::compute_loop(1_000_000, black_box(7))))
    });
}

criterion_group!(benches, compute);
criterion_main!(benches);
