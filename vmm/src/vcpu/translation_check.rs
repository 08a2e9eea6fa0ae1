//! The walkers against KVM's own translation (`KVM_TRANSLATE`), at the guest's
//! translation checkpoint: the guest's walker on the addresses it reported, and the
//! host's walker (`shared::walk`, reading guest RAM from outside) on those and around
//! every run of mapped pages (pages of one size and the same flags, virtually and
//! physically contiguous): its first and last byte, the bytes just outside, and the
//! middle of its first page and of the run. A call costs microseconds, so runs rather
//! than pages keep the check to a few hundred calls while reaching every region.

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

/// Pages checked inside a run besides its first.
const SPREAD: u64 = 8;

/// The host walker against KVM on `samples` and around every run of mapped pages, up to
/// [`RECORD_LIMIT`] addresses.
fn host_walker(vcpu: &VcpuFd, mem: &GuestMemoryMmap, mut addrs: Vec<u64>) -> Vec<TranslationCheck> {
    let Ok(sregs) = vcpu.get_sregs() else {
        log::warn!("cannot read the vCPU's CR3 to check the host walker");
        return Vec::new();
    };
    let mut ram = RamReader::mapped(mem);
    /// Runs of leaves: (first leaf, bytes, the physical address that continues it).
    #[derive(Default)]
    struct Runs(Vec<(Leaf, u64, u64)>);
    impl Visitor for Runs {
        fn leaf(&mut self, leaf: Leaf) -> bool {
            match self.0.last_mut() {
                Some((first, len, next_phys))
                    if first.virt.wrapping_add(*len) == leaf.virt
                        && *next_phys == leaf.phys
                        && first.size == leaf.size
                        && first.flags == leaf.flags =>
                {
                    *len += leaf.size;
                    *next_phys += leaf.size;
                }
                _ => self.0.push((leaf, leaf.size, leaf.phys.wrapping_add(leaf.size))),
            }
            self.0.len() < RECORD_LIMIT
        }
    }
    let mut budget = crate::inspect::budget_for(mem.iter().map(GuestMemoryRegion::len).sum());
    let mut runs = Runs::default();
    let _ = for_each_leaf(&mut ram, sregs.cr3, ALL_ADDRESSES, &mut budget, &mut runs);
    for (first, len, _) in runs.0 {
        let (start, end) = (first.virt, first.virt.wrapping_add(len));
        addrs.extend([
            start,
            start.wrapping_add(first.size / 2 + 8),
            end.wrapping_sub(1),
            end,
            start.wrapping_sub(1),
        ]);
        // And the middle of up to eight pages spread over the run.
        let pages = len / first.size;
        let step = pages.div_ceil(SPREAD).max(1);
        addrs.extend(
            (step..pages)
                .step_by(usize::try_from(step).unwrap_or(1))
                .map(|page| start.wrapping_add(page * first.size + first.size / 2 + 8)),
        );
    }
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
