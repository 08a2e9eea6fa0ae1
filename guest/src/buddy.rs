//! The buddy page allocator, as Linux's `mm/page_alloc.c`.
//!
//! Life cycle: [`Buddy::add_present`] records the present memory of each zone (from
//! memblock's `memory`); [`Buddy::hand_off`] gives it every free memblock range, cut into
//! maximal aligned blocks (`memblock_free_all`); [`Buddy::setup_watermarks`] sets min, low
//! and high. Then blocks of 2^order pages are allocated with [`Buddy::alloc_pages`] and
//! returned with [`Buddy::free_pages`] (Linux's `alloc_pages`): orders 0 to 3 go through the
//! zone's per-CPU list of that order, a stack refilled from and drained to the buddy lists
//! a batch at a time, as Linux's `rmqueue_pcplist`; larger orders, and [`Buddy::alloc`] /
//! [`Buddy::free`] for any order, work on the buddy lists directly.
//!
//! A free block of order `k` is recorded in its first page only: `PG_BUDDY`, `order = k`,
//! and links on `free_area[k]`'s doubly linked list (by page-frame number). An allocated
//! block's first page has `PG_HEAD` and its order; a block on a per-CPU list has `PG_PCP`
//! and its order. All other pages keep the zero state, so the hand-off costs one page write
//! per block.
//!
//! Invariants, checked by [`Buddy::check`] and asserted by the property tests:
//! (a) every free block is aligned to its order, inside its zone, and flagged `PG_BUDDY`
//!     with that order;
//! (b) no free block has a free buddy of the same order (it would have been merged);
//! (c) `nr_free` of each order equals the length of its list, and the zone's `free` equals
//!     the pages on its lists;
//! (d) per-CPU blocks are flagged `PG_PCP` with their list's order, and
//!     `free + per-CPU + allocated = managed`.

pub use shared::mm::{
    FreeArea, Pcp, Watermarks, Zone, NR_PCP_LISTS, PCP_BATCH, PCP_CAPACITY, PCP_HIGH, PCP_ORDERS,
};
use shared::page::{
    Page, ZoneType, MAX_ORDER, NO_PFN, NR_ZONES, PG_BUDDY, PG_HEAD, PG_PCP, PG_SLAB, PG_TABLE,
    PG_ZERO,
};

/// Access to the memory map (`struct page` array).
pub trait Memmap {
    /// The descriptor of page frame `pfn`, if the frame has one (its section is present).
    fn page(&mut self, pfn: u64) -> Option<&mut Page>;
}

/// A memory map over one slice of descriptors for page frames `base_pfn..`: for host
/// tools, tests and benchmarks.
pub struct SliceMemmap<'a> {
    /// Page frame of `pages[0]`.
    pub base_pfn: u64,
    /// The descriptors.
    pub pages: &'a mut [Page],
}

impl Memmap for SliceMemmap<'_> {
    fn page(&mut self, pfn: u64) -> Option<&mut Page> {
        self.pages.get_mut(usize::try_from(pfn.checked_sub(self.base_pfn)?).ok()?)
    }
}

/// A rejected free. It leaves the allocator unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame has no descriptor or lies outside every zone.
    Invalid {
        /// The frame.
        pfn: u64,
    },
    /// The order is above [`MAX_ORDER`] or the frame is not aligned to it.
    Misaligned {
        /// The frame.
        pfn: u64,
        /// The order given.
        order: u32,
    },
    /// The block is already free (in the buddy allocator or on a per-CPU list).
    DoubleFree {
        /// The frame.
        pfn: u64,
        /// Its flags.
        flags: u64,
    },
    /// The frame does not start an allocated block: it was never allocated, or it is a
    /// tail page of a block.
    NotAllocated {
        /// The frame.
        pfn: u64,
        /// Its flags.
        flags: u64,
    },
    /// The block is a slab's or a page table's (`PG_SLAB`, `PG_TABLE`): only its owner
    /// frees it, after clearing the flag (Linux's "Bad page state" at free).
    InUse {
        /// The frame.
        pfn: u64,
        /// Its flags.
        flags: u64,
    },
    /// The block was allocated with another order.
    WrongOrder {
        /// The frame.
        pfn: u64,
        /// The order it was allocated with.
        allocated: u32,
        /// The order given to free.
        given: u32,
    },
}

impl core::fmt::Display for FreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Invalid { pfn } => write!(f, "pfn {pfn:#x}: no such page in any zone"),
            Self::Misaligned { pfn, order } => {
                write!(f, "pfn {pfn:#x}: not a block of order {order}")
            }
            Self::DoubleFree { pfn, flags } => {
                write!(f, "pfn {pfn:#x}: double free (already free, flags {flags:#x})")
            }
            Self::NotAllocated { pfn, flags } => {
                write!(
                    f,
                    "pfn {pfn:#x}: freeing a page that was never allocated (flags {flags:#x})"
                )
            }
            Self::InUse { pfn, flags } => {
                write!(f, "pfn {pfn:#x}: in use as a slab or page table (flags {flags:#x})")
            }
            Self::WrongOrder { pfn, allocated, given } => {
                write!(
                    f,
                    "pfn {pfn:#x}: freed with order {given}, allocated with order {allocated}"
                )
            }
        }
    }
}

/// A broken invariant, found by [`Buddy::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvariantError {
    /// The zone.
    pub zone: ZoneType,
    /// The order (or 0 for zone-wide problems).
    pub order: u32,
    /// The frame involved, if any.
    pub pfn: u64,
    /// What is wrong.
    pub what: &'static str,
}

/// The watermark an allocation must leave free, above the zone's `lowmem_reserve` for
/// the allocation's highest zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// Leave at least `min` pages: what the slow path may still take (Linux's
    /// `ALLOC_WMARK_MIN`).
    Min,
    /// Leave `low`: the fast path's mark (`ALLOC_WMARK_LOW`), below which background
    /// reclaim will start.
    Low,
    /// Leave `high`: where background reclaim will stop (`ALLOC_WMARK_HIGH`).
    High,
    /// Ignore watermarks (Linux's `ALLOC_NO_WATERMARKS`).
    None,
}

/// Linux's `sysctl_lowmem_reserve_ratio`: a zone keeps back 1/ratio of the pages of the
/// zones above it from allocations that could have used those (DMA, DMA32, Normal).
pub const LOWMEM_RESERVE_RATIO: [u64; NR_ZONES] = [256, 256, 32];

/// Blocks of `order` moved at a time: [`PCP_BATCH`] pages' worth, at least 2 (as Linux's
/// `nr_pcp_alloc`).
pub fn pcp_batch(order: u32) -> usize {
    (PCP_BATCH >> order).max(2)
}

/// Blocks the per-CPU list of `order` holds before a batch is drained: [`PCP_HIGH`] pages'
/// worth.
pub fn pcp_high(order: u32) -> usize {
    PCP_HIGH >> order
}

/// Blocks on a per-CPU list: at most [`PCP_CAPACITY`], so the cast is exact.
#[allow(clippy::cast_possible_truncation)]
fn pcp_len(pcp: &Pcp) -> usize {
    pcp.count as usize
}

/// Whether blocks of `order` have a per-CPU list.
fn pcp_order(order: u32) -> bool {
    order < PCP_ORDERS
}

/// Whether `zone` keeps `mark` (and its reserve against allocations whose highest zone
/// is `highest`) free after an allocation of `order`, and has a free block that large
/// (Linux's `__zone_watermark_ok`).
fn watermark_ok(zone: &Zone, order: u32, mark: Watermark, highest: usize) -> bool {
    let mark = match mark {
        Watermark::Min => zone.watermarks.min,
        Watermark::Low => zone.watermarks.low,
        Watermark::High => zone.watermarks.high,
        Watermark::None => return true,
    };
    let reserve = zone.lowmem_reserve.get(highest).copied().unwrap_or(0);
    if zone.free.saturating_sub((1 << order) - 1) <= mark.saturating_add(reserve) {
        return false;
    }
    order == 0 || zone.free_area.iter().skip(order as usize).any(|area| area.nr_free > 0)
}

/// The buddy allocator over a memory map.
pub struct Buddy<M> {
    /// The memory map.
    pub memmap: M,
    /// The zones, DMA first.
    pub zones: [Zone; NR_ZONES],
    /// The node's LRU lists of user pages (`crate::lru`; Linux keeps them in the node
    /// beside its zones).
    pub lruvec: shared::mm::Lruvec,
    /// Whether the last block allocated was known to hold zeros (`PG_ZERO`, which an
    /// allocation takes off the block: the mark is about free memory only).
    last_zero: bool,
}

impl<M: Memmap> Buddy<M> {
    /// An allocator with empty zones.
    pub fn new(memmap: M) -> Self {
        Self {
            memmap,
            zones: ZoneType::ALL.map(Zone::empty),
            lruvec: shared::mm::Lruvec::EMPTY,
            last_zero: false,
        }
    }

    /// Records present memory `[start_pfn, end_pfn)`: zone spans grow to cover it.
    pub fn add_present(&mut self, start_pfn: u64, end_pfn: u64) {
        for (zone, kind) in self.zones.iter_mut().zip(ZoneType::ALL) {
            let (low, high) = kind.pfn_limits();
            let (start, end) = (start_pfn.max(low), end_pfn.min(high));
            if start >= end {
                continue;
            }
            if zone.present == 0 {
                (zone.start_pfn, zone.end_pfn) = (start, end);
            } else {
                zone.start_pfn = zone.start_pfn.min(start);
                zone.end_pfn = zone.end_pfn.max(end);
            }
            zone.present += end - start;
        }
    }

    /// Gives free memory `[start_pfn, end_pfn)` to the allocator, in maximal aligned
    /// blocks, known to hold zeros (RAM as the VMM hands it over). The frames must be
    /// present and in the zero state.
    pub fn hand_off(&mut self, start_pfn: u64, end_pfn: u64) {
        let mut pfn = start_pfn;
        while pfn < end_pfn {
            let align = pfn.trailing_zeros().min(MAX_ORDER);
            let fit = 63 - (end_pfn - pfn).leading_zeros();
            let order = align.min(fit);
            if let Some(zone) = self.zone_index(pfn) {
                self.zones[zone].managed += 1 << order;
                // RAM the VMM handed over zeroed and nothing wrote since.
                if let Some(page) = self.memmap.page(pfn) {
                    page.flags |= PG_ZERO;
                }
                self.zone_mem(zone).free_one(pfn, order);
            }
            pfn += 1 << order;
        }
    }

    /// Sets each zone's watermarks as Linux's `__setup_per_zone_wmarks` does, from
    /// `min_free_kbytes` = sqrt(16 × memory in KiB), clamped to [128, 262144], and its
    /// `lowmem_reserve` as `setup_per_zone_lowmem_reserve` does: against an allocation
    /// whose highest zone is `j`, zone `i` keeps back the managed pages of zones `i+1..=j`
    /// divided by its [`LOWMEM_RESERVE_RATIO`].
    pub fn setup_watermarks(&mut self) {
        let managed = self.zones.each_ref().map(|zone| zone.managed);
        for (i, (zone, ratio)) in self.zones.iter_mut().zip(LOWMEM_RESERVE_RATIO).enumerate() {
            let mut above = 0u64;
            for (j, reserve) in zone.lowmem_reserve.iter_mut().enumerate() {
                if j > i {
                    above += managed[j];
                }
                *reserve = if j > i { above / ratio } else { 0 };
            }
        }
        let managed: u64 = self.zones.iter().map(|z| z.managed).sum();
        let kbytes = managed * 4;
        let min_free_kbytes = isqrt(kbytes * 16).clamp(128, 262_144);
        let pages_min = min_free_kbytes / 4;
        for zone in &mut self.zones {
            let min = (pages_min * zone.managed).checked_div(managed).unwrap_or(0);
            // watermark_scale_factor = 10, in units of 1/10000.
            let step = (min / 4).max(zone.managed * 10 / 10_000);
            zone.watermarks = Watermarks { min, low: min + step, high: min + 2 * step };
        }
    }

    /// Allocates 2^`order` pages from the buddy lists of the highest zone at or below
    /// `highest` that stays above `mark` (and its reserve against `highest`), falling back
    /// Normal → DMA32 → DMA. Returns the first frame.
    #[inline]
    pub fn alloc(&mut self, order: u32, highest: ZoneType, mark: Watermark) -> Option<u64> {
        if order > MAX_ORDER {
            return None;
        }
        for zone in (0..=highest as usize).rev() {
            let zone_ok = watermark_ok(&self.zones[zone], order, mark, highest as usize);
            if self.zones[zone].managed == 0 || !zone_ok {
                continue;
            }
            if let Some(pfn) = self.zone_mem(zone).rmqueue(order) {
                self.mark_allocated(pfn, order);
                return Some(pfn);
            }
        }
        None
    }

    /// Whether a zone at or below `highest` has order-0 pages free above `mark` (and its
    /// reserve), as Linux's `pgdat_balanced` asks for kswapd.
    pub fn watermark_ok(&self, highest: ZoneType, mark: Watermark) -> bool {
        let zones = &self.zones[..=highest as usize];
        zones.iter().any(|zone| zone.managed > 0 && watermark_ok(zone, 0, mark, highest as usize))
    }

    /// Frees the block of 2^`order` pages at `pfn` to the buddy lists, merging it with its
    /// free buddies.
    #[inline]
    pub fn free(&mut self, pfn: u64, order: u32) -> Result<(), FreeError> {
        let (zone, page) = self.check_free(pfn, order)?;
        // It was used: no longer known to be zero.
        page.flags &= !(PG_HEAD | PG_ZERO);
        page.order = 0;
        page.refcount = 0;
        self.zone_mem(zone).free_one(pfn, order);
        Ok(())
    }

    /// Allocates 2^`order` pages as Linux's `alloc_pages` does: orders 0 to 3 through the
    /// per-CPU list of the highest zone at or below `highest` that has a block or can
    /// refill one, larger orders from the buddy lists; first every zone above its low
    /// watermark (the fast path), then above min (the slow path). Before it fails, it
    /// drains every per-CPU list and tries once more. Returns the first frame.
    #[inline]
    pub fn alloc_pages(&mut self, order: u32, highest: ZoneType) -> Option<u64> {
        if !pcp_order(order) {
            return self
                .alloc(order, highest, Watermark::Low)
                .or_else(|| self.alloc(order, highest, Watermark::Min))
                .or_else(|| self.alloc_pages_drained(order, highest));
        }
        // The fast path, small enough to inline: the preferred zone's list has a block.
        self.pcp_pop(highest as usize, order).or_else(|| self.alloc_pages_slow(order, highest))
    }

    /// Frees a block from [`Buddy::alloc_pages`] (or [`Buddy::alloc`]): orders 0 to 3 to
    /// the per-CPU list of their order, draining a batch to the buddy lists when the list is
    /// over its high mark; larger orders as [`Buddy::free`].
    #[inline]
    pub fn free_pages(&mut self, pfn: u64, order: u32) -> Result<(), FreeError> {
        if !pcp_order(order) {
            return self.free(pfn, order);
        }
        let (zone, page) = self.check_free(pfn, order)?;
        page.flags = (page.flags & !(PG_HEAD | PG_ZERO)) | PG_PCP;
        page.refcount = 0;
        let pcp = &mut self.zones[zone].pcp[order as usize];
        let len = pcp_len(pcp);
        pcp.pfns[len] = pfn;
        pcp.count += 1;
        if len >= pcp_high(order) {
            self.drain_pcp_batch(zone, order, pcp_batch(order));
        }
        Ok(())
    }

    /// One page: [`Buddy::alloc_pages`] of order 0.
    #[inline]
    pub fn alloc_page(&mut self, highest: ZoneType) -> Option<u64> {
        self.alloc_pages(0, highest)
    }

    /// One page: [`Buddy::free_pages`] of order 0.
    #[inline]
    pub fn free_page(&mut self, pfn: u64) -> Result<(), FreeError> {
        self.free_pages(pfn, 0)
    }

    /// `alloc_pages` with an empty list.
    #[cold]
    #[inline(never)]
    fn alloc_pages_slow(&mut self, order: u32, highest: ZoneType) -> Option<u64> {
        self.refill_and_pop(order, highest, Watermark::Low)
            .or_else(|| self.refill_and_pop(order, highest, Watermark::Min))
            .or_else(|| self.alloc_pages_drained(order, highest))
    }

    /// Refills the first zone's empty list that can be refilled above `mark`, from
    /// `highest` down, and takes a block off it.
    fn refill_and_pop(&mut self, order: u32, highest: ZoneType, mark: Watermark) -> Option<u64> {
        (0..=highest as usize).rev().find_map(|zone| {
            if self.zones[zone].pcp[order as usize].count == 0 {
                self.refill_pcp(zone, order, mark, highest as usize);
            }
            self.pcp_pop(zone, order)
        })
    }

    /// `alloc_pages`' last try, as Linux's `drain_all_pages` before it gives up: the
    /// per-CPU blocks go back to the buddy lists, where they can merge with their buddies.
    #[cold]
    #[inline(never)]
    fn alloc_pages_drained(&mut self, order: u32, highest: ZoneType) -> Option<u64> {
        if self.zones[..=highest as usize].iter().all(|zone| zone.pcp_pages() == 0) {
            return None;
        }
        self.drain_pcp();
        if pcp_order(order) {
            self.refill_and_pop(order, highest, Watermark::Min)
        } else {
            self.alloc(order, highest, Watermark::Min)
        }
    }

    /// Takes the newest block off `zone`'s per-CPU list of `order` and marks it allocated.
    #[inline]
    fn pcp_pop(&mut self, zone: usize, order: u32) -> Option<u64> {
        let pcp = &mut self.zones[zone].pcp[order as usize];
        // One check covers an empty list (the index wraps) and the array's bound.
        let top = pcp_len(pcp).wrapping_sub(1);
        let pfn = *pcp.pfns.get(top)?;
        pcp.count -= 1;
        self.last_zero = false;
        if let Some(page) = self.memmap.page(pfn) {
            self.last_zero = page.flags & PG_ZERO != 0;
            page.flags = (page.flags & !(PG_PCP | PG_ZERO)) | PG_HEAD;
            page.order = order;
            page.refcount = 1;
        }
        Some(pfn)
    }

    /// Returns every per-CPU block to the buddy lists.
    pub fn drain_pcp(&mut self) {
        for zone in 0..NR_ZONES {
            for order in 0..PCP_ORDERS {
                let count = pcp_len(&self.zones[zone].pcp[order as usize]);
                self.drain_pcp_batch(zone, order, count);
            }
        }
    }

    /// [`Buddy::alloc_pages`], and whether the block was known to hold zeros (so that its
    /// user need not zero it).
    #[inline]
    pub fn alloc_pages_zero(&mut self, order: u32, highest: ZoneType) -> Option<(u64, bool)> {
        let pfn = self.alloc_pages(order, highest)?;
        Some((pfn, self.last_zero))
    }

    /// Free page reporting (Linux's `page_reporting`): offers each free block of at least
    /// `min_order` not known to be zero to `discard` (which has the host drop it, so that
    /// it reads as zero and takes no host memory), and marks the ones it took known zero.
    /// Returns the pages discarded. Each list walk is bounded by its block count.
    pub fn report_free(
        &mut self,
        min_order: u32,
        discard: &mut impl FnMut(u64, u32) -> bool,
    ) -> u64 {
        let mut pages = 0;
        for zone in 0..NR_ZONES {
            for order in min_order..=MAX_ORDER {
                let area = self.zones[zone].free_area[order as usize];
                let mut at = area.head;
                for _ in 0..area.nr_free {
                    let Some(page) = self.memmap.page(at) else { break };
                    let (next, zero) = (page.next, page.flags & PG_ZERO != 0);
                    if !zero && discard(at, order) {
                        if let Some(page) = self.memmap.page(at) {
                            page.flags |= PG_ZERO;
                        }
                        pages += 1 << order;
                    }
                    at = next;
                }
            }
        }
        pages
    }

    /// Turns the allocated block of 2^`order` pages at `pfn` into 2^`order` allocated
    /// single pages, each to be freed on its own (Linux's `split_page`). Refuses what is
    /// not such a block, as a free would.
    pub fn split_block(&mut self, pfn: u64, order: u32) -> Result<(), FreeError> {
        self.check_free(pfn, order)?;
        for page in pfn..pfn + (1 << order) {
            if let Some(page) = self.memmap.page(page) {
                page.flags |= PG_HEAD;
                page.order = 0;
                page.refcount = 1;
            }
        }
        Ok(())
    }

    /// Pages the allocator manages, free or not (Linux's `totalram_pages`).
    pub fn managed_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.managed).sum()
    }

    /// Free pages, per-CPU lists included (Linux's `nr_free_pages` plus the lists).
    pub fn nr_free_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.free + z.pcp_pages()).sum()
    }

    /// Checks invariants (a)–(d) except the allocated count, which only the caller knows;
    /// list walks are bounded by the zone's managed pages.
    pub fn check(&mut self) -> Result<(), InvariantError> {
        for zone_index in 0..NR_ZONES {
            let (kind, managed) = (ZoneType::ALL[zone_index], self.zones[zone_index].managed);
            let fail = |order, pfn, what| Err(InvariantError { zone: kind, order, pfn, what });
            let mut free = 0;
            for order in 0..=MAX_ORDER {
                let area = self.zones[zone_index].free_area[order as usize];
                let (mut pfn, mut prev, mut count) = (area.head, NO_PFN, 0u64);
                while pfn != NO_PFN {
                    count += 1;
                    if count > managed {
                        return fail(order, pfn, "free list longer than the zone (a cycle?)");
                    }
                    if pfn % (1 << order) != 0
                        || !self.zones[zone_index].spans(pfn + (1 << order) - 1)
                        || !self.zones[zone_index].spans(pfn)
                    {
                        return fail(order, pfn, "free block misaligned or outside its zone");
                    }
                    let Some(page) = self.memmap.page(pfn).copied() else {
                        return fail(order, pfn, "free block without a struct page");
                    };
                    if page.flags & PG_BUDDY == 0 || page.order != order {
                        return fail(order, pfn, "free block not flagged PG_BUDDY with its order");
                    }
                    if page.prev != prev {
                        return fail(order, pfn, "free list back link broken");
                    }
                    if order < MAX_ORDER
                        && self.zone_mem(zone_index).find_buddy(pfn, order).is_some()
                    {
                        return fail(order, pfn, "two free buddies of the same order");
                    }
                    (prev, pfn) = (pfn, page.next);
                }
                if count != area.nr_free {
                    return fail(order, area.head, "nr_free differs from the list length");
                }
                free += count << order;
            }
            if free != self.zones[zone_index].free {
                return fail(0, NO_PFN, "zone free count differs from its lists");
            }
            for order in 0..PCP_ORDERS {
                for index in 0..pcp_len(&self.zones[zone_index].pcp[order as usize]) {
                    let pfn = self.zones[zone_index].pcp[order as usize].pfns[index];
                    let page = self.memmap.page(pfn);
                    if page.is_none_or(|page| page.flags & PG_PCP == 0 || page.order != order) {
                        return fail(order, pfn, "per-CPU block not flagged PG_PCP with its order");
                    }
                }
            }
        }
        Ok(())
    }

    /// Index of the zone spanning `pfn`.
    fn zone_index(&self, pfn: u64) -> Option<usize> {
        // Highest first: most frees are of Normal pages. Spans never overlap.
        (0..NR_ZONES).rev().find(|&zone| self.zones[zone].spans(pfn))
    }

    /// Zone `zone` with the memory map, for the buddy-list steps.
    #[inline(always)]
    fn zone_mem(&mut self, zone: usize) -> ZoneMem<'_, M> {
        ZoneMem { zone: &mut self.zones[zone], memmap: &mut self.memmap }
    }

    /// Validates a free of `pfn` at `order`; returns its zone and descriptor.
    #[inline]
    fn check_free(&mut self, pfn: u64, order: u32) -> Result<(usize, &mut Page), FreeError> {
        if order > MAX_ORDER || pfn % (1 << order) != 0 {
            return Err(FreeError::Misaligned { pfn, order });
        }
        let zone = self.zone_index(pfn).ok_or(FreeError::Invalid { pfn })?;
        let page = self.memmap.page(pfn).ok_or(FreeError::Invalid { pfn })?;
        let flags = page.flags;
        if flags & (PG_BUDDY | PG_PCP) != 0 {
            return Err(FreeError::DoubleFree { pfn, flags });
        }
        if flags & PG_HEAD == 0 {
            return Err(FreeError::NotAllocated { pfn, flags });
        }
        if flags & (PG_SLAB | PG_TABLE) != 0 {
            return Err(FreeError::InUse { pfn, flags });
        }
        if page.order != order {
            return Err(FreeError::WrongOrder { pfn, allocated: page.order, given: order });
        }
        Ok((zone, page))
    }

    fn mark_allocated(&mut self, pfn: u64, order: u32) {
        self.last_zero = false;
        if let Some(page) = self.memmap.page(pfn) {
            self.last_zero = page.flags & PG_ZERO != 0;
            page.flags = (page.flags | PG_HEAD) & !PG_ZERO;
            page.order = order;
            page.refcount = 1;
        }
    }

    /// Moves one batch of blocks of `order` from the buddy lists to the per-CPU list, while
    /// the zone stays above `mark` for an allocation whose highest zone is `highest`. The
    /// list is empty.
    fn refill_pcp(&mut self, zone: usize, order: u32, mark: Watermark, highest: usize) {
        for _ in 0..pcp_batch(order) {
            if !watermark_ok(&self.zones[zone], order, mark, highest) {
                break;
            }
            let Some(pfn) = self.zone_mem(zone).rmqueue(order) else {
                break;
            };
            if let Some(page) = self.memmap.page(pfn) {
                page.flags |= PG_PCP;
                page.order = order;
            }
            let pcp = &mut self.zones[zone].pcp[order as usize];
            pcp.pfns[pcp_len(pcp)] = pfn;
            pcp.count += 1;
        }
    }

    /// Returns the `count` oldest blocks of `zone`'s per-CPU list of `order` to the buddy
    /// lists.
    #[cold]
    #[inline(never)]
    fn drain_pcp_batch(&mut self, zone: usize, order: u32, count: usize) {
        let count = count.min(pcp_len(&self.zones[zone].pcp[order as usize]));
        for index in 0..count {
            let pfn = self.zones[zone].pcp[order as usize].pfns[index];
            if let Some(page) = self.memmap.page(pfn) {
                // Back to the zero state: a block that merges into a lower buddy is a tail.
                page.flags &= !PG_PCP;
                page.order = 0;
            }
            self.zone_mem(zone).free_one(pfn, order);
        }
        let pcp = &mut self.zones[zone].pcp[order as usize];
        let len = pcp_len(pcp);
        pcp.pfns.copy_within(count..len, 0);
        pcp.count -= count as u64;
    }
}

/// One zone with the memory map: what the buddy-list steps work on, as Linux's take a
/// `struct zone *`. The zone is looked up once per operation, not at every step.
///
/// The steps are `#[inline(always)]`: each is a handful of instructions, and calls between
/// them were a fifth of the buddy-list path (cachegrind, host: 142 → 114 instructions per
/// order-4/5 operation). In the guest, the hand-off runs `free_one` once per block: inlined,
/// its phase takes 14–18 % fewer cycles on the emulating KVM.
struct ZoneMem<'a, M> {
    zone: &'a mut Zone,
    memmap: &'a mut M,
}

impl<M: Memmap> ZoneMem<'_, M> {
    /// The buddy of the free block `pfn` of `order`, if it is itself a free block of the
    /// same order in the same zone: the one place a buddy is computed and validated.
    #[inline(always)]
    fn find_buddy(&mut self, pfn: u64, order: u32) -> Option<u64> {
        let buddy = pfn ^ (1 << order);
        if !self.zone.spans(buddy) {
            return None;
        }
        let page = self.memmap.page(buddy)?;
        (page.flags & PG_BUDDY != 0 && page.order == order).then_some(buddy)
    }

    /// `__free_one_page`: merge with free buddies while possible, then list the result.
    #[inline(always)]
    fn free_one(&mut self, mut pfn: u64, mut order: u32) {
        self.zone.free += 1 << order;
        // Known zero only if every block it merges with is too; the mark lives on the
        // head of the block it ends in.
        let mut zero = self.memmap.page(pfn).is_some_and(|page| {
            let zero = page.flags & PG_ZERO != 0;
            page.flags &= !PG_ZERO;
            zero
        });
        while order < MAX_ORDER {
            let Some(buddy) = self.find_buddy(pfn, order) else {
                break;
            };
            zero &= self.list_del(order, buddy);
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.list_add(order, pfn, zero);
    }

    /// Takes a block of `order` from the smallest list that has one, splitting it.
    #[inline(always)]
    fn rmqueue(&mut self, order: u32) -> Option<u64> {
        let mut from = order;
        let pfn = loop {
            let head = self.zone.free_area.get(from as usize)?.head;
            if head != NO_PFN {
                break head;
            }
            from += 1;
        };
        let zero = self.list_del(from, pfn);
        self.zone.free -= 1 << from;
        self.expand(pfn, from, order, zero);
        if zero {
            if let Some(page) = self.memmap.page(pfn) {
                page.flags |= PG_ZERO;
            }
        }
        Some(pfn)
    }

    /// `expand()`: a block of order `high` was taken for an allocation of order `low`; give
    /// back its upper halves, largest first, so the allocation keeps the lowest pages.
    #[inline(always)]
    fn expand(&mut self, pfn: u64, high: u32, low: u32, zero: bool) {
        for order in (low..high).rev() {
            self.zone.free += 1 << order;
            self.list_add(order, pfn + (1 << order), zero);
        }
    }

    /// Puts the free block `pfn` at the head of its list and flags it `PG_BUDDY`, and
    /// `PG_ZERO` if it is known to hold zeros.
    #[inline(always)]
    fn list_add(&mut self, order: u32, pfn: u64, zero: bool) {
        let area = &mut self.zone.free_area[order as usize];
        let head = area.head;
        area.head = pfn;
        area.nr_free += 1;
        if let Some(page) = self.memmap.page(pfn) {
            page.flags = (page.flags & !PG_ZERO) | PG_BUDDY | if zero { PG_ZERO } else { 0 };
            page.order = order;
            page.next = head;
            page.prev = NO_PFN;
        }
        if head != NO_PFN {
            if let Some(next) = self.memmap.page(head) {
                next.prev = pfn;
            }
        }
    }

    /// Takes the free block `pfn` off its list; it is no longer `PG_BUDDY` (nor
    /// `PG_ZERO`). Returns whether it was known to hold zeros.
    #[inline(always)]
    fn list_del(&mut self, order: u32, pfn: u64) -> bool {
        let Some(page) = self.memmap.page(pfn) else {
            return false;
        };
        let (next, prev) = (page.next, page.prev);
        let zero = page.flags & PG_ZERO != 0;
        (page.next, page.prev) = (0, 0);
        page.flags &= !(PG_BUDDY | PG_ZERO);
        page.order = 0;
        let area = &mut self.zone.free_area[order as usize];
        area.nr_free -= 1;
        if prev == NO_PFN {
            area.head = next;
        } else if let Some(prev_page) = self.memmap.page(prev) {
            prev_page.next = next;
        }
        if next != NO_PFN {
            if let Some(next_page) = self.memmap.page(next) {
                next_page.prev = prev;
            }
        }
        zero
    }
}

/// Integer square root (Linux's `int_sqrt`), by Newton's method: no floating point in the
/// kernel.
fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let (mut x, mut y) = (n, n / 2 + n % 2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

#[cfg(test)]
mod tests;
