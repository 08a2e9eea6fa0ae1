//! vmalloc areas: data, guard pages, every page back after vfree, and a vfree large
//! enough to flush everything really invalidating the global entries of its pages.

use super::{all_pages_back, detail, ensure, CheckResult};
use crate::extable;
use crate::mm::direct_map;
use crate::mm::setup::Mm;
use guest::e820::E820Map;
use guest::paging::FLUSH_ALL_THRESHOLD;
use guest::vmalloc::VmallocError;
use shared::addr::VirtAddr;
use shared::layout::PAGE_SIZE;
use shared::page::PG_HEAD;

/// Writes `value ^ i` to every word `i` of `[addr, addr + len)` and checks it reads back.
fn fill_and_check(addr: VirtAddr, len: u64, value: u64) -> bool {
    let word = |i: u64| (addr.as_u64() + 8 * i) as *mut u64;
    // SAFETY: `[addr, addr + len)` is a live vmalloc area the caller owns.
    unsafe {
        for i in 0..len / 8 {
            word(i).write_volatile(value ^ i);
        }
        (0..len / 8).all(|i| word(i).read_volatile() == value ^ i)
    }
}

pub fn areas(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let free = mm.buddy.nr_free_pages();
    let areas = mm.vmalloc.areas();
    let a = mm.vmalloc(5 * PAGE_SIZE + 100).map_err(|e| detail(format_args!("{e}")))?;
    let b = mm.vmalloc(3 * PAGE_SIZE).map_err(|e| detail(format_args!("{e}")))?;
    let (a_end, b_start) = (a.as_u64() + 6 * PAGE_SIZE, b.as_u64());
    ensure!(b_start > a_end, "area at {b_start:#x} leaves no guard page after {a:#x}");
    ensure!(fill_and_check(a, 6 * PAGE_SIZE, 0xfeed), "area {a:#x} does not hold its data");
    let mut tree = mm.tree();
    ensure!(
        tree.translate(VirtAddr::new(a_end)).is_none(),
        "the guard page after {a:#x} is mapped"
    );
    // vmalloc_to_page: the frame behind the area is an allocated block, holding the data.
    let phys = tree.translate(a).map(|t| t.phys.as_u64());
    let Some(phys) = phys else { return Err(detail(format_args!("{a:#x} is not mapped"))) };
    // SAFETY: the frame behind a live area, read through the direct map.
    let first = unsafe { (direct_map(phys) as *const u64).read_volatile() };
    ensure!(first == 0xfeed, "the direct map of the area's frame holds {first:#x}");
    let head = guest::buddy::Memmap::page(&mut mm.buddy.memmap, phys / PAGE_SIZE)
        .map(|p| p.flags & PG_HEAD);
    ensure!(head == Some(PG_HEAD), "vmalloc_to_page gives flags {head:?}");
    for area in [a, b] {
        mm.vfree(area).map_err(|e| detail(format_args!("{e}")))?;
    }
    let again = mm.vfree(a);
    ensure!(again == Err(VmallocError::NotAnArea(a.as_u64())), "a second vfree gave {again:?}");
    ensure!(mm.vmalloc.areas() == areas, "areas left behind");
    all_pages_back(mm, free)
}

/// vmalloc maps its pages global, and a global entry survives a CR3 reload: a vfree of
/// more pages than it flushes one by one must invalidate them some other way. Every page
/// is touched (so the TLB holds it), freed, then probed: each must fault.
pub fn global_flush(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let pages = FLUSH_ALL_THRESHOLD + 8;
    let free = mm.buddy.nr_free_pages();
    let area = mm.vmalloc(pages * PAGE_SIZE).map_err(|e| detail(format_args!("{e}")))?;
    for page in 0..pages {
        // SAFETY: a page of the area just mapped; reading it loads its translation into
        // the TLB (what it holds is the `areas` check's business).
        unsafe { core::ptr::read_volatile((area.as_u64() + page * PAGE_SIZE) as *const u64) };
    }
    mm.vfree(area).map_err(|e| detail(format_args!("{e}")))?;
    for page in 0..pages {
        let virt = VirtAddr::new(area.as_u64() + page * PAGE_SIZE);
        // SAFETY: a read of what was a vmalloc area: RAM if the TLB still maps it.
        let read = unsafe { extable::read_u64(virt) };
        ensure!(
            read.is_err_and(|f| f.address == virt.as_u64() && f.error_code & 1 == 0),
            "page {page} at {virt:#x} still reads ({read:?}) after vfree: a stale global TLB entry"
        );
    }
    all_pages_back(mm, free)
}
