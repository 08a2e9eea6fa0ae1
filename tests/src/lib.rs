//! Helpers for the end-to-end tests in `tests/`: boot a guest through the `vmm` library and
//! compute, independently of the guest's code, what it should report.

use shared::boot::E820Entry;
use shared::mm::Region;
use std::path::PathBuf;
use std::time::Duration;
use vmm::{Outcome, Report, VmConfig};

/// A small guest running `workload` with a generous timeout.
pub fn config(workload: &str) -> VmConfig {
    VmConfig {
        mem_size: 64 << 20,
        cmdline: format!("workload={workload}"),
        timeout: Some(Duration::from_secs(120)),
        ..VmConfig::default()
    }
}

/// Boots `config` to its end. Fails the test in one sentence when KVM is not usable.
pub fn boot(config: &VmConfig) -> Outcome {
    match new_vm(config).run() {
        Ok(outcome) => outcome,
        Err(err) => panic!("the guest could not run: {err}"),
    }
}

/// A guest ready to run (for [`vmm::Vm::run_with`]). Fails the test in one sentence when
/// KVM is not usable.
pub fn new_vm(config: &VmConfig) -> vmm::Vm {
    match vmm::Vm::new(config) {
        Ok(vm) => vm,
        Err(err @ (vmm::Error::KvmOpen { .. } | vmm::Error::NotKvm { .. })) => {
            panic!("end-to-end tests need a usable /dev/kvm, and this machine has none: {err}")
        }
        Err(err) => panic!("the guest could not be started: {err}"),
    }
}

/// The virtual address of `symbol` in the guest kernel the VMM embeds.
pub fn kernel_symbol(symbol: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    // The parser reads the headers in place: give it an 8-byte-aligned copy.
    let kernel = vmm::vm::GUEST_KERNEL;
    let mut aligned = vec![0u64; kernel.len().div_ceil(8)];
    let bytes = &mut zerocopy::IntoBytes::as_mut_bytes(aligned.as_mut_slice())[..kernel.len()];
    bytes.copy_from_slice(kernel);
    let elf = object::File::parse(&*bytes).expect("the embedded kernel is an ELF");
    elf.symbols()
        .find(|s| s.name() == Ok(symbol))
        .unwrap_or_else(|| panic!("the kernel has no symbol {symbol}"))
        .address()
}

/// The line and column (1-based) of the first occurrence of `needle` in `source`.
pub fn position_of(source: &str, needle: &str) -> (u32, u32) {
    let at = source.find(needle).unwrap_or_else(|| panic!("{needle:?} is not in the source"));
    let line = source[..at].matches('\n').count() + 1;
    let column = at - source[..at].rfind('\n').map_or(0, |nl| nl + 1) + 1;
    (u32::try_from(line).expect("a short file"), u32::try_from(column).expect("a short line"))
}

/// The sanitised form of an e820 map, computed the slow, obvious way: cut the address
/// space at every entry boundary, give each piece the highest type covering it, and join
/// equal neighbours.
pub fn sanitized(raw: &[E820Entry]) -> Vec<E820Entry> {
    let mut cuts: Vec<u64> = raw.iter().flat_map(|e| [e.addr, e.addr + e.size]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<E820Entry> = Vec::new();
    for piece in cuts.windows(2) {
        let (start, end) = (piece[0], piece[1]);
        let typ =
            raw.iter().filter(|e| e.addr <= start && end <= e.addr + e.size).map(|e| e.typ).max();
        let Some(typ) = typ else { continue };
        match out.last_mut() {
            Some(last) if { last.typ } == typ && last.addr + last.size == start => {
                last.size += end - start
            }
            _ => out.push(E820Entry::new(start, end - start, typ)),
        }
    }
    out
}

/// Page frames in `memory` not touched by any `reserved` range: what the buddy allocator
/// must hold at boot. A page counts as reserved if any byte of it is.
pub fn free_pages(memory: &[Region], reserved: &[Region]) -> u64 {
    const PAGE: u64 = 4096;
    let mut free = 0;
    for region in memory {
        let (start, end) = (region.base.div_ceil(PAGE), (region.base + region.size) / PAGE);
        let mut pages = end.saturating_sub(start);
        for r in reserved {
            let (r_start, r_end) = (r.base / PAGE, (r.base + r.size).div_ceil(PAGE));
            let (from, to) = (r_start.max(start), r_end.min(end));
            pages -= to.saturating_sub(from);
        }
        free += pages;
    }
    free
}

/// The e820 RAM ranges trimmed to whole pages, as memblock must hold them.
pub fn ram_pages(e820: &[E820Entry]) -> Vec<Region> {
    e820.iter()
        .filter(|r| r.typ == shared::boot::E820_TYPE_RAM)
        .filter_map(|r| {
            let (base, end) = (r.addr.next_multiple_of(4096), (r.addr + r.size) / 4096 * 4096);
            (base < end).then_some(Region { base, size: end - base })
        })
        .collect()
}

/// A fresh path under the system's temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvm-mm-{}-{name}", std::process::id()))
}

/// The texts the guest's user programs reported through our system call, in order.
pub fn user_reports(outcome: &Outcome) -> Vec<&str> {
    outcome
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::User { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
