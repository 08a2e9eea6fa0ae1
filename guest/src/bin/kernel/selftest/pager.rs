//! Demand paging: an armed area's pages are mapped zeroed on first touch, one fault per
//! page, and every frame comes back.

use super::{all_pages_back, detail, ensure, CheckResult};
use crate::mm::pager;
use crate::mm::setup::Mm;
use crate::mm::tables::LocalTlb;
use guest::e820::E820Map;
use guest::pager::POOL_CAPACITY;
use guest::paging::PteFlags;
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{PAGE_SIZE, VMALLOC_END};
use shared::page::ZoneType;

pub fn demand_paging(mm: &mut Mm, _: &E820Map) -> CheckResult {
    const PAGES: u64 = 8;
    /// The pages, and up to three page tables for the new mapping.
    const FRAMES: usize = 11;
    const _: () = assert!(FRAMES <= POOL_CAPACITY);
    // Far from vmalloc allocations, in its own 2 MiB, so the pager needs a page table.
    let start = VMALLOC_END - (2 << 30);
    let free = mm.buddy.nr_free_pages();
    let mut frames = [PhysAddr::new(0); FRAMES];
    for frame in &mut frames {
        let pfn =
            mm.buddy.alloc_page(ZoneType::Normal).ok_or_else(|| detail(format_args!("no page")))?;
        *frame = PhysAddr::new(pfn * PAGE_SIZE);
    }
    let nx = if crate::cpu::has_nx() { PteFlags::NO_EXECUTE } else { PteFlags::empty() };
    let area = VirtAddr::new(start)..VirtAddr::new(start + PAGES * PAGE_SIZE);
    // SAFETY: order-0 frames just taken from the buddy allocator, handed over until
    // `disarm` below.
    unsafe { pager::arm(area, &frames, nx) }.map_err(|e| detail(format_args!("arming: {e:?}")))?;
    let mut first_reads = 0u64;
    for page in 0..PAGES {
        let word = (start + page * PAGE_SIZE + 8 * page) as *mut u64;
        // SAFETY: the pager maps a zeroed page on the first touch of each page of the area.
        unsafe {
            first_reads |= word.read_volatile();
            word.write_volatile(page + 1);
        }
    }
    let disarmed = pager::disarm();
    let mut readback = true;
    for page in 0..PAGES {
        let virt = start + page * PAGE_SIZE;
        // SAFETY: mapped by the pager above.
        readback &= unsafe { ((virt + 8 * page) as *const u64).read_volatile() } == page + 1;
        let (frame, flush) =
            mm.tree().unmap(VirtAddr::new(virt)).map_err(|e| detail(format_args!("{e}")))?;
        flush.flush(&LocalTlb);
        mm.buddy.free_page(frame.start().pfn()).map_err(|err| detail(format_args!("{err}")))?;
    }
    for frame in disarmed.unused() {
        mm.buddy.free_page(frame.pfn()).map_err(|err| detail(format_args!("{err}")))?;
    }
    ensure!(disarmed.faults == PAGES, "{} faults for {PAGES} pages", disarmed.faults);
    ensure!(first_reads == 0, "a demand-paged page was not zeroed");
    ensure!(readback, "written words did not read back");
    all_pages_back(mm, free)
}
