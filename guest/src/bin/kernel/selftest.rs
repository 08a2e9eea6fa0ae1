//! `workload=selftest`: deterministic checks of memblock, the memory map, the zones and the
//! buddy allocator, each reported to the host as passed or failed with a detail.

// A failed check's detail is a stack line: there is no heap to box it in.
#![allow(clippy::result_large_err)]

use crate::console::Line;
use crate::hypercall;
use crate::mm::setup::{kernel_region, Mm};
use crate::mm::tables::RuntimeTables;
use crate::mm::vmalloc::{fill_and_check, LocalTlb, VmallocError};
use crate::mm::vmemmap::{address, pfn_of};
use core::fmt::Write;
use guest::buddy::{FreeError, Memmap, Watermark};
use guest::e820::E820Map;
use guest::paging::{Frame, Mapper, Page as Page2M};
use guest::slab::{BuddyPages, KmemCache, SlabError, SlabErrorKind};
use log::{error, info};
use shared::addr::{PhysAddr, VirtAddr};
use shared::boot::E820_TYPE_RAM;
use shared::layout::{HIGH_MEMORY, PAGE_SIZE};
use shared::page::{Page, ZoneType, MAX_ORDER, NR_ORDERS, NR_ZONES, PG_HEAD};

type Outcome = Result<(), Line>;
/// A check.
type Check = fn(&mut Mm, &E820Map) -> Outcome;

/// Fails the check with a formatted detail unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($detail:tt)*) => {
        if !$cond {
            let mut line = Line::new();
            let _ = write!(line, $($detail)*);
            return Err(line);
        }
    };
}

/// Runs every check that borrows the memory managers; returns how many ran and how many
/// failed.
pub fn run(mm: &mut Mm, e820: &E820Map) -> (usize, u32) {
    let checks: [(&str, Check); 24] = [
        ("e820: sanitised map is sorted, disjoint and merged", e820_sanitised),
        ("memblock: memory is the e820 RAM in whole pages", memblock_memory),
        ("memblock: low memory and the kernel image are reserved", memblock_reserved),
        ("memmap: pfn_to_page and page_to_pfn round-trip on every region", memmap_round_trip),
        ("memmap: holes have no struct page", memmap_holes),
        ("zones: spanned >= present >= managed, min < low < high", zone_counters),
        ("buddy: invariants hold", buddy_invariants),
        ("buddy: every order allocates and frees back to the boot state", every_order),
        ("buddy: split and merge restore the free lists", split_and_merge),
        ("buddy: zone limit and fallback Normal -> DMA32 -> DMA", zone_fallback),
        ("buddy: double free is reported and changes nothing", double_free),
        ("buddy: free of a never-allocated page is reported", never_allocated),
        ("buddy: free with the wrong order is reported", wrong_order),
        ("buddy: per-CPU lists serve orders 0-3 and drain back", per_cpu_lists),
        ("buddy: allocations stop at the min watermark", watermark_min),
        ("paging: own tree, no identity map, W^X image, stack guard page", own_tree),
        ("paging: map a 2 MiB page, split it by protect, unmap it, tables freed", runtime_mapper),
        (
            "vmalloc: areas hold data, guard pages between them, vfree returns every page",
            vmalloc_areas,
        ),
        ("demand paging: first touches map zeroed pages, one fault per page", demand_paging),
        (
            "slab: kmalloc serves every class, zero and large sizes, and gives every page back",
            kmalloc_classes,
        ),
        ("slab debug: a double free is reported", slab_double_free),
        ("slab debug: a free of a pointer that is not an object is reported", slab_bad_free),
        ("slab debug: a red-zone overwrite is reported", slab_red_zone),
        ("slab debug: a write after free is reported", slab_write_after_free),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        failed += u32::from(!report(name, check(mm, e820)));
    }
    (checks.len(), failed)
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

fn report(name: &str, outcome: Outcome) -> bool {
    match &outcome {
        Ok(()) => info!("selftest: ok: {name}"),
        Err(detail) => error!("selftest: FAILED: {name}: {}", detail.as_str()),
    }
    let detail = outcome.as_ref().err().map_or("", Line::as_str);
    hypercall::report_test(name, outcome.is_ok(), detail);
    outcome.is_ok()
}

/// Free blocks per zone and order.
fn snapshot(mm: &Mm) -> [[u64; NR_ORDERS]; NR_ZONES] {
    mm.buddy.zones.each_ref().map(|zone| zone.free_area.map(|area| area.nr_free))
}

fn e820_sanitised(_: &mut Mm, e820: &E820Map) -> Outcome {
    for pair in e820.entries().windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (a_end, b_addr, a_typ, b_typ) = (a.addr + a.size, b.addr, a.typ, b.typ);
        ensure!(a_end <= b_addr, "entries at {:#x} and {b_addr:#x} overlap", { a.addr });
        ensure!(a_end < b_addr || a_typ != b_typ, "equal neighbours at {b_addr:#x} not merged");
    }
    Ok(())
}

fn memblock_memory(mm: &mut Mm, e820: &E820Map) -> Outcome {
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

fn memblock_reserved(mm: &mut Mm, _: &E820Map) -> Outcome {
    let kernel = kernel_region();
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

fn memmap_round_trip(mm: &mut Mm, _: &E820Map) -> Outcome {
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

fn memmap_holes(mm: &mut Mm, _: &E820Map) -> Outcome {
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

fn zone_counters(mm: &mut Mm, _: &E820Map) -> Outcome {
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

fn buddy_invariants(mm: &mut Mm, _: &E820Map) -> Outcome {
    mm.buddy.check().map_err(|err| detail(format_args!("{err:?}")))
}

fn every_order(mm: &mut Mm, _: &E820Map) -> Outcome {
    let boot = snapshot(mm);
    for order in 0..=MAX_ORDER {
        let Some(pfn) = mm.buddy.alloc(order, ZoneType::Normal, Watermark::Min) else {
            return Err(detail(format_args!("no block of order {order}")));
        };
        ensure!(pfn % (1 << order) == 0, "order {order} block at pfn {pfn:#x} is misaligned");
        mm.buddy.free(pfn, order).map_err(|err| detail(format_args!("{err}")))?;
    }
    ensure!(snapshot(mm) == boot, "free lists differ from the boot state");
    Ok(())
}

fn split_and_merge(mm: &mut Mm, _: &E820Map) -> Outcome {
    let boot = snapshot(mm);
    let mut pages = [0u64; 3];
    for page in &mut pages {
        *page = mm
            .buddy
            .alloc(0, ZoneType::Normal, Watermark::Min)
            .ok_or_else(|| detail(format_args!("no page")))?;
    }
    ensure!(snapshot(mm) != boot, "allocating changed no free list");
    for page in pages {
        mm.buddy.free(page, 0).map_err(|err| detail(format_args!("{err}")))?;
    }
    ensure!(snapshot(mm) == boot, "free lists differ after freeing");
    mm.buddy.check().map_err(|err| detail(format_args!("{err:?}")))
}

fn zone_fallback(mm: &mut Mm, _: &E820Map) -> Outcome {
    let managed = mm.buddy.zones.each_ref().map(|zone| zone.managed);
    let populated = |kind: ZoneType| managed[kind as usize] > 0;
    let top =
        ZoneType::ALL.into_iter().rev().find(|&kind| populated(kind)).unwrap_or(ZoneType::Dma);
    let pfn = mm
        .buddy
        .alloc(0, ZoneType::Normal, Watermark::Min)
        .ok_or_else(|| detail(format_args!("no page")))?;
    let zone = ZoneType::of_pfn(pfn);
    mm.buddy.free(pfn, 0).map_err(|err| detail(format_args!("{err}")))?;
    ensure!(zone == top, "a Normal request came from {} instead of {}", zone.name(), top.name());
    if populated(ZoneType::Dma) {
        let pfn = mm
            .buddy
            .alloc(0, ZoneType::Dma, Watermark::Min)
            .ok_or_else(|| detail(format_args!("no DMA page")))?;
        mm.buddy.free(pfn, 0).map_err(|err| detail(format_args!("{err}")))?;
        ensure!(ZoneType::of_pfn(pfn) == ZoneType::Dma, "a DMA request got pfn {pfn:#x}");
    }
    Ok(())
}

/// Allocates an order-2 block, runs `abuse` on it, frees it and checks nothing changed.
fn with_block(mm: &mut Mm, abuse: impl Fn(&mut Mm, u64) -> Outcome) -> Outcome {
    let boot = snapshot(mm);
    let block = mm
        .buddy
        .alloc(2, ZoneType::Normal, Watermark::Min)
        .ok_or_else(|| detail(format_args!("no block")))?;
    let during = snapshot(mm);
    let outcome = abuse(mm, block);
    ensure!(snapshot(mm) == during, "a rejected free changed the free lists");
    mm.buddy.check().map_err(|err| detail(format_args!("{err:?}")))?;
    // The block may already be free if the abuse freed it; either way end in the boot state.
    let _ = mm.buddy.free(block, 2);
    outcome?;
    ensure!(snapshot(mm) == boot, "free lists differ from the boot state");
    Ok(())
}

fn double_free(mm: &mut Mm, _: &E820Map) -> Outcome {
    let boot = snapshot(mm);
    let block = mm
        .buddy
        .alloc(2, ZoneType::Normal, Watermark::Min)
        .ok_or_else(|| detail(format_args!("no block")))?;
    mm.buddy.free(block, 2).map_err(|err| detail(format_args!("{err}")))?;
    let after = snapshot(mm);
    let second = mm.buddy.free(block, 2);
    ensure!(
        matches!(second, Err(FreeError::DoubleFree { pfn, .. }) if pfn == block),
        "second free gave {second:?}"
    );
    ensure!(snapshot(mm) == after && after == boot, "the double free changed the free lists");
    Ok(())
}

fn never_allocated(mm: &mut Mm, _: &E820Map) -> Outcome {
    let kernel_pfn = kernel_region().base / PAGE_SIZE;
    with_block(mm, |mm, block| {
        let reserved = mm.buddy.free(kernel_pfn, 0);
        ensure!(
            matches!(reserved, Err(FreeError::NotAllocated { .. })),
            "freeing the kernel's pfn gave {reserved:?}"
        );
        let tail = mm.buddy.free(block + 1, 0);
        ensure!(
            matches!(tail, Err(FreeError::NotAllocated { .. })),
            "freeing a tail page gave {tail:?}"
        );
        Ok(())
    })
}

fn wrong_order(mm: &mut Mm, _: &E820Map) -> Outcome {
    with_block(mm, |mm, block| {
        let result = mm.buddy.free(block, 1);
        ensure!(
            result == Err(FreeError::WrongOrder { pfn: block, allocated: 2, given: 1 }),
            "gave {result:?}"
        );
        Ok(())
    })
}

/// Drains the per-CPU lists; passes if the free pages are `free` again: nothing leaked.
fn all_pages_back(mm: &mut Mm, free: u64) -> Outcome {
    mm.buddy.drain_pcp();
    let now = mm.buddy.nr_free_pages();
    ensure!(now == free, "{now} pages free, {free} before: pages leaked");
    Ok(())
}

fn per_cpu_lists(mm: &mut Mm, _: &E820Map) -> Outcome {
    let boot = snapshot(mm);
    for order in 0..guest::buddy::PCP_ORDERS {
        let free = mm.buddy.nr_free_pages();
        let pfn = mm
            .buddy
            .alloc_pages(order, ZoneType::Normal)
            .ok_or_else(|| detail(format_args!("no block of order {order}")))?;
        let zone = ZoneType::of_pfn(pfn) as usize;
        let list = mm.buddy.zones[zone].pcp[order as usize].count;
        ensure!(list > 0, "order {order}: the list was not refilled by a batch");
        ensure!(
            mm.buddy.nr_free_pages() == free - (1 << order),
            "order {order}: free pages did not drop by {}",
            1 << order
        );
        mm.buddy.free_pages(pfn, order).map_err(|err| detail(format_args!("{err}")))?;
        let again = mm.buddy.free_pages(pfn, order);
        ensure!(
            matches!(again, Err(FreeError::DoubleFree { .. })),
            "order {order}: double free to the list gave {again:?}"
        );
    }
    mm.buddy.drain_pcp();
    ensure!(snapshot(mm) == boot, "free lists differ after draining");
    Ok(())
}

fn watermark_min(mm: &mut Mm, _: &E820Map) -> Outcome {
    let kind =
        match ZoneType::ALL.into_iter().find(|&kind| mm.buddy.zones[kind as usize].managed > 0) {
            Some(kind) => kind,
            None => return Err(detail(format_args!("no populated zone"))),
        };
    let boot = snapshot(mm);
    // Greedy from the largest order: about one block per order, plus the largest ones.
    let mut taken = [(0u64, 0u32); 64];
    let mut count = 0;
    for order in (0..=MAX_ORDER).rev() {
        while count < taken.len() {
            let Some(pfn) = mm.buddy.alloc(order, kind, Watermark::Min) else { break };
            taken[count] = (pfn, order);
            count += 1;
        }
    }
    let zone = &mm.buddy.zones[kind as usize];
    let (free, min) = (zone.free, zone.watermarks.min);
    let emergency = mm.buddy.alloc(0, kind, Watermark::None);
    for &(pfn, order) in &taken[..count] {
        mm.buddy.free(pfn, order).map_err(|err| detail(format_args!("{err}")))?;
    }
    if let Some(pfn) = emergency {
        mm.buddy.free(pfn, 0).map_err(|err| detail(format_args!("{err}")))?;
    }
    ensure!(
        free == min,
        "{}: allocations stopped with {free} pages free, min is {min}",
        kind.name()
    );
    ensure!(emergency.is_some(), "an allocation ignoring watermarks failed");
    ensure!(snapshot(mm) == boot, "free lists differ from the boot state");
    Ok(())
}

fn detail(args: core::fmt::Arguments<'_>) -> Line {
    let mut line = Line::new();
    let _ = line.write_fmt(args);
    line
}

fn own_tree(mm: &mut Mm, _: &E820Map) -> Outcome {
    use crate::mm::tables::{rodata, stack_guard};
    use guest::paging::{NO_EXECUTE, WRITABLE};
    let mut tree = Mapper::new(root(), RuntimeTables { buddy: &mut mm.buddy });
    for (what, virt) in [
        ("null", 0),
        ("identity-mapped zero page", shared::layout::ZERO_PAGE),
        ("stack guard", stack_guard()),
    ] {
        ensure!(tree.translate(va(virt)).is_none(), "the {what} address {virt:#x} is mapped");
    }
    let nx = if crate::cpu::has_nx() { NO_EXECUTE } else { 0 };
    let text =
        tree.translate(va(run as *const () as u64)).map(|t| t.flags & (WRITABLE | NO_EXECUTE));
    ensure!(text == Some(0), "kernel text is not read-only executable: {text:?}");
    let ro = tree.translate(va(rodata().0)).map(|t| t.flags & (WRITABLE | NO_EXECUTE));
    ensure!(ro == Some(nx), "rodata is not read-only no-execute: {ro:?}");
    let data =
        tree.translate(va(&raw const SCRATCH as u64)).map(|t| t.flags & (WRITABLE | NO_EXECUTE));
    ensure!(data == Some(WRITABLE | nx), "data is not read-write no-execute: {data:?}");
    Ok(())
}

/// A word in `.data`.
static mut SCRATCH: u64 = 1;

fn root() -> PhysAddr {
    PhysAddr::new(x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64())
}

fn va(addr: u64) -> VirtAddr {
    VirtAddr::new(addr)
}

fn runtime_mapper(mm: &mut Mm, _: &E820Map) -> Outcome {
    use guest::paging::{PageSize, NO_EXECUTE, WRITABLE};
    // The top of the vmalloc area, far from any vmalloc allocation.
    let virt = shared::layout::VMALLOC_END - (1 << 30);
    let free = mm.buddy.nr_free_pages();
    let block = mm
        .buddy
        .alloc(9, ZoneType::Normal, Watermark::Min)
        .ok_or_else(|| detail(format_args!("no 2 MiB block")))?;
    let phys = block * PAGE_SIZE;
    let mut tree = Mapper::new(root(), RuntimeTables { buddy: &mut mm.buddy });
    let (page, frame) = (
        Page2M::containing(va(virt), PageSize::Size2M),
        Frame::containing(PhysAddr::new(phys), PageSize::Size2M),
    );
    tree.map(page, frame, WRITABLE).map_err(|e| detail(format_args!("map: {e:?}")))?.ignore();
    let huge = tree.translate(va(virt + 0x1234)).map(|t| (t.phys.as_u64(), t.size));
    ensure!(huge == Some((phys + 0x1234, PageSize::Size2M)), "2 MiB page translates to {huge:?}");
    tree.protect(va(virt + 0x1000), 0x1000, NO_EXECUTE)
        .map_err(|e| detail(format_args!("protect: {e:?}")))?
        .flush(&LocalTlb);
    let split = tree.translate(va(virt + 0x1000)).map(|t| t.size);
    let neighbour =
        tree.translate(va(virt + 0x20_0000 - 8)).map(|t| (t.phys.as_u64(), t.flags & WRITABLE));
    ensure!(split == Some(PageSize::Size4K), "the protected page is {split:?}");
    ensure!(
        neighbour == Some((phys + 0x20_0000 - 8, WRITABLE)),
        "the rest of the block is {neighbour:?}"
    );
    tree.unmap_range(va(virt), 0x20_0000)
        .map_err(|e| detail(format_args!("unmap: {e:?}")))?
        .flush(&LocalTlb);
    ensure!(tree.translate(va(virt)).is_none(), "still mapped after unmap");
    mm.buddy.free(block, 9).map_err(|err| detail(format_args!("{err}")))?;
    all_pages_back(mm, free)
}

fn vmalloc_areas(mm: &mut Mm, _: &E820Map) -> Outcome {
    let free = mm.buddy.nr_free_pages();
    let areas = mm.vmalloc.areas();
    let a = mm
        .vmalloc
        .vmalloc(&mut mm.buddy, 5 * PAGE_SIZE + 100)
        .map_err(|e| detail(format_args!("{e:?}")))?;
    let b = mm
        .vmalloc
        .vmalloc(&mut mm.buddy, 3 * PAGE_SIZE)
        .map_err(|e| detail(format_args!("{e:?}")))?;
    ensure!(b >= a + 7 * PAGE_SIZE, "area at {b:#x} leaves no guard page after {a:#x}");
    ensure!(
        fill_and_check(&mut mm.buddy, a, 6 * PAGE_SIZE, 0xfeed),
        "area {a:#x} does not hold its data"
    );
    let guard = Mapper::new(root(), RuntimeTables { buddy: &mut mm.buddy })
        .translate(va(a + 6 * PAGE_SIZE));
    ensure!(guard.is_none(), "the guard page after {a:#x} is mapped");
    let head = mm.vmalloc.to_page(&mut mm.buddy, a + PAGE_SIZE).map(|page| page.flags & PG_HEAD);
    ensure!(head == Some(PG_HEAD), "vmalloc_to_page gives {head:?}");
    for area in [a, b] {
        mm.vmalloc.vfree(&mut mm.buddy, area).map_err(|e| detail(format_args!("{e:?}")))?;
    }
    let again = mm.vmalloc.vfree(&mut mm.buddy, a);
    ensure!(again == Err(VmallocError::NotAnArea(a)), "a second vfree gave {again:?}");
    ensure!(mm.vmalloc.areas() == areas, "areas left behind");
    all_pages_back(mm, free)
}

fn demand_paging(mm: &mut Mm, _: &E820Map) -> Outcome {
    use crate::mm::pager;
    const PAGES: u64 = 8;
    /// The pages, and up to three page tables for the new mapping.
    const FRAMES: usize = 11;
    // Far from vmalloc allocations, in its own 2 MiB, so the pager needs a page table.
    let start = shared::layout::VMALLOC_END - (2 << 30);
    let free = mm.buddy.nr_free_pages();
    let mut frames = [0u64; FRAMES];
    for frame in &mut frames {
        *frame =
            mm.buddy.alloc_page(ZoneType::Normal).ok_or_else(|| detail(format_args!("no page")))?;
    }
    let nx = if crate::cpu::has_nx() { guest::paging::NO_EXECUTE } else { 0 };
    pager::arm(start, start + PAGES * PAGE_SIZE, &frames, nx);
    let mut first_reads = 0u64;
    for page in 0..PAGES {
        let word = (start + page * PAGE_SIZE + 8 * page) as *mut u64;
        // SAFETY: the pager maps a zeroed page on the first touch of each page of the area.
        unsafe {
            first_reads |= word.read_volatile();
            word.write_volatile(page + 1);
        }
    }
    let (faults, unused) = pager::disarm();
    let mut unused_frames = [0u64; FRAMES];
    unused_frames[..unused.len()].copy_from_slice(unused);
    let unused_count = unused.len();
    let mut readback = true;
    for page in 0..PAGES {
        let virt = start + page * PAGE_SIZE;
        // SAFETY: mapped by the pager above.
        readback &= unsafe { ((virt + 8 * page) as *const u64).read_volatile() } == page + 1;
        let mut tree = Mapper::new(root(), RuntimeTables { buddy: &mut mm.buddy });
        let (frame, flush) = tree.unmap(va(virt)).map_err(|e| detail(format_args!("{e:?}")))?;
        let phys = frame.start().as_u64();
        flush.flush(&LocalTlb);
        mm.buddy.free_page(phys / PAGE_SIZE).map_err(|err| detail(format_args!("{err}")))?;
    }
    for &frame in &unused_frames[..unused_count] {
        mm.buddy.free_page(frame).map_err(|err| detail(format_args!("{err}")))?;
    }
    ensure!(faults == PAGES, "{faults} faults for {PAGES} pages");
    ensure!(first_reads == 0, "a demand-paged page was not zeroed");
    ensure!(readback, "written words did not read back");
    all_pages_back(mm, free)
}

fn kmalloc_classes(mm: &mut Mm, _: &E820Map) -> Outcome {
    const SIZES: [u64; 15] =
        [0, 1, 8, 9, 64, 96, 100, 192, 256, 1000, 2048, 4096, 8192, 8193, 20_000];
    let free = mm.buddy.nr_free_pages();
    let (kmalloc, mut pages) = mm.slab();
    let mut live = [0u64; SIZES.len()];
    for (slot, &size) in live.iter_mut().zip(&SIZES) {
        let addr = kmalloc.kmalloc(&mut pages, size).map_err(|e| detail(format_args!("{e}")))?;
        let addr = addr.ok_or_else(|| detail(format_args!("no memory for {size} bytes")))?;
        ensure!(
            kmalloc.ksize(&mut pages, addr) >= size,
            "ksize of {size} bytes is {}",
            kmalloc.ksize(&mut pages, addr)
        );
        if size > 0 {
            // SAFETY: a fresh allocation of `size` bytes, reached through the direct map.
            unsafe {
                (addr as *mut u8)
                    .write_bytes(size.to_le_bytes()[0] | 1, usize::try_from(size).unwrap_or(0))
            };
        }
        *slot = addr;
    }
    ensure!(live[0] == guest::slab::ZERO_SIZE_PTR, "kmalloc(0) gave {:#x}", live[0]);
    for (&addr, &size) in live.iter().zip(&SIZES).skip(1) {
        let fill = size.to_le_bytes()[0] | 1;
        // SAFETY: a live allocation of `size` bytes.
        let intact = unsafe {
            core::slice::from_raw_parts(addr as *const u8, usize::try_from(size).unwrap_or(0))
        }
        .iter()
        .all(|&b| b == fill);
        ensure!(intact, "the {size}-byte allocation at {addr:#x} lost its contents");
    }
    for &addr in &live {
        kmalloc.kfree(&mut pages, addr).map_err(|e| detail(format_args!("{e}")))?;
    }
    for cache in &mut kmalloc.caches {
        cache.shrink(&mut pages);
    }
    all_pages_back(mm, free)
}

/// Runs `misuse` on two objects of a fresh debug cache (which refuses to be destroyed
/// while they live), expects `kind`, then cleans up and checks no page leaked.
fn slab_debug(
    mm: &mut Mm,
    kind: SlabErrorKind,
    misuse: impl FnOnce(
        &mut KmemCache,
        &mut BuddyPages<'_, crate::mm::vmemmap::Vmemmap>,
        u64,
        u64,
    ) -> Option<SlabError>,
) -> Outcome {
    let free = mm.buddy.nr_free_pages();
    let mut pages = BuddyPages { buddy: &mut mm.buddy, base: shared::layout::PAGE_OFFSET };
    // The cache stays in this frame while it has slabs: they point back to it.
    let mut cache = KmemCache::new("selftest-debug", 64, 8, true)
        .ok_or_else(|| detail(format_args!("no cache")))?;
    let take = |cache: &mut KmemCache, pages: &mut BuddyPages<'_, _>| {
        cache.alloc(pages).ok().flatten().ok_or_else(|| detail(format_args!("no object")))
    };
    let a = take(&mut cache, &mut pages)?;
    let b = take(&mut cache, &mut pages)?;
    ensure!(cache.destroy(&mut pages) == Err(2), "destroy with two live objects was not refused");
    let found = misuse(&mut cache, &mut pages, a, b);
    ensure!(found.map(|e| e.kind) == Some(kind), "expected {kind:?}, found {found:?}");
    ensure!(
        found.is_some_and(|e| e.cache == "selftest-debug"),
        "the report does not name the cache"
    );
    for object in [a, b] {
        // Ignore what the misuse already freed or put out of circulation.
        let _ = cache.free(&mut pages, object);
    }
    cache.shrink(&mut pages);
    all_pages_back(mm, free)
}

fn slab_double_free(mm: &mut Mm, _: &E820Map) -> Outcome {
    slab_debug(mm, SlabErrorKind::DoubleFree, |cache, pages, a, _| {
        cache.free(pages, a).ok()?;
        cache.free(pages, a).err()
    })
}

fn slab_bad_free(mm: &mut Mm, _: &E820Map) -> Outcome {
    slab_debug(mm, SlabErrorKind::NotAtBoundary, |cache, pages, a, _| {
        cache.free(pages, a + 8).err()
    })
}

fn slab_red_zone(mm: &mut Mm, _: &E820Map) -> Outcome {
    slab_debug(mm, SlabErrorKind::RedZoneOverwritten, |cache, pages, _, b| {
        // SAFETY: the first red-zone byte after the live object `b`: the misuse under test.
        unsafe { ((b + 64) as *mut u8).write(0) };
        let found = cache.free(pages, b).err();
        // Mend the red zone so the object can be freed afterwards.
        // SAFETY: as above.
        unsafe { ((b + 64) as *mut u8).write(guest::slab::RED_ACTIVE) };
        found
    })
}

fn slab_write_after_free(mm: &mut Mm, _: &E820Map) -> Outcome {
    slab_debug(mm, SlabErrorKind::WriteAfterFree, |cache, pages, a, _| {
        cache.free(pages, a).ok()?;
        // SAFETY: a byte of the freed object `a`, past its free pointer: the misuse under test.
        unsafe { ((a + 16) as *mut u8).write(1) };
        cache.alloc(pages).err()
    })
}

/// `alloc`'s collections on the kernel's allocator: reported as a check of its own. Runs
/// outside any borrow of the memory managers, which every allocation takes.
pub fn collections() -> bool {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;
    let outcome = (|| -> Outcome {
        let free = crate::mm::global::with(|mm| mm.buddy.nr_free_pages());
        {
            let mut numbers: Vec<u64> = (0..2000).collect();
            numbers.retain(|n| n % 3 != 0);
            ensure!(numbers.len() == 1333, "Vec kept {} numbers, not 1333", numbers.len());
            let mut tree = BTreeMap::new();
            for (i, n) in numbers.iter().enumerate().take(500) {
                tree.insert(*n, i);
            }
            ensure!(tree.len() == 500 && tree.get(&4) == Some(&2), "BTreeMap lookups");
            let boxed: Box<[u8; 5000]> = Box::new([7; 5000]);
            ensure!(boxed.iter().all(|&b| b == 7), "Box of 5000 bytes");
            // An over-aligned allocation.
            let layout = core::alloc::Layout::from_size_align(100, 256)
                .map_err(|_| detail(format_args!("layout")))?;
            // SAFETY: a valid, non-zero layout; freed below with the same layout.
            let ptr = unsafe { alloc::alloc::alloc(layout) };
            ensure!(!ptr.is_null() && ptr as u64 % 256 == 0, "256-byte alignment: {ptr:p}");
            // SAFETY: allocated above with this layout.
            unsafe { alloc::alloc::dealloc(ptr, layout) };
        }
        let after = crate::mm::global::with(|mm| {
            for cache in &mut mm.kmalloc.caches {
                let mut pages = guest::slab::BuddyPages {
                    buddy: &mut mm.buddy,
                    base: shared::layout::PAGE_OFFSET,
                };
                cache.shrink(&mut pages);
            }
            mm.buddy.drain_pcp();
            mm.buddy.nr_free_pages()
        });
        ensure!(after == free, "{after} pages free after the collections, {free} before");
        Ok(())
    })();
    report("alloc: Vec, BTreeMap, Box and aligned allocations work on kmalloc", outcome)
}
