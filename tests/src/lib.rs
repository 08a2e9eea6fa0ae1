//! Helpers for the end-to-end tests in `tests/`: boot a guest through the `vmm` library and
//! compute, independently of the guest's code, what it should report.

use shared::boot::E820Entry;
use std::path::PathBuf;
use std::time::Duration;
use vmm::report::E820Range;
use vmm::{Outcome, VmConfig};

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
    match vmm::run(config) {
        Ok(outcome) => outcome,
        Err(err @ (vmm::Error::KvmOpen { .. } | vmm::Error::NotKvm { .. })) => {
            panic!("end-to-end tests need a usable /dev/kvm, and this machine has none: {err}")
        }
        Err(err) => panic!("the guest could not be started: {err}"),
    }
}

/// The sanitised form of an e820 map, computed the slow, obvious way: cut the address
/// space at every entry boundary, give each piece the highest type covering it, and join
/// equal neighbours.
pub fn sanitized(raw: &[E820Entry]) -> Vec<E820Range> {
    let mut cuts: Vec<u64> = raw.iter().flat_map(|e| [e.addr, e.addr + e.size]).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<E820Range> = Vec::new();
    for piece in cuts.windows(2) {
        let (start, end) = (piece[0], piece[1]);
        let typ = raw
            .iter()
            .filter(|e| e.addr <= start && end <= e.addr + e.size)
            .map(|e| e.typ)
            .max();
        let Some(typ) = typ else { continue };
        match out.last_mut() {
            Some(last) if last.typ == typ && last.addr + last.size == start => {
                last.size += end - start
            }
            _ => out.push(E820Range {
                addr: start,
                size: end - start,
                typ,
            }),
        }
    }
    out
}

/// A fresh path under the system's temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kvm-mm-{}-{name}", std::process::id()))
}
