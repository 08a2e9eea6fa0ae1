//! The guest's translations of a spread of addresses, walked by the `guest::paging` walker
//! over the live page tables, for the VMM to check against KVM's own translation; and the
//! tree's statistics.

use super::direct_map;
use super::setup::Mm;
use super::tables::{stack_guard, KernelImage};
use super::vmemmap::address;
use crate::hypercall;
use crate::ReportBuf;
use shared::addr::VirtAddr;
use shared::hypercall::{checkpoint, GuestTranslation, PageTablesReport, ReportKind, UNMAPPED};
use shared::layout::{BOOT_MAP_SIZE, PAGE_SIZE, ZERO_PAGE};

/// Addresses worth checking: every kind of mapping the kernel has made, each page size,
/// and addresses that must be unmapped.
fn addresses(mm: &Mm, out: &mut [u64; 64]) -> usize {
    let mut count = 0;
    let mut push = |virt: u64| {
        if count < out.len() {
            out[count] = virt;
            count += 1;
        }
    };
    let image = KernelImage::get();
    push(crate::kernel_main as *const () as u64);
    push(image.end - 8);
    push(image.rodata);
    push(direct_map(KernelImage::phys(image.text)));
    push(stack_guard());
    push(0);
    push(ZERO_PAGE);
    push(direct_map(ZERO_PAGE));
    push(direct_map(BOOT_MAP_SIZE - 8));
    for region in mm.memblock.memory.regions().iter().take(8) {
        push(direct_map(region.base));
        push(direct_map(region.end() - 8));
        push(address(region.base / PAGE_SIZE));
        push(address(region.end() / PAGE_SIZE - 1));
    }
    let last = mm.memblock.memory.regions().last().map_or(0, |r| r.end());
    // Unmapped: another PML4 slot, past the end of RAM, and the vmemmap far past the
    // last page frame.
    push(0x0000_4000_0000_0000);
    push(direct_map(last.next_multiple_of(BOOT_MAP_SIZE) + 64 * BOOT_MAP_SIZE));
    push(address(last / PAGE_SIZE + (1 << 30)));
    count
}

/// Reports the guest's translations and asks the VMM to check them; then reports the
/// tree's tables and pages.
pub fn report_and_check(mm: &mut Mm) {
    let mut virts = [0u64; 64];
    let count = addresses(mm, &mut virts);
    let mut tree = mm.tree();
    let mut payload = ReportBuf::new();
    for &virt in &virts[..count] {
        let translation = VirtAddr::try_new(virt).and_then(|v| tree.translate(v));
        payload.push(&GuestTranslation {
            virt,
            phys: translation.map_or(UNMAPPED, |t| t.phys.as_u64()),
            page_size: translation.map_or(0, |t| t.size.bytes()),
        });
    }
    hypercall::report(ReportKind::Translations, payload.as_slice());
    hypercall::checkpoint(checkpoint::CHECK_TRANSLATIONS);

    let stats = tree.stats();
    let report = PageTablesReport { tables: stats.tables, pages: stats.pages };
    hypercall::report_value(ReportKind::PageTables, &report);
}
