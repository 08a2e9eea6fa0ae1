//! The host side of a swap copy: the VMM's handling of one `SWAP_WRITE` or `SWAP_READ`
//! hypercall, from reading the request in guest RAM to the `pwrite`/`pread` of the page
//! (everything but the VM exit), on a 64 MiB swap file in the page cache, at random slots.
//!
//! `cargo bench -p vmm --bench swap`; the figures are in docs/PERFORMANCE.md.
// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shared::hypercall::{Request, SWAP_READ, SWAP_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::swap::SwapDevice;
use vmm::vcpu::hypercall::{dispatch, Hypercall};
use zerocopy::IntoBytes;

const SWAP: u64 = 64 << 20;
/// Pages per batch, each at its own slot.
const PAGES: u64 = 256;

fn bench(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("kvm-mm-bench-{}.swap", std::process::id()));
    let device = SwapDevice::create(&path, SWAP).expect("a swap device in the temp directory");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("RAM");
    mem.write_slice(&[0x5a; 1 << 20], GuestAddress(1 << 20)).expect("in RAM");
    // Slots spread over the device (a multiplicative hash of the page number).
    let slot = |i: u64| (i.wrapping_mul(0x9e37_79b9) >> 7) % device.slots();
    let mut group = c.benchmark_group("swap copy, host side");
    group.throughput(Throughput::Bytes(PAGES * 4096));
    for (name, nr) in [("SWAP_WRITE", SWAP_WRITE), ("SWAP_READ", SWAP_READ)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..PAGES {
                    let page = (1 << 20) + (i % 256) * 4096;
                    let request = Request { nr, kind: 0, arg: page, len: slot(i) };
                    mem.write_slice(request.as_bytes(), GuestAddress(0x1000)).expect("in RAM");
                    assert_eq!(dispatch(&mem, Some(&device), 0x1000), Hypercall::PageWork);
                }
            })
        });
    }
    group.finish();
    drop(device);
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
