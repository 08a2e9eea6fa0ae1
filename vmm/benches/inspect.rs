//! The inspector's costs, host-native, side by side with KVM's own translation:
//!
//! - one translation of a random mapped address: the host walker (`shared::walk`) against
//!   `KVM_TRANSLATE`, on the same tables (the VMM's boot tables of a fresh VM);
//! - a sequential sweep: every 4 KiB page of a 1 GiB guest's direct map, through the
//!   kernel's own tree, read from its RAM file;
//! - `pagetable` (the full `info mem` dump) and `check` of that populated 1 GiB guest;
//! - `ps` + `maps` + `check` of a guest stopped with 100 processes of 100 VMAs each
//!   (`many-processes`), from its RAM file while it waits at that checkpoint.
//!
//! Needs a usable /dev/kvm. `cargo bench -p vmm --bench inspect`; the method and figures
//! are in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shared::layout::{GIB, PAGE_OFFSET};
use shared::walk::translate;
use std::hint::black_box;
use std::time::Duration;
use vmm::inspect::{Command, Inspector, RamReader};
use vmm::{ExitReason, Vm, VmConfig};

/// xorshift64*: random addresses without a dependency.
fn addresses(count: usize, span: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            PAGE_OFFSET + x.wrapping_mul(0x2545_f491_4f6c_dd1d) % span
        })
        .collect()
}

fn walker_vs_kvm(c: &mut Criterion) {
    let vm = match Vm::new(&VmConfig { mem_size: GIB, ..VmConfig::default() }) {
        Ok(vm) => vm,
        Err(err) => panic!("the benchmark needs a usable /dev/kvm: {err}"),
    };
    let cr3 = shared::layout::BOOT_PML4;
    let addrs = addresses(4096, GIB);
    let mut ram = RamReader::mapped(vm.memory());
    for &a in &addrs {
        let kvm = vm.translate_gva(a).ok().flatten();
        assert_eq!(translate(&mut ram, cr3, a).ok().map(|m| m.phys), kvm, "{a:#x}");
    }
    let mut group = c.benchmark_group("translate one random address (boot tables, 2 MiB pages)");
    group.throughput(Throughput::Elements(addrs.len() as u64));
    group.bench_function("host walker", |b| {
        b.iter(|| {
            for &a in &addrs {
                black_box(translate(&mut ram, cr3, black_box(a)).ok());
            }
        })
    });
    group.sample_size(10).bench_function("KVM_TRANSLATE", |b| {
        b.iter(|| {
            for &a in &addrs {
                black_box(vm.translate_gva(black_box(a)).ok());
            }
        })
    });
    group.finish();
}

/// A 1 GiB guest left holding pages, slabs and vmalloc areas, in a RAM file.
fn populated_guest() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("kvm-mm-bench-{}", std::process::id()));
    let config = VmConfig {
        mem_size: GIB,
        mem_file: Some(path.clone()),
        cmdline: "workload=populate ops=400 seed=9".into(),
        timeout: Some(Duration::from_secs(120)),
        ..VmConfig::default()
    };
    match vmm::run(&config) {
        Ok(outcome) => assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }),
        Err(err) => panic!("the benchmark needs a usable /dev/kvm: {err}"),
    }
    path
}

fn inspect_1g(c: &mut Criterion) {
    let path = populated_guest();
    let open = || RamReader::open_file(&path).expect("the RAM file maps");
    let cr3 = Inspector::new(open()).snapshot(|view| Ok(view.info.cr3)).expect("published");

    let mut group = c.benchmark_group("1 GiB guest, its own tree, from its RAM file");
    let pages: Vec<u64> = (0..GIB / 4096).map(|i| PAGE_OFFSET + (1 << 20) + i * 4096).collect();
    let mut ram = open();
    group.throughput(Throughput::Elements(pages.len() as u64));
    group.bench_function("host walker, sequential sweep of the direct map", |b| {
        b.iter(|| {
            for &a in &pages {
                black_box(translate(&mut ram, cr3, black_box(a)).ok());
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    for (name, command) in [
        ("pagetable (info mem, whole address space)", Command::named("pagetable")),
        ("check", Command::named("check")),
    ] {
        let command = command.expect("a known command");
        group.bench_function(name, |b| {
            b.iter_batched(
                || Inspector::new(open()),
                |mut inspector| black_box(inspector.run(&command).expect("inspects")),
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("pagetable + check, one snapshot", |b| {
        b.iter_batched(
            || Inspector::new(open()),
            |mut inspector| {
                inspector
                    .snapshot(|view| {
                        let dump = vmm::inspect::pagetable::dump(
                            view,
                            view.info.cr3,
                            Default::default(),
                            false,
                        )?;
                        let check = vmm::inspect::check::check(view)?;
                        assert!(check.ok(), "{:?}", check.findings);
                        Ok(black_box((dump, check)))
                    })
                    .expect("inspects")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    let _ = std::fs::remove_file(&path);
}

/// `ps` + `maps` + `check` of a guest stopped at `many-processes`' checkpoint (100
/// processes, 10 000 VMAs), measured while it waits there, on its own RAM file as `vmm
/// inspect FILE` reads it, holes of never-written memory included (a dense copy would
/// make `check` read every free block that is known to be zero).
fn inspect_processes(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("kvm-mm-bench-procs-{}", std::process::id()));
    let config = VmConfig {
        mem_file: Some(path.clone()),
        cmdline: "workload=many-processes".into(),
        // The guest's timeout runs on while criterion measures at the checkpoint.
        timeout: Some(Duration::from_secs(600)),
        ..VmConfig::default()
    };
    let vm = match Vm::new(&config) {
        Ok(vm) => vm,
        Err(err) => panic!("the benchmark needs a usable /dev/kvm: {err}"),
    };
    let mut measured = false;
    let outcome = vm
        .run_with(|stop| {
            if stop.checkpoint.tag == shared::hypercall::checkpoint::USER {
                bench_processes(c, &path);
                measured = true;
            }
        })
        .expect("the guest runs");
    assert_eq!(outcome.exit, ExitReason::GuestExit { status: 0 }, "{}", outcome.console);
    assert!(measured, "the guest never stopped at its checkpoint");
    let _ = std::fs::remove_file(&path);
}

fn bench_processes(c: &mut Criterion, path: &std::path::Path) {
    let open = || RamReader::open_file(path).expect("the RAM file");
    let mut group = c.benchmark_group("100 processes, 10 000 VMAs, from the RAM file");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ps + maps + check, one snapshot", |b| {
        b.iter_batched(
            || Inspector::new(open()),
            |mut inspector| {
                inspector
                    .snapshot(|view| {
                        let tasks = vmm::inspect::process::tasks(view)?;
                        assert_eq!(tasks.len(), 100);
                        let maps = vmm::inspect::process::maps(view, None)?;
                        let vmas: usize = maps.iter().map(|m| m.lines.len() - 1).sum();
                        assert_eq!(vmas, 10_000);
                        let check = vmm::inspect::check::check(view)?;
                        assert!(check.ok(), "{:?}", check.findings);
                        Ok(black_box((tasks, maps, check)))
                    })
                    .expect("inspects")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, walker_vs_kvm, inspect_1g, inspect_processes);
criterion_main!(benches);
