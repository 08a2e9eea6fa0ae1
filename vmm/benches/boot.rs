//! Host-side cost of booting a 256 MiB guest: setup up to the first `KVM_RUN`
//! (`Vm::new`), and the whole boot-and-exit run (`vmm::run`). Needs a usable /dev/kvm.
//!
//! `cargo bench -p vmm --bench boot`; the method and figures are in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use vmm::{ExitReason, Vm, VmConfig};

fn config() -> VmConfig {
    VmConfig { mem_size: 256 << 20, ..VmConfig::default() }
}

fn setup(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("setup");
    // Dropping a VM (untimed) costs about as much as creating one.
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("host setup to first KVM_RUN, 256 MiB", |b| {
        b.iter_with_large_drop(|| match Vm::new(&config) {
            Ok(vm) => vm,
            Err(err) => panic!("the benchmark needs a usable /dev/kvm: {err}"),
        })
    });
    group.finish();
}

fn boot_and_exit(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("whole run");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("boot, print e820, exit; 256 MiB", |b| {
        b.iter(|| match vmm::run(&config) {
            Ok(outcome) => assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }),
            Err(err) => panic!("the benchmark needs a usable /dev/kvm: {err}"),
        })
    });
    group.finish();
}

criterion_group!(benches, setup, boot_and_exit);
criterion_main!(benches);
