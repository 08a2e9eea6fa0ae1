//! `workload=selftest`: deterministic checks of every memory-management subsystem, each
//! reported to the host as passed or failed with a detail.
//!
//! One module per subsystem: [`boot`] (e820, memblock, the memory map, zones), [`buddy`],
//! [`paging`], [`vmalloc`], [`pager`], [`slab`] and [`alloc`]. Each check takes the memory
//! managers for its whole run (except `alloc`'s, whose collections take them per
//! allocation) and returns a [`CheckResult`]: `Ok`, or the detail of what failed.

// A failed check's detail is a stack line: there is no heap to box it in.
#![allow(clippy::result_large_err)]

mod alloc;
mod boot;
mod buddy;
mod pager;
mod paging;
mod slab;
mod vmalloc;

use crate::console::Line;
use crate::hypercall;
use crate::mm::setup::Mm;
use guest::e820::E820Map;
use log::{error, info};
use shared::page::{NR_ORDERS, NR_ZONES};

/// What a check found: nothing wrong, or a one-line detail.
pub type CheckResult = Result<(), Line>;
/// A check that borrows the memory managers.
type Check = fn(&mut Mm, &E820Map) -> CheckResult;

/// Fails the check with a formatted detail unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($detail:tt)*) => {
        if !$cond {
            return Err($crate::selftest::detail(format_args!($($detail)*)));
        }
    };
}
pub(crate) use ensure;

/// Every check that borrows the memory managers, by subsystem.
const CHECKS: &[(&str, Check)] = &[
    ("e820: sanitised map is sorted, disjoint and merged", boot::e820_sanitised),
    ("memblock: memory is the e820 RAM in whole pages", boot::memblock_memory),
    ("memblock: low memory and the kernel image are reserved", boot::memblock_reserved),
    ("memmap: pfn_to_page and page_to_pfn round-trip on every region", boot::memmap_round_trip),
    ("memmap: holes have no struct page", boot::memmap_holes),
    ("memmap: every page table of the boot tree is counted", boot::tables_counted),
    ("zones: spanned >= present >= managed, min < low < high", boot::zone_counters),
    ("buddy: invariants hold", buddy::invariants),
    ("buddy: every order allocates and frees back to the boot state", buddy::every_order),
    ("buddy: split and merge restore the free lists", buddy::split_and_merge),
    ("buddy: zone limit and fallback Normal -> DMA32 -> DMA", buddy::zone_fallback),
    ("buddy: double free is reported and changes nothing", buddy::double_free),
    ("buddy: free of a never-allocated page is reported", buddy::never_allocated),
    ("buddy: free with the wrong order is reported", buddy::wrong_order),
    ("buddy: per-CPU lists serve orders 0-3 and drain back", buddy::per_cpu_lists),
    ("buddy: allocations stop at the min watermark", buddy::watermark_min),
    ("paging: own tree, no identity map, W^X image, stack guard page", paging::own_tree),
    (
        "paging: the direct-map alias of kernel text and rodata is read-only",
        paging::read_only_alias,
    ),
    (
        "paging: map a 2 MiB page, split it by protect, unmap it, tables freed",
        paging::runtime_mapper,
    ),
    (
        "vmalloc: areas hold data, guard pages between them, vfree returns every page",
        vmalloc::areas,
    ),
    ("vmalloc: a vfree past the flush threshold invalidates global entries", vmalloc::global_flush),
    ("demand paging: first touches map zeroed pages, one fault per page", pager::demand_paging),
    (
        "slab: kmalloc serves every class, zero and large sizes, and gives every page back",
        slab::kmalloc_classes,
    ),
    ("slab debug: a double free is reported", slab::double_free),
    ("slab debug: a free of a pointer that is not an object is reported", slab::bad_free),
    ("slab debug: a red-zone overwrite is reported", slab::red_zone),
    ("slab debug: a write past the requested size is reported", slab::kmalloc_red_zone),
    ("slab debug: a write after free is reported, and the cache goes on", slab::write_after_free),
];

/// Runs every check that borrows the memory managers; returns how many ran and how many
/// failed.
pub fn run(mm: &mut Mm, e820: &E820Map) -> (usize, u32) {
    let mut failed = 0;
    for (name, check) in CHECKS {
        failed += u32::from(!report(name, check(mm, e820)));
    }
    (CHECKS.len(), failed)
}

/// The checks that take the memory managers themselves; returns how many ran and failed.
pub fn run_unborrowed() -> (usize, u32) {
    let passed = report(
        "alloc: Vec, BTreeMap, Box and aligned allocations work on kmalloc",
        alloc::collections(),
    );
    (1, u32::from(!passed))
}

/// Prints the summary of `total` checks; returns whether none `failed`.
pub fn summary(total: usize, failed: u32) -> bool {
    if failed == 0 {
        info!("selftest: all {total} checks passed");
    } else {
        error!("selftest: {failed} of {total} checks failed");
    }
    failed == 0
}

fn report(name: &str, result: CheckResult) -> bool {
    match &result {
        Ok(()) => info!("selftest: ok: {name}"),
        Err(detail) => error!("selftest: FAILED: {name}: {}", detail.as_str()),
    }
    let detail = result.as_ref().err().map_or("", Line::as_str);
    hypercall::report_test(name, result.is_ok(), detail);
    result.is_ok()
}

/// A check's failure detail.
pub fn detail(args: core::fmt::Arguments<'_>) -> Line {
    let mut line = Line::new();
    let _ = core::fmt::Write::write_fmt(&mut line, args);
    line
}

/// Free blocks per zone and order.
pub fn snapshot(mm: &Mm) -> [[u64; NR_ORDERS]; NR_ZONES] {
    mm.buddy.zones.each_ref().map(|zone| zone.free_area.map(|area| area.nr_free))
}

/// Drains the per-CPU lists; passes if the free pages are `free` again: nothing leaked.
pub fn all_pages_back(mm: &mut Mm, free: u64) -> CheckResult {
    mm.buddy.drain_pcp();
    let now = mm.buddy.nr_free_pages();
    ensure!(now == free, "{now} pages free, {free} before: pages leaked");
    Ok(())
}
