//! The buddy allocator: orders, splits and merges, zones, refused frees, per-CPU lists
//! and watermarks.

use super::{detail, ensure, snapshot, CheckResult};
use crate::mm::setup::Mm;
use crate::mm::tables::KernelImage;
use guest::buddy::{FreeError, Watermark};
use guest::e820::E820Map;
use shared::layout::PAGE_SIZE;
use shared::page::{ZoneType, MAX_ORDER};

pub fn invariants(mm: &mut Mm, _: &E820Map) -> CheckResult {
    mm.buddy.check().map_err(|err| detail(format_args!("{err:?}")))
}

pub fn every_order(mm: &mut Mm, _: &E820Map) -> CheckResult {
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

pub fn split_and_merge(mm: &mut Mm, _: &E820Map) -> CheckResult {
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

pub fn zone_fallback(mm: &mut Mm, _: &E820Map) -> CheckResult {
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
fn with_block(mm: &mut Mm, abuse: impl Fn(&mut Mm, u64) -> CheckResult) -> CheckResult {
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

pub fn double_free(mm: &mut Mm, _: &E820Map) -> CheckResult {
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

pub fn never_allocated(mm: &mut Mm, _: &E820Map) -> CheckResult {
    let kernel_pfn = KernelImage::get().region().base / PAGE_SIZE;
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

pub fn wrong_order(mm: &mut Mm, _: &E820Map) -> CheckResult {
    with_block(mm, |mm, block| {
        let result = mm.buddy.free(block, 1);
        ensure!(
            result == Err(FreeError::WrongOrder { pfn: block, allocated: 2, given: 1 }),
            "gave {result:?}"
        );
        Ok(())
    })
}

pub fn per_cpu_lists(mm: &mut Mm, _: &E820Map) -> CheckResult {
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

pub fn watermark_min(mm: &mut Mm, _: &E820Map) -> CheckResult {
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
