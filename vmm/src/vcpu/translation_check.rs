//! The walkers against KVM's own translation (`KVM_TRANSLATE`), at the guest's
//! translation checkpoint: the guest's walker on the addresses it reported, and the
//! host's walker (`shared::walk`, reading guest RAM from outside) on those and around
//! every mapped page: its first, middle and last byte, and the bytes just outside.

use super::RECORD_LIMIT;
use crate::inspect::RamReader;
use crate::outcome::{TranslationCheck, Walker};
use crate::report::Report;
use kvm_ioctls::VcpuFd;
use shared::walk::{for_each_leaf, translate, Leaf, Visitor, ALL_ADDRESSES};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// KVM's translation of `virt` on the vCPU's current tables.
fn kvm(vcpu: &VcpuFd, virt: u64) -> Option<u64> {
    vcpu.translate_gva(virt).ok().filter(|t| t.valid != 0).map(|t| t.physical_address)
}

/// Checks the guest's last reported translations and the host walker against KVM.
pub fn check(vcpu: &VcpuFd, mem: &GuestMemoryMmap, reports: &[Report]) -> Vec<TranslationCheck> {
    let Some(entries) = reports.iter().rev().find_map(|r| match r {
        Report::Translations { entries } => Some(entries),
        _ => None,
    }) else {
        log::warn!("the guest asked for a translation check without reporting translations");
        return Vec::new();
    };
    let mut checks: Vec<TranslationCheck> = entries
        .iter()
        .take(RECORD_LIMIT)
        .map(|entry| TranslationCheck {
            walker: Walker::Guest,
            virt: entry.virt,
            phys: entry.phys(),
            kvm: kvm(vcpu, entry.virt),
            page_size: entry.page_size,
        })
        .collect();
    let samples: Vec<u64> = entries.iter().map(|e| e.virt).collect();
    checks.extend(host_walker(vcpu, mem, samples));
    for check in checks.iter().filter(|c| !c.agrees()) {
        log::warn!(
            "{:?} walker and KVM disagree on {:#x}: walker {:x?}, KVM {:x?}",
            check.walker,
            check.virt,
            check.phys,
            check.kvm
        );
    }
    checks
}

/// The host walker against KVM on `samples` and around every mapped page, up to
/// [`RECORD_LIMIT`] addresses.
fn host_walker(vcpu: &VcpuFd, mem: &GuestMemoryMmap, mut addrs: Vec<u64>) -> Vec<TranslationCheck> {
    let Ok(sregs) = vcpu.get_sregs() else {
        log::warn!("cannot read the vCPU's CR3 to check the host walker");
        return Vec::new();
    };
    let mut ram = RamReader::mapped(mem);
    struct Around<'v>(&'v mut Vec<u64>);
    impl Visitor for Around<'_> {
        fn leaf(&mut self, leaf: Leaf) -> bool {
            let end = leaf.virt.wrapping_add(leaf.size);
            self.0.extend([
                leaf.virt,
                leaf.virt.wrapping_add(leaf.size / 2 + 8),
                end.wrapping_sub(1),
                end,
                leaf.virt.wrapping_sub(1),
            ]);
            self.0.len() < RECORD_LIMIT
        }
    }
    let mut budget = crate::inspect::budget_for(mem.iter().map(GuestMemoryRegion::len).sum());
    let _ = for_each_leaf(&mut ram, sregs.cr3, ALL_ADDRESSES, &mut budget, &mut Around(&mut addrs));
    addrs.extend([0, 0x0000_8000_0000_0000, u64::MAX]);
    addrs.truncate(RECORD_LIMIT);
    addrs
        .into_iter()
        .map(|virt| {
            let walked = translate(&mut ram, sregs.cr3, virt).ok();
            TranslationCheck {
                walker: Walker::Host,
                virt,
                phys: walked.map(|m| m.phys),
                kvm: kvm(vcpu, virt),
                page_size: walked.map_or(0, |m| m.page_size),
            }
        })
        .collect()
}
