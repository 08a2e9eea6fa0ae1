//! `check`: every RAM page accounted for exactly once, every list well formed, every
//! counter equal to what the lists hold.
//!
//! Passes, each marking page frames with one owner:
//!
//! ```text
//! 1 kernel image      [kernel_start, kernel_end) from vmcoreinfo
//! 2 page tables       every table reachable from cr3; the pages backing the vmemmap
//! 3 free lists        per zone and order, step-bounded; a block met twice is a cycle
//!   per-CPU lists     per zone and order (0-3); a block covers 2^order pages
//! 4 memmap scan       every struct page of RAM: slabs (their freelists walked, objects
//!                     counted), other allocated blocks (PG_HEAD), stray PG_BUDDY/PG_PCP;
//!   partial lists     per cache, step-bounded, a slab met twice is a cycle
//! 5 memblock          what is left inside a reserved range
//! 6 nobody            what is left: a finding
//! 7 counters          zone free, nr_free and managed; cache objects, slabs, empty slabs
//! ```
//!
//! Two owners for one page is a finding, except that an allocated block (PG_HEAD) may be
//! a page table or a slab: those come from the buddy allocator too.

use super::state::{caches, memblock, raw_zones, Cache};
use super::{to_usize, InspectError, Pod, View};
use serde::Serialize;
use shared::mm::PCP_CAPACITY;
use shared::page::{Page, MAX_ORDER, NO_PFN, PAGE_STRUCT_SIZE, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB};
use shared::walk::{for_each_leaf, EnumError, Leaf, PhysMem, Visitor};
use std::fmt::Write;

/// Findings listed; more are only counted.
pub const MAX_FINDINGS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Owner {
    Nobody,
    Kernel,
    Vmemmap,
    Table,
    Free,
    Pcp,
    Slab,
    Allocated,
    Reserved,
}

const OWNERS: [(Owner, &str); 9] = [
    (Owner::Free, "free (buddy)"),
    (Owner::Pcp, "per-CPU lists"),
    (Owner::Slab, "slab"),
    (Owner::Table, "page tables"),
    (Owner::Vmemmap, "vmemmap"),
    (Owner::Kernel, "kernel image"),
    (Owner::Reserved, "memblock reserved"),
    (Owner::Allocated, "other allocated"),
    (Owner::Nobody, "owned by nobody"),
];

fn owner_name(owner: Owner) -> &'static str {
    OWNERS.iter().find(|(o, _)| *o == owner).map_or("?", |(_, name)| name)
}

/// Pages of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The kind.
    pub owner: &'static str,
    /// RAM pages of that kind.
    pub pages: u64,
}

/// One slab cache as the check found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheCount {
    /// The cache.
    pub name: String,
    /// Slabs found in the memory map.
    pub slabs: u64,
    /// Pages those slabs take.
    pub pages: u64,
    /// Objects in use in them.
    pub objects_in_use: u64,
    /// Free objects on their freelists.
    pub objects_free: u64,
}

/// The result of `check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// RAM pages (memblock `memory`).
    pub ram_pages: u64,
    /// RAM pages by owner; they add up to `ram_pages`.
    pub pages: Vec<Count>,
    /// Slab caches.
    pub caches: Vec<CacheCount>,
    /// What is wrong, worst first found.
    pub findings: Vec<String>,
    /// Findings beyond [`MAX_FINDINGS`], counted only.
    pub findings_omitted: u64,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

struct Marks {
    owner: Vec<Owner>,
    findings: Vec<String>,
    omitted: u64,
}

impl Marks {
    fn finding(&mut self, text: String) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(text);
        } else {
            self.omitted += 1;
        }
    }

    /// Gives `count` frames from `pfn` to `owner`; false if one already had an owner that
    /// excludes it (reported).
    fn mark(&mut self, pfn: u64, count: u64, owner: Owner) -> bool {
        let len = self.owner.len() as u64;
        if pfn >= len || count > len - pfn {
            self.finding(format!(
                "pfn {pfn:#x}+{count}: {} beyond the last page frame {:#x}",
                owner_name(owner),
                len.saturating_sub(1)
            ));
            return false;
        }
        let mut clean = true;
        for p in pfn..pfn + count {
            let old = self.owner[to_usize(p)];
            match (old, owner) {
                (Owner::Nobody, _) => self.owner[to_usize(p)] = owner,
                // Page tables and slabs are allocated blocks too; reserved is what is left.
                (Owner::Table | Owner::Slab, Owner::Allocated) | (_, Owner::Reserved) => {}
                _ => {
                    clean = false;
                    self.finding(format!(
                        "pfn {p:#x} is both {} and {}",
                        owner_name(old),
                        owner_name(owner)
                    ));
                    break;
                }
            }
        }
        clean
    }
}

struct Tables<'m> {
    marks: &'m mut Marks,
    vmemmap: (u64, u64),
}

impl Visitor for Tables<'_> {
    fn table(&mut self, _level: u8, gpa: u64) {
        self.marks.mark(gpa / 4096, 1, Owner::Table);
    }

    fn leaf(&mut self, leaf: Leaf) -> bool {
        if (self.vmemmap.0..self.vmemmap.1).contains(&leaf.virt) {
            self.marks.mark(leaf.phys / 4096, leaf.size / 4096, Owner::Vmemmap);
        }
        true
    }
}

/// Runs every pass over one snapshot.
pub fn check(view: &mut View<'_, '_>) -> Result<CheckReport, InspectError> {
    let info = view.info;
    let ram_end: u64 = view.ram.ranges().map(|(start, len)| start + len).max().unwrap_or(0);
    if info.max_pfn > ram_end / 4096 {
        return Err(InspectError::Corrupt(format!(
            "max_pfn {:#x} lies beyond guest RAM (which ends at {ram_end:#x})",
            info.max_pfn
        )));
    }
    let mut marks = Marks {
        owner: vec![Owner::Nobody; to_usize(info.max_pfn)],
        findings: Vec::new(),
        omitted: 0,
    };

    // 1: the kernel image.
    let kernel_pages = info.kernel_end.saturating_sub(info.kernel_start).div_ceil(4096);
    marks.mark(info.kernel_start / 4096, kernel_pages, Owner::Kernel);

    // 2: page tables and the vmemmap's backing.
    let vmemmap_end = info.vmemmap.saturating_add(info.max_pfn * PAGE_STRUCT_SIZE as u64);
    let mut budget = super::pagetable::ENTRY_BUDGET;
    let mut tables = Tables { marks: &mut marks, vmemmap: (info.vmemmap, vmemmap_end) };
    if let Err(EnumError::Budget) =
        for_each_leaf(view.ram, info.cr3, 0, u64::MAX, &mut budget, &mut tables)
    {
        marks.finding("the page-table tree reads more entries than a sound tree can hold".into());
    }

    // 3: free lists and per-CPU lists.
    let zones = raw_zones(view)?;
    let mut zone_pages = vec![(0u64, 0u64, 0u64); zones.len()]; // free, pcp, allocated
    for (z, zone) in zones.iter().enumerate() {
        let name = zone.zone_type().map_or("?", |t| t.name());
        let mut free = 0u64;
        for order in 0..=MAX_ORDER {
            let area = zone.free_area[order as usize];
            let walked = walk_free_list(view, &mut marks, zone, name, order, area.head);
            if walked != area.nr_free {
                marks.finding(format!(
                    "zone {name} order {order}: nr_free is {} but the list holds {walked} blocks",
                    area.nr_free
                ));
            }
            free += walked << order;
        }
        if free != zone.free {
            marks.finding(format!(
                "zone {name}: free is {} but its lists hold {free} pages",
                zone.free
            ));
        }
        for (list, order) in zone.pcp.iter().zip(0u32..) {
            if list.count > PCP_CAPACITY as u64 {
                marks.finding(format!(
                    "zone {name}: per-CPU list of order {order} holds {} blocks, more than {PCP_CAPACITY}",
                    list.count
                ));
            }
            for &pfn in list.pfns() {
                let flagged =
                    view.page(pfn).is_ok_and(|p| p.flags & PG_PCP != 0 && p.order == order);
                let inside = pfn % (1 << order) == 0
                    && zone.spans(pfn)
                    && zone.spans(pfn.saturating_add((1 << order) - 1));
                if !inside || !flagged {
                    marks.finding(format!(
                        "zone {name}: per-CPU block {pfn:#x} of order {order} is misaligned, \
                         outside the zone or not flagged PG_PCP with that order"
                    ));
                }
                marks.mark(pfn, 1 << order, Owner::Pcp);
            }
        }
        zone_pages[z] = (free, zone.pcp_pages(), 0);
    }

    // 4: the memory map.
    let mb = memblock(view)?;
    let caches = caches(view)?;
    let mut cache_counts: Vec<CacheCount> = caches
        .iter()
        .map(|c| CacheCount {
            name: c.name.clone(),
            slabs: 0,
            pages: 0,
            objects_in_use: 0,
            objects_free: 0,
        })
        .collect();
    let mut ram_pages = 0u64;
    for region in &mb.memory {
        let start = region.base.div_ceil(4096);
        let end = (region.base.saturating_add(region.size) / 4096).min(info.max_pfn);
        ram_pages += end.saturating_sub(start);
        let mut pfn = start;
        while pfn < end {
            // One read per 4 KiB of memmap: 64 descriptors.
            let chunk = (64 - pfn % 64).min(end - pfn);
            let mut raw = vec![0u8; to_usize(chunk) * PAGE_STRUCT_SIZE];
            if let Err(err) = view.read_virt(view.page_addr(pfn), &mut raw) {
                marks.finding(format!("struct pages of pfn {pfn:#x}+{chunk} unreadable: {err}"));
                pfn += chunk;
                continue;
            }
            for (i, bytes) in raw.chunks_exact(PAGE_STRUCT_SIZE).enumerate() {
                let p = pfn + i as u64;
                let page = Page::from_bytes(bytes);
                scan_page(
                    view,
                    &mut marks,
                    &zones,
                    &mut zone_pages,
                    &caches,
                    &mut cache_counts,
                    p,
                    &page,
                );
            }
            pfn += chunk;
        }
    }
    for cache in &caches {
        walk_partial(view, &mut marks, cache);
    }

    // 5: memblock reservations; 6: nobody.
    for r in &mb.reserved {
        let start = r.base / 4096;
        let end = r.base.saturating_add(r.size).div_ceil(4096).min(info.max_pfn);
        for pfn in start..end {
            match marks.owner[to_usize(pfn)] {
                Owner::Nobody => marks.owner[to_usize(pfn)] = Owner::Reserved,
                Owner::Free | Owner::Pcp => {
                    marks.finding(format!(
                        "pfn {pfn:#x} is free but inside memblock reservation {:#x}+{:#x}",
                        r.base, r.size
                    ));
                }
                _ => {}
            }
        }
    }
    let mut counts = vec![0u64; OWNERS.len()];
    let (mut nobody_first, mut nobody) = (None, 0u64);
    for region in &mb.memory {
        let start = region.base.div_ceil(4096);
        let end = (region.base.saturating_add(region.size) / 4096).min(info.max_pfn);
        for pfn in start..end {
            let owner = marks.owner[to_usize(pfn)];
            if owner == Owner::Nobody {
                nobody += 1;
                nobody_first.get_or_insert(pfn);
            }
            if let Some(slot) = OWNERS.iter().position(|(o, _)| *o == owner) {
                counts[slot] += 1;
            }
        }
    }
    if let Some(first) = nobody_first {
        marks.finding(format!(
            "{nobody} RAM pages are owned by nobody (not free, allocated or reserved), the first pfn {first:#x}"
        ));
    }

    // 7: counters.
    for (zone, &(free, pcp, allocated)) in zones.iter().zip(&zone_pages) {
        let name = zone.zone_type().map_or("?", |t| t.name());
        if zone.managed != free + pcp + allocated {
            marks.finding(format!(
                "zone {name}: managed is {} but free {free} + per-CPU {pcp} + allocated {allocated} = {}",
                zone.managed,
                free + pcp + allocated
            ));
        }
    }
    for (cache, count) in caches.iter().zip(&cache_counts) {
        if cache.raw.in_use != count.objects_in_use || cache.raw.slabs != count.slabs {
            marks.finding(format!(
                "cache {}: counts {} objects in {} slabs, its slabs hold {} objects in {} slabs",
                cache.name, cache.raw.in_use, cache.raw.slabs, count.objects_in_use, count.slabs
            ));
        }
    }
    Ok(CheckReport {
        ram_pages,
        pages: OWNERS
            .iter()
            .zip(counts)
            .map(|((_, name), pages)| Count { owner: name, pages })
            .collect(),
        caches: cache_counts,
        findings: marks.findings,
        findings_omitted: marks.omitted,
    })
}

/// Walks one free list; returns the blocks it holds (up to where it breaks).
fn walk_free_list(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    zone: &shared::mm::Zone,
    name: &str,
    order: u32,
    head: u64,
) -> u64 {
    let bound = (zone.spanned() >> order).saturating_add(1);
    let (mut pfn, mut prev, mut count) = (head, NO_PFN, 0u64);
    while pfn != NO_PFN {
        let at = format!("zone {name} order {order} free list, block {count} (pfn {pfn:#x})");
        if count >= bound {
            marks.finding(format!("{at}: longer than the zone can hold: a cycle"));
            break;
        }
        if pfn % (1 << order) != 0 || !zone.spans(pfn) || !zone.spans(pfn + ((1 << order) - 1)) {
            marks.finding(format!("{at}: misaligned or outside the zone"));
            break;
        }
        let page = match view.page(pfn) {
            Ok(page) => page,
            Err(err) => {
                marks.finding(format!("{at}: {err}"));
                break;
            }
        };
        if page.flags & PG_BUDDY == 0 || page.order != order {
            marks.finding(format!(
                "{at}: not a free block of this order (flags {:#x}, order {})",
                page.flags, page.order
            ));
        }
        if page.prev != prev {
            marks.finding(format!("{at}: back link is {:#x}, expected {prev:#x}", page.prev));
        }
        if marks.owner.get(to_usize(pfn)) == Some(&Owner::Free) {
            marks.finding(format!("{at}: met twice: the list loops or shares blocks"));
            break;
        }
        if !marks.mark(pfn, 1 << order, Owner::Free) {
            break; // `mark` named the other owner.
        }
        count += 1;
        (prev, pfn) = (pfn, page.next);
    }
    count
}

#[allow(clippy::too_many_arguments)]
fn scan_page(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    zones: &[shared::mm::Zone],
    zone_pages: &mut [(u64, u64, u64)],
    caches: &[Cache],
    counts: &mut [CacheCount],
    pfn: u64,
    page: &Page,
) {
    let owner = marks.owner[to_usize(pfn)];
    if page.flags & PG_BUDDY != 0 && owner != Owner::Free {
        marks.finding(format!("pfn {pfn:#x} is flagged PG_BUDDY but on no free list"));
    }
    if page.flags & PG_PCP != 0 && owner != Owner::Pcp {
        marks.finding(format!("pfn {pfn:#x} is flagged PG_PCP but on no per-CPU list"));
    }
    if page.flags & PG_HEAD == 0 {
        return;
    }
    if page.order > MAX_ORDER {
        marks.finding(format!(
            "pfn {pfn:#x}: allocated block of order {} (at most {MAX_ORDER})",
            page.order
        ));
        return;
    }
    let pages = 1u64 << page.order;
    if let Some(z) = zones.iter().position(|z| z.spans(pfn)) {
        zone_pages[z].2 += pages;
    }
    if page.flags & PG_SLAB != 0 {
        match caches.iter().position(|c| c.addr == page.slab_cache) {
            Some(c) => check_slab(view, marks, &caches[c], &mut counts[c], pfn, page),
            None => {
                marks.finding(format!("pfn {pfn:#x}: slab of unknown cache {:#x}", page.slab_cache))
            }
        }
        marks.mark(pfn, pages, Owner::Slab);
    } else {
        marks.mark(pfn, pages, Owner::Allocated);
    }
}

/// Walks a cache's partial list: slabs of this cache with free objects, never the current
/// one, linked both ways, met once; its empty slabs equal the cache's count of them.
fn walk_partial(view: &mut View<'_, '_>, marks: &mut Marks, cache: &Cache) {
    let c = &cache.raw;
    let (mut slab, mut prev, mut empty) = (c.partial, NO_PFN, 0u64);
    let mut seen = std::collections::HashSet::new();
    while slab != NO_PFN {
        let at = format!("cache {} partial list, slab {} (pfn {slab:#x})", cache.name, seen.len());
        if !seen.insert(slab) {
            marks.finding(format!("{at}: met twice: the list loops"));
            return;
        }
        let page = match view.page(slab) {
            Ok(page) => page,
            Err(err) => {
                marks.finding(format!("{at}: {err}"));
                return;
            }
        };
        if page.flags & PG_SLAB == 0 || page.slab_cache != cache.addr || slab == c.cpu_slab {
            marks.finding(format!(
                "{at}: not a slab of this cache off the CPU (flags {:#x})",
                page.flags
            ));
            return;
        }
        if page.prev != prev {
            marks.finding(format!("{at}: back link is {:#x}, expected {prev:#x}", page.prev));
        }
        if page.slab_inuse >= page.slab_objects {
            marks.finding(format!(
                "{at}: full ({} of {} objects in use)",
                page.slab_inuse, page.slab_objects
            ));
        }
        empty += u64::from(page.slab_inuse == 0);
        (prev, slab) = (slab, page.next);
    }
    if empty != c.empty {
        marks.finding(format!(
            "cache {}: counts {} empty slabs, its partial list holds {empty}",
            cache.name, c.empty
        ));
    }
}

/// Walks one slab's freelist: every link inside the slab, at an object, met once; free
/// objects and objects in use adding up to the slab's objects.
fn check_slab(
    view: &mut View<'_, '_>,
    marks: &mut Marks,
    cache: &Cache,
    count: &mut CacheCount,
    pfn: u64,
    page: &Page,
) {
    let c = &cache.raw;
    let current = pfn == c.cpu_slab;
    let (inuse, mut object) =
        if current { (c.cpu_inuse, c.cpu_freelist) } else { (page.slab_inuse, page.slab_freelist) };
    count.slabs += 1;
    count.pages += 1 << page.order.min(MAX_ORDER);
    count.objects_in_use += u64::from(inuse);
    let at = format!("cache {} slab pfn {pfn:#x}", cache.name);
    if c.order != page.order || u64::from(page.slab_objects) != c.objects || c.stride == 0 {
        marks.finding(format!(
            "{at}: order {} and {} objects, the cache says order {} and {} objects",
            page.order, page.slab_objects, c.order, c.objects
        ));
        return;
    }
    let base = view.info.page_offset.wrapping_add(pfn * 4096);
    let mut seen = vec![false; c.objects.min(1 << 16) as usize];
    let mut free = 0u64;
    while object != 0 {
        let offset = object.wrapping_sub(base);
        let index = offset / c.stride;
        if offset % c.stride != 0 || index >= seen.len() as u64 {
            marks.finding(format!(
                "{at}: freelist link {object:#x} after {free} free objects is not an object of the slab"
            ));
            return;
        }
        if std::mem::replace(&mut seen[to_usize(index)], true) {
            marks.finding(format!(
                "{at}: freelist loops back to object {index} after {free} free objects"
            ));
            return;
        }
        free += 1;
        let phys = object.wrapping_sub(view.info.page_offset);
        match view.ram.read_u64(phys) {
            Some(next) => object = next,
            None => {
                marks.finding(format!("{at}: free object {object:#x} is not in RAM"));
                return;
            }
        }
    }
    count.objects_free += free;
    if free + u64::from(inuse) != c.objects {
        marks.finding(format!(
            "{at}: {free} free objects and {inuse} in use, but the slab has {} objects",
            c.objects
        ));
    }
}

/// The report as text: pages by owner, caches, then the findings or "OK".
pub fn check_text(report: &CheckReport) -> String {
    let mut out = format!("RAM pages: {}\n", report.ram_pages);
    for count in &report.pages {
        let _ = writeln!(out, "  {:<20} {:>10}", count.owner, count.pages);
    }
    let _ = writeln!(
        out,
        "slab caches: {:<15} {:>6} {:>6} {:>8} {:>8}",
        "", "pages", "slabs", "in use", "free"
    );
    for c in report.caches.iter().filter(|c| c.slabs > 0) {
        let _ = writeln!(
            out,
            "  {:<26} {:>6} {:>6} {:>8} {:>8}",
            c.name, c.pages, c.slabs, c.objects_in_use, c.objects_free
        );
    }
    if report.ok() {
        out.push_str("OK: every RAM page has exactly one owner; free, per-CPU, partial and slab free lists are well formed; zone and cache counters match\n");
    } else {
        let _ =
            writeln!(out, "{} problems:", report.findings.len() as u64 + report.findings_omitted);
        for finding in &report.findings {
            let _ = writeln!(out, "  {finding}");
        }
        if report.findings_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more", report.findings_omitted);
        }
    }
    out
}
