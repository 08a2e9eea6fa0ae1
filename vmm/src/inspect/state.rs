//! The allocator state as the host derives it: the e820 map, memblock, zones, slab caches
//! and single `struct page`s, each read from the guest's own structures and bounded by
//! limits no well-formed guest reaches.

use super::{to_usize, InspectError, View};
use schemars::JsonSchema;
use serde::Serialize;
use shared::boot::{E820Entry, E820_MAX_ENTRIES};
use shared::hypercall::{SlabInfoReport, ZoneReport};
use shared::mm::{Lruvec, Region, SlabCache, Zone, SLAB_CACHE_SIZE, ZONE_SIZE};
use shared::mm::{VmEvents, LRU_ACTIVE_ANON, LRU_INACTIVE_ANON};
use shared::page::{
    Page, NR_ZONES, PG_ACTIVE, PG_ANON, PG_BUDDY, PG_HEAD, PG_LRU, PG_PCP, PG_SLAB, PG_SWAPCACHE,
    PG_TABLE, PG_UNEVICTABLE, PG_ZERO,
};
use std::fmt::Write;
use zerocopy::FromBytes;

/// Largest memblock region count the inspector reads.
pub const MAX_MEMBLOCK_REGIONS: u64 = 1 << 16;
/// Largest slab cache count the inspector reads.
pub const MAX_SLAB_CACHES: u64 = 256;
/// Longest cache name the inspector reads.
pub const MAX_NAME_LEN: u64 = 64;

/// `count` values of `T` at kernel virtual address `addr`, which the caller bounded.
fn read_array<T: FromBytes>(
    view: &mut View<'_, '_>,
    addr: u64,
    count: u64,
) -> Result<Vec<T>, InspectError> {
    let mut raw = vec![0u8; to_usize(count) * size_of::<T>()];
    view.read_virt(addr, &mut raw)?;
    Ok(raw
        .chunks_exact(size_of::<T>())
        .filter_map(|chunk| T::read_from_bytes(chunk).ok())
        .collect())
}

/// The sanitised e820 map.
pub fn e820(view: &mut View<'_, '_>) -> Result<Vec<E820Entry>, InspectError> {
    let count = view.info.e820_cnt;
    if count > E820_MAX_ENTRIES as u64 {
        return Err(InspectError::Corrupt(format!(
            "{count} e820 entries (at most {E820_MAX_ENTRIES})"
        )));
    }
    read_array(view, view.info.e820, count)
}

/// The kernel's e820 boot print.
pub fn e820_text(map: &[E820Entry]) -> String {
    let mut out = String::new();
    for &entry in map {
        let _ = shared::boot::write_e820_line(&mut out, "BIOS-e820", entry);
        out.push('\n');
    }
    out
}

/// memblock's two region sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MemblockRegions {
    /// Physical memory.
    pub memory: Vec<Region>,
    /// Ranges in use.
    pub reserved: Vec<Region>,
}

/// memblock as the guest left it at the hand-off.
pub fn memblock(view: &mut View<'_, '_>) -> Result<MemblockRegions, InspectError> {
    let info = view.info;
    Ok(MemblockRegions {
        memory: regions(view, info.memblock_memory, info.memblock_memory_cnt)?,
        reserved: regions(view, info.memblock_reserved, info.memblock_reserved_cnt)?,
    })
}

fn regions(view: &mut View<'_, '_>, addr: u64, count: u64) -> Result<Vec<Region>, InspectError> {
    if count > MAX_MEMBLOCK_REGIONS {
        return Err(InspectError::Corrupt(format!("{count} memblock regions")));
    }
    read_array(view, addr, count)
}

/// memblock in the format of Linux's `/sys/kernel/debug/memblock/{memory,reserved}`.
pub fn memblock_text(memblock: &MemblockRegions) -> String {
    let mut out = String::new();
    for (name, set) in [("memory", &memblock.memory), ("reserved", &memblock.reserved)] {
        let _ = writeln!(out, "{name}:");
        for (index, r) in set.iter().enumerate() {
            let end = r.base.saturating_add(r.size).saturating_sub(1);
            let _ = writeln!(out, "{index:4}: {:#018x}..{end:#018x}", r.base);
        }
    }
    out
}

/// The zones as the guest keeps them.
pub fn raw_zones(view: &mut View<'_, '_>) -> Result<Vec<Zone>, InspectError> {
    let count = view.info.nr_zones;
    if count > NR_ZONES as u64 {
        return Err(InspectError::Corrupt(format!("{count} zones (at most {NR_ZONES})")));
    }
    let base = view.info.zones;
    (0..count).map(|i| view.read_virt_obj(base.wrapping_add(i * ZONE_SIZE as u64))).collect()
}

/// Each populated zone's counters, as `/proc/zoneinfo` and `/proc/buddyinfo` show them.
pub fn zones(view: &mut View<'_, '_>) -> Result<Vec<ZoneReport>, InspectError> {
    Ok(raw_zones(view)?.iter().filter(|z| z.present > 0).map(ZoneReport::of).collect())
}

/// A slab cache: where it is, its state and its name.
#[derive(Clone, Debug)]
pub struct Cache {
    /// Kernel address (what slab pages record in `slab_cache`).
    pub addr: u64,
    /// Its state.
    pub raw: SlabCache,
    /// Its name.
    pub name: String,
}

/// The slab caches vmcoreinfo lists.
pub fn caches(view: &mut View<'_, '_>) -> Result<Vec<Cache>, InspectError> {
    let info = view.info;
    let stride = info.slab_cache_stride;
    if info.nr_slab_caches > MAX_SLAB_CACHES || !(SLAB_CACHE_SIZE as u64..=4096).contains(&stride) {
        return Err(InspectError::Corrupt(format!(
            "{} slab caches {stride} bytes apart",
            info.nr_slab_caches
        )));
    }
    let mut caches = Vec::new();
    for index in 0..info.nr_slab_caches {
        let addr = info.slab_caches.wrapping_add(index * stride);
        let raw: SlabCache = view.read_virt_obj(addr)?;
        let mut name = vec![0u8; to_usize(raw.name_len.min(MAX_NAME_LEN))];
        view.read_virt(raw.name_addr, &mut name)?;
        caches.push(Cache { addr, raw, name: String::from_utf8_lossy(&name).into_owned() });
    }
    Ok(caches)
}

/// Each cache's `/proc/slabinfo` line.
pub fn slabs(view: &mut View<'_, '_>) -> Result<Vec<SlabInfoReport>, InspectError> {
    Ok(caches(view)?.iter().map(|c| SlabInfoReport::of(&c.raw, c.name.as_bytes())).collect())
}

/// A decoded `struct page`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PageInfo {
    /// The frame.
    pub pfn: u64,
    /// Kernel address of the descriptor.
    pub addr: u64,
    /// The zone spanning the frame, if any.
    pub zone: Option<String>,
    /// Raw flags.
    pub flags: u64,
    /// Flag names.
    pub flag_names: Vec<&'static str>,
    /// Reference count.
    pub refcount: u32,
    /// Order of the block the page heads.
    pub order: u32,
    /// Free list: next frame (`PG_BUDDY`).
    pub next: u64,
    /// Free list: previous frame.
    pub prev: u64,
    /// Slab: the owning cache's name, if the page heads a slab of a known cache.
    pub slab_cache_name: Option<String>,
    /// Slab: the owning cache's address.
    pub slab_cache: u64,
    /// Slab: first free object.
    pub slab_freelist: u64,
    /// Slab: objects in use.
    pub slab_inuse: u16,
    /// Slab: objects.
    pub slab_objects: u16,
    /// User page: the page-table entries that map it.
    pub mapcount: u32,
    /// Owner-specific data.
    pub private: u64,
}

/// Names of the `PG_*` flags set in `flags`.
pub fn flag_names(flags: u64) -> Vec<&'static str> {
    [
        (PG_BUDDY, "buddy"),
        (PG_PCP, "pcp"),
        (PG_HEAD, "head"),
        (PG_SLAB, "slab"),
        (PG_TABLE, "table"),
        (PG_ANON, "anon"),
        (PG_ZERO, "zero"),
        (PG_LRU, "lru"),
        (PG_ACTIVE, "active"),
        (PG_SWAPCACHE, "swapcache"),
        (PG_UNEVICTABLE, "unevictable"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// The decoded `struct page` of `pfn`.
pub fn page(view: &mut View<'_, '_>, pfn: u64) -> Result<PageInfo, InspectError> {
    let page: Page = view.page(pfn)?;
    let zone = raw_zones(view)?
        .iter()
        .find(|z| z.spans(pfn))
        .and_then(Zone::zone_type)
        .map(|z| z.name().to_string());
    let slab_cache_name = if page.flags & PG_SLAB != 0 {
        caches(view)?.into_iter().find(|c| c.addr == page.slab_cache).map(|c| c.name)
    } else {
        None
    };
    Ok(PageInfo {
        pfn,
        addr: view.page_addr(pfn),
        zone,
        flags: page.flags,
        flag_names: flag_names(page.flags),
        refcount: page.refcount,
        order: page.order,
        next: page.next,
        prev: page.prev,
        slab_cache_name,
        slab_cache: page.slab_cache,
        slab_freelist: page.slab_freelist,
        slab_inuse: page.slab_inuse,
        slab_objects: page.slab_objects,
        mapcount: page.mapcount,
        private: page.private,
    })
}

/// A decoded page in the style of Linux's `dump_page`.
pub fn page_text(p: &PageInfo) -> String {
    let mut out = format!(
        "page:{:#x} pfn:{:#x} zone:{}\nflags: {:#x}({})\nrefcount:{} order:{}",
        p.addr,
        p.pfn,
        p.zone.as_deref().unwrap_or("none"),
        p.flags,
        p.flag_names.join("|"),
        p.refcount,
        p.order
    );
    if p.flags & PG_ANON != 0 {
        let _ = write!(out, " mapcount:{}", p.mapcount);
    }
    if p.flags & PG_BUDDY != 0 {
        let link =
            |pfn: u64| if pfn == u64::MAX { "none".to_string() } else { format!("{pfn:#x}") };
        let _ = write!(out, " next:{} prev:{}", link(p.next), link(p.prev));
    }
    if p.flags & PG_SLAB != 0 {
        let _ = write!(
            out,
            "\nslab: cache:{} ({:#x}) inuse:{}/{} freelist:{:#x}",
            p.slab_cache_name.as_deref().unwrap_or("unknown"),
            p.slab_cache,
            p.slab_inuse,
            p.slab_objects,
            p.slab_freelist
        );
    }
    if p.private != 0 {
        let _ = write!(out, "\nprivate:{:#x}", p.private);
    }
    out.push('\n');
    out
}

/// The `/proc/meminfo` fields that apply to this kernel, in kB. There is no page cache,
/// so the file fields (Buffers, Cached, Active(file)…) do not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Meminfo {
    /// MemTotal: the pages the buddy allocator manages.
    pub mem_total: u64,
    /// MemFree: free pages on the buddy lists (the per-CPU lists' are not free, as in
    /// Linux's `NR_FREE_PAGES`).
    pub mem_free: u64,
    /// MemAvailable: MemFree less each zone's high watermark and largest `lowmem_reserve`
    /// (Linux's `totalreserve_pages`; nothing here is reclaimable yet).
    pub mem_available: u64,
    /// Active(anon): pages on the active anonymous LRU list.
    pub active_anon: u64,
    /// Inactive(anon): pages on the inactive one.
    pub inactive_anon: u64,
    /// AnonPages: pages mapped by processes (a huge page counts its 512).
    pub anon_pages: u64,
    /// AnonHugePages: of those, the ones in whole 2 MiB blocks.
    pub anon_huge_pages: u64,
    /// PageTables: page-table pages, the kernel's and the processes'.
    pub page_tables: u64,
    /// Slab: the slab caches' pages.
    pub slab: u64,
    /// SReclaimable: none of the caches is reclaimable.
    pub s_reclaimable: u64,
    /// SUnreclaim: all of Slab.
    pub s_unreclaim: u64,
    /// SwapTotal: the swap device's slots (`vmm run --swap`).
    pub swap_total: u64,
    /// SwapFree: its slots not in use.
    pub swap_free: u64,
    /// VmallocTotal: the vmalloc area.
    pub vmalloc_total: u64,
}

/// A transparent huge page's order.
const HUGE_ORDER: u32 = 9;

/// `/proc/meminfo`, from the zones, the slab caches, the memory map and vmcoreinfo.
pub fn meminfo(view: &mut View<'_, '_>) -> Result<Meminfo, InspectError> {
    let info = view.info;
    let zones = raw_zones(view)?;
    let sum = |field: fn(&Zone) -> u64| zones.iter().map(field).fold(0u64, u64::saturating_add);
    let (managed, free) = (sum(|z| z.managed), sum(|z| z.free));
    // Linux's `totalreserve_pages`: each zone's high watermark and largest reserve.
    let reserve = sum(|z| {
        let kept = z.lowmem_reserve.iter().copied().max().unwrap_or(0);
        z.watermarks.high.saturating_add(kept).min(z.managed)
    });
    let slab_pages = slabs(view)?
        .iter()
        .map(|s| s.num_slabs.saturating_mul(s.pagesperslab))
        .fold(0u64, u64::saturating_add);
    // The memory map of every RAM region, once: user pages and page tables by their flags.
    let mb = memblock(view)?;
    let ranges: Vec<(u64, u64)> = mb
        .memory
        .iter()
        .map(|r| (r.base.div_ceil(4096), (r.base.saturating_add(r.size) / 4096).min(info.max_pfn)))
        .collect();
    view.copy_memmap(&ranges)?;
    let (mut anon, mut anon_huge, mut tables) = (0u64, 0u64, 0u64);
    for (index, &(start, end)) in ranges.iter().enumerate() {
        view.budget.spend(end.saturating_sub(start), || {
            format!("reading the memory map of memblock memory region {index}")
        })?;
        let mut pfn = start;
        while pfn < end {
            let Ok(page) = view.page(pfn) else {
                pfn += 1;
                continue;
            };
            let mut step = 1;
            if page.flags & PG_ANON != 0 {
                if page.flags & PG_HEAD != 0 && page.order == HUGE_ORDER {
                    // A whole huge block: its mappings count on its head.
                    step = 1u64 << HUGE_ORDER;
                    anon_huge = anon_huge.saturating_add(step);
                }
                anon = anon.saturating_add(step);
            }
            if page.flags & PG_TABLE != 0 {
                tables += 1;
            }
            pfn = pfn.saturating_add(step);
        }
    }
    let swap_used = swap_counts(view)?.iter().filter(|&&count| count != 0).count() as u64;
    let lruvec: Lruvec =
        if info.lruvec == 0 { Lruvec::EMPTY } else { view.read_virt_obj(info.lruvec)? };
    let kib = |pages: u64| pages.saturating_mul(4);
    Ok(Meminfo {
        mem_total: kib(managed),
        mem_free: kib(free),
        mem_available: kib(free.saturating_sub(reserve)),
        active_anon: kib(lruvec.lists[LRU_ACTIVE_ANON].nr_pages),
        inactive_anon: kib(lruvec.lists[LRU_INACTIVE_ANON].nr_pages),
        anon_pages: kib(anon),
        anon_huge_pages: kib(anon_huge),
        page_tables: kib(tables),
        slab: kib(slab_pages),
        s_reclaimable: 0,
        s_unreclaim: kib(slab_pages),
        swap_total: kib(info.nr_swap_slots),
        swap_free: kib(info.nr_swap_slots - swap_used),
        vmalloc_total: info.vmalloc_end.saturating_sub(info.vmalloc_start) / 1024,
    })
}

/// `/proc/meminfo` text: each name padded to 16 columns, the value to 8, then "kB".
pub fn meminfo_text(m: &Meminfo) -> String {
    // In Linux's order.
    let lines = [
        ("MemTotal", m.mem_total),
        ("MemFree", m.mem_free),
        ("MemAvailable", m.mem_available),
        ("Active(anon)", m.active_anon),
        ("Inactive(anon)", m.inactive_anon),
        ("SwapTotal", m.swap_total),
        ("SwapFree", m.swap_free),
        ("AnonPages", m.anon_pages),
        ("Slab", m.slab),
        ("SReclaimable", m.s_reclaimable),
        ("SUnreclaim", m.s_unreclaim),
        ("PageTables", m.page_tables),
        ("VmallocTotal", m.vmalloc_total),
        ("AnonHugePages", m.anon_huge_pages),
    ];
    let mut out = String::new();
    for (name, kb) in lines {
        let _ = writeln!(out, "{:<16}{kb:>8} kB", format!("{name}:"));
    }
    out
}

/// The most swap slots a guest can have (64 GiB of 4 KiB pages; `vmm run --swap`'s
/// limit): a larger count in vmcoreinfo is corrupt.
pub const MAX_SWAP_SLOTS: u64 = 16 << 20;

/// The swap map: each slot's reference count (vmcoreinfo's `swap_map`, `nr_swap_slots`
/// bytes long); empty without a swap device.
pub fn swap_counts(view: &mut View<'_, '_>) -> Result<Vec<u8>, InspectError> {
    let (map, slots) = (view.info.swap_map, view.info.nr_swap_slots);
    if map == 0 || slots == 0 {
        return Ok(Vec::new());
    }
    if slots > MAX_SWAP_SLOTS {
        return Err(InspectError::Corrupt(format!(
            "vmcoreinfo counts {slots} swap slots, more than the {MAX_SWAP_SLOTS} a guest can have"
        )));
    }
    let mut counts = vec![0; to_usize(slots)];
    view.read_virt(map, &mut counts)?;
    Ok(counts)
}

/// `/proc/vmstat`: the page counts and event counters that apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Vmstat {
    /// nr_free_pages: pages on the buddy lists.
    pub nr_free_pages: u64,
    /// nr_inactive_anon: pages on the inactive anonymous LRU list.
    pub nr_inactive_anon: u64,
    /// nr_active_anon: pages on the active one.
    pub nr_active_anon: u64,
    /// The event counters (vmcoreinfo's `vm_events`).
    #[serde(flatten)]
    pub events: VmEvents,
}

/// `/proc/vmstat`, from the zones, the LRU lists and the event counters.
pub fn vmstat(view: &mut View<'_, '_>) -> Result<Vmstat, InspectError> {
    let info = view.info;
    let free = raw_zones(view)?.iter().map(|z| z.free).fold(0u64, u64::saturating_add);
    let lruvec: Lruvec =
        if info.lruvec == 0 { Lruvec::EMPTY } else { view.read_virt_obj(info.lruvec)? };
    let events: VmEvents =
        if info.vm_events == 0 { VmEvents::default() } else { view.read_virt_obj(info.vm_events)? };
    Ok(Vmstat {
        nr_free_pages: free,
        nr_inactive_anon: lruvec.lists[LRU_INACTIVE_ANON].nr_pages,
        nr_active_anon: lruvec.lists[LRU_ACTIVE_ANON].nr_pages,
        events,
    })
}

/// `/proc/vmstat` text: `name value` lines, in Linux's order.
pub fn vmstat_text(v: &Vmstat) -> String {
    let e = &v.events;
    let lines = [
        ("nr_free_pages", v.nr_free_pages),
        ("nr_inactive_anon", v.nr_inactive_anon),
        ("nr_active_anon", v.nr_active_anon),
        ("pswpin", e.pswpin),
        ("pswpout", e.pswpout),
        ("pgfault", e.pgfault),
        ("pgmajfault", e.pgmajfault),
        ("pgsteal_kswapd", e.pgsteal_kswapd),
        ("pgsteal_direct", e.pgsteal_direct),
        ("pgscan_kswapd", e.pgscan_kswapd),
        ("pgscan_direct", e.pgscan_direct),
        ("oom_kill", e.oom_kill),
    ];
    lines.iter().fold(String::new(), |mut out, (name, value)| {
        let _ = writeln!(out, "{name} {value}");
        out
    })
}
