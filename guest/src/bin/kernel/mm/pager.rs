//! Demand paging in the kernel: a `guest::pager::Pager` in a [`KernelCell`], armed by its
//! owner and run by the page-fault handler.
//!
//! The handler takes the pager with [`KernelCell::try_with`]: a fault while the owner is
//! arming or disarming it is not the pager's, and becomes an oops instead of an alias.
//! It maps into the kernel's tree, which the owner may hold through the memory managers:
//! the owner is stopped at an access to the pager's area, never inside a tree operation
//! (those touch only the direct map), so no reference into the tree is live meanwhile.

use super::{tables, vmemmap};
use crate::cell::KernelCell;
use guest::pager::{Disarmed, Pager, PagerError, PagerMemory};
use guest::paging::{PageTableEntry, PteFlags, TableMemory};
use shared::addr::{PhysAddr, VirtAddr};
use shared::page::PG_TABLE;

static PAGER: KernelCell<Pager> = KernelCell::new(Pager::new());

/// Arms the pager for `area` with `frames`.
///
/// # Safety
/// As for [`Pager::arm`]: `frames` are order-0 blocks the caller took from the buddy
/// allocator and hands over until [`disarm`].
pub unsafe fn arm(
    area: core::ops::Range<VirtAddr>,
    frames: &[PhysAddr],
    flags: PteFlags,
) -> Result<(), PagerError> {
    // SAFETY: the caller's contract, passed on.
    PAGER.with(|pager| unsafe { pager.arm(area, frames, flags) })
}

/// Disarms the pager: the faults it handled and the frames it did not use.
pub fn disarm() -> Disarmed {
    PAGER.with(Pager::disarm)
}

/// Maps a zeroed page at `addr` if it lies in the armed area; whether it did. Called by
/// the page-fault handler for not-present faults.
pub fn handle(addr: u64) -> bool {
    let Some(addr) = VirtAddr::try_new(addr) else { return false };
    let root = crate::cpu::page_table_root();
    PAGER
        .try_with(|pager| {
            // SAFETY: `root` is the loaded kernel tree, whose tables are RAM pages the
            // direct map reaches; the pool's frames become tables before they are used.
            unsafe { pager.handle_fault(root, &mut KernelPagerMemory, addr) }
        })
        .unwrap_or(false)
}

/// The kernel tree's tables and the pool's frames, through the direct map and the vmemmap.
struct KernelPagerMemory;

impl TableMemory for KernelPagerMemory {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        // SAFETY: the caller's contract: a table of the loaded kernel tree, RAM in the
        // direct map, which the pager alone is changing (module documentation).
        unsafe { tables::table_entries(table) }
    }
}

// SAFETY: each method writes only where its contract points: a pool frame (RAM in the
// direct map, with a descriptor) or a table of the loaded tree.
unsafe impl PagerMemory for KernelPagerMemory {
    unsafe fn zero(&mut self, frame: PhysAddr) {
        // SAFETY: the caller's contract: an aligned pool frame, RAM the pager owns, in the
        // direct map.
        unsafe { tables::zero_frame(frame) };
    }

    unsafe fn make_table(&mut self, frame: PhysAddr) {
        // SAFETY: the caller's contract, as for `zero`; the frame's descriptor is the
        // pager's with it.
        let page = unsafe {
            self.zero(frame);
            vmemmap::owned_page(frame.pfn())
        };
        page.flags |= PG_TABLE;
        page.private = 0;
    }

    unsafe fn used(&mut self, table: PhysAddr) -> &mut u64 {
        // SAFETY: the caller's contract: a table of the kernel tree, which the pager is
        // changing (module documentation): its descriptor is the tree's, and no one
        // else's meanwhile.
        &mut unsafe { vmemmap::owned_page(table.pfn()) }.private
    }
}
