//! Boot-time state: the e820 map, memblock, the memory map and the zones.

use super::{detail, ensure, CheckResult};
use crate::mm::setup::Mm;
use crate::mm::tables::KernelImage;
use crate::mm::vmemmap::{address, pfn_of};
use guest::buddy::Memmap;
use guest::e820::E820Map;
use shared::boot::E820_TYPE_RAM;
use shared::layout::{HIGH_MEMORY, PAGE_SIZE};
use shared::page::{Page, ZoneType, PG_TABLE};

pub fn e820_sanitised(_: &mut Mm, e820: &E820Map) -> CheckResult {
    for pair in e820.entries().windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (a_end, b_addr, a_typ, b_typ) = (a.addr + a.size, b.addr, a.typ, b.typ);
        ensure!(a_end <= b_addr, "entries at {:#x} and {b_addr:#x} overlap", { a.addr });
        ensure!(a_end < b_addr || a_typ != b_typ, "equal neighbours at {b_addr:#x} not merged");
    }
    Ok(())
}

pub fn memblock_memory(mm: &mut Mm, e820: &E820Map) -> CheckResult {
    let mut regions = mm.memblock.memory.regions().iter();
    for entry in e820.entries().iter().filter(|e| e.typ == E820_TYPE_RAM) {
        let base = entry.addr.next_multiple_of(PAGE_SIZE);
        let end = (entry.addr + entry.size) / PAGE_SIZE * PAGE_SIZE;
        if base >= end {
            continue;
        }
        let region = regions.next();
        ensure!(
            region.is_some_and(|r| r.base == base && r.end() == end),
            "RAM {base:#x}-{end:#x} is {:?} in memblock",
            region
        );
    }
    ensure!(regions.next().is_none(), "memblock has more memory than the e820 RAM");
    Ok(())
}

pub fn memblock_reserved(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let kernel = KernelImage::get().region();
    ensure!(mm.memblock.reserved.contains(0, HIGH_MEMORY), "the first MiB is not reserved");
    ensure!(
        mm.memblock.reserved.contains(kernel.base, kernel.size),
        "the kernel image is not reserved"
    );
    for free in mm.memblock.free_ranges() {
        ensure!(
            !mm.memblock.reserved.intersects(free.base, free.size),
            "free range {:#x} is reserved",
            free.base
        );
    }
    Ok(())
}

pub fn memmap_round_trip(mm: &mut Mm, _: &E820Map) -> CheckResult {
    for index in 0..mm.memblock.memory.regions().len() {
        let region = mm.memblock.memory.regions()[index];
        for pfn in [region.base / PAGE_SIZE, region.end() / PAGE_SIZE - 1] {
            let page: *mut Page = match mm.buddy.memmap.page(pfn) {
                Some(page) => page,
                None => return Err(detail(format_args!("pfn {pfn:#x} has no struct page"))),
            };
            ensure!(
                page as u64 == address(pfn) && pfn_of(page) == pfn,
                "pfn {pfn:#x} maps to {:#x}",
                page as u64
            );
            // The descriptor is backed memory: a write reads back.
            // SAFETY: `page` points to the backed descriptor of `pfn` (just looked up), and
            // nothing else holds a reference to it during this check.
            let readback = unsafe {
                let saved = (*page).private;
                (*page).private = 0x5a5a_5a5a;
                let value = core::ptr::read_volatile(&raw const (*page).private);
                (*page).private = saved;
                value
            };
            ensure!(readback == 0x5a5a_5a5a, "struct page of pfn {pfn:#x} does not hold a value");
        }
    }
    Ok(())
}

pub fn memmap_holes(mm: &mut Mm, _: &E820Map) -> CheckResult {
    // A hole of at least 128 page frames has a whole 4 KiB of descriptors unbacked.
    for index in 1..mm.memblock.memory.regions().len() {
        let regions = mm.memblock.memory.regions();
        let (end, next) = (regions[index - 1].end() / PAGE_SIZE, regions[index].base / PAGE_SIZE);
        if next - end >= 128 {
            let middle = end.next_multiple_of(64) + 64;
            ensure!(
                mm.buddy.memmap.page(middle).is_none(),
                "pfn {middle:#x} in a hole has a struct page"
            );
        }
    }
    Ok(())
}

/// Every table of the kernel's tree is flagged a table, and counts its used entries: the
/// census after the switch to the tree built at boot, and every change since.
pub fn tables_counted(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let mut tables = [(0u64, 0u64); 256];
    let mut count = 0;
    let mut more = 0;
    mm.tree().for_each_table(|table, _, used| {
        if count < tables.len() {
            tables[count] = (table.pfn(), used);
            count += 1;
        } else {
            more += 1;
        }
    });
    ensure!(more == 0, "{} tables, more than this check holds", count + more);
    for &(pfn, used) in &tables[..count] {
        let page = mm.buddy.memmap.page(pfn).copied();
        ensure!(
            page.is_some_and(|p| p.flags & PG_TABLE != 0 && p.private == used),
            "table pfn {pfn:#x} with {used} entries has struct page {page:?}"
        );
    }
    Ok(())
}

pub fn zone_counters(mm: &mut Mm, _: &E820Map) -> CheckResult {
    for (zone, kind) in mm.buddy.zones.iter().zip(ZoneType::ALL).filter(|(z, _)| z.present > 0) {
        let (low, high) = kind.pfn_limits();
        ensure!(
            low <= zone.start_pfn && zone.end_pfn <= high,
            "{} spans outside its limits",
            kind.name()
        );
        ensure!(
            zone.spanned() >= zone.present && zone.present >= zone.managed,
            "{}: spanned {} present {} managed {}",
            kind.name(),
            zone.spanned(),
            zone.present,
            zone.managed
        );
        let w = zone.watermarks;
        ensure!(w.min < w.low && w.low < w.high, "{}: watermarks {w:?}", kind.name());
    }
    Ok(())
}
