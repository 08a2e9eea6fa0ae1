//! Page reclaim for anonymous memory: the reverse map, aging by the Accessed bit, swap-out
//! from the inactive list's tail, and swap-in on fault, after Linux's mm/rmap.c,
//! mm/vmscan.c and mm/memory.c (`do_swap_page`).
//!
//! ```text
//! reverse map   page.private = (anon_vma << 36) | virtual page: every mapping of an
//!               anonymous page lies at the address it was first mapped at (fork copies
//!               tables in place, copy-on-write replaces a page where it is, and nothing
//!               moves a mapping), in an address space of the group that page was born
//!               in. A group is a program load and every process forked from it (Linux's
//!               anon_vma chain, coarsened to whole address spaces). The walk visits the
//!               group's trees and stops after `mapcount` hits.
//! aging         while the inactive list is smaller than the active one, pages move from
//!               the active tail to the inactive head with their Accessed bits cleared
//!               (Linux's shrink_active_list; below 1 GiB its inactive ratio is 1)
//! shrink        from the inactive tail: a page referenced since (an Accessed bit in any
//!               mapping) goes to the active list; any other gets a slot, is written out
//!               with the others of its batch in one request, then every entry mapping
//!               it becomes a swap entry for the slot and the page is freed. A page in
//!               the swap cache is already in its slot: it is unmapped without a write.
//! swap-in       a fault on a swap entry reads the slot into a new page (a major fault),
//!               or finds the page in the swap cache (minor) where another sharer read it
//!               first; the page stays cached, mapped read-only, while other entries still
//!               name the slot, and the slot is freed with its last entry.
//! ```
//!
//! A whole 2 MiB block is split first, as Linux splits a THP: each of its 2 MiB mappings
//! becomes a table of 512 entries (the address space's page-table counter learns of it
//! through the reverse map), the block 512 pages, which go to the inactive tail and out
//! one by one. Never reclaimed: `PG_UNEVICTABLE` pages (`MAP_SHARED` anonymous memory,
//! which Linux swaps through shmem), kept at the active head. Not reclaimed (rotated to
//! the active list): pages whose mappings the walk
//! cannot all find (a huge leaf over a block split elsewhere, or a bug; the page is kept
//! rather than freed under a live mapping).

use crate::anon::{AnonError, AnonMemory, HUGE_ORDER, HUGE_PAGES};
use crate::lru;
use crate::paging::{Flush, MapError, Mapper, PageSize, PageTableEntry, PteFlags};
use shared::addr::{PhysAddr, VirtAddr};
use shared::mm::{LRU_ACTIVE_ANON, LRU_INACTIVE_ANON};
use shared::page::{PG_ANON, PG_SWAPCACHE, PG_UNEVICTABLE};

/// Where the group starts in a reverse-map key: user virtual page numbers are below 2^35.
const GROUP_SHIFT: u32 = 36;
/// Pages written out in one request, and moved between the lists at a time (Linux's
/// `SWAP_CLUSTER_MAX`).
pub const SWAP_BATCH: usize = 32;

/// The reverse-map key of a page first mapped at `virt` by an address space of group
/// `anon_vma`.
pub fn rmap_key(anon_vma: u32, virt: u64) -> u64 {
    (u64::from(anon_vma) << GROUP_SHIFT) | (virt >> 12 & ((1 << GROUP_SHIFT) - 1))
}

/// A key's group and address.
pub fn rmap_decode(key: u64) -> (u32, VirtAddr) {
    let group = u32::try_from(key >> GROUP_SHIFT).unwrap_or(u32::MAX);
    (group, VirtAddr::new_truncate((key & ((1 << GROUP_SHIFT) - 1)) << 12))
}

/// An address space as the reverse map knows it: its tree, its group, and what reclaim
/// and other sharers' swap-ins did to its counters since it last looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// The tree's root.
    pub root: PhysAddr,
    /// Its group (anon_vma).
    pub anon_vma: u32,
    /// What others did to its counters.
    pub deltas: Deltas,
}

/// Changes others (reclaim) made to an address space's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    /// Pages it maps (reclaim unmapped them: negative).
    pub rss: i64,
    /// Swap entries in its tree.
    pub swapents: i64,
    /// Page tables below its root (reclaim split a huge mapping: one more).
    pub pgtables: i64,
}

/// Address spaces the reverse map can hold: one per process.
pub const MAX_SPACES: usize = shared::process::MAX_TASKS;

impl Space {
    fn has_deltas(&self) -> bool {
        self.deltas != Deltas::default()
    }
}

/// Every address space whose pages reclaim may unmap. A fixed table: the kernel changes
/// it while it holds the memory managers, where it cannot allocate.
#[derive(Debug)]
pub struct Rmap {
    spaces: [Space; MAX_SPACES],
    len: usize,
    next_group: u32,
    /// Spaces whose counter changes are not taken yet: while none is, taking them costs
    /// no search (every fault takes them).
    pending: usize,
}

impl Default for Rmap {
    fn default() -> Self {
        let none = Space { root: PhysAddr::new(0), anon_vma: 0, deltas: Deltas::default() };
        Self { spaces: [none; MAX_SPACES], len: 0, next_group: 0, pending: 0 }
    }
}

impl Rmap {
    /// Registers the tree at `root`, in group `group` (a fork's child: its parent's) or a
    /// new one; returns the group.
    ///
    /// # Safety
    /// `root` is a page-table tree in the memory reclaim runs over, and stays one until
    /// [`Rmap::remove`] of it: reclaim walks it.
    /// Returns `None`, registering nothing, when the table is full.
    pub unsafe fn add(&mut self, root: PhysAddr, group: Option<u32>) -> Option<u32> {
        let slot = self.spaces.get_mut(self.len)?;
        let anon_vma = group.unwrap_or_else(|| {
            self.next_group = self.next_group.wrapping_add(1) & ((1 << 27) - 1);
            self.next_group
        });
        *slot = Space { root, anon_vma, deltas: Deltas::default() };
        self.len += 1;
        Some(anon_vma)
    }

    fn live(&mut self) -> &mut [Space] {
        &mut self.spaces[..self.len]
    }

    /// Moves the tree at `root` into group `group` (fork's child joins its parent's).
    pub fn join(&mut self, root: PhysAddr, group: u32) {
        if let Some(space) = self.live().iter_mut().find(|space| space.root == root) {
            space.anon_vma = group;
        }
    }

    /// Forgets the tree at `root` (before it is freed).
    pub fn remove(&mut self, root: PhysAddr) {
        if let Some(at) = self.live().iter().position(|space| space.root == root) {
            self.pending -= usize::from(self.spaces[at].has_deltas());
            self.spaces.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
    }

    /// Takes the counter changes others made to the tree at `root`.
    pub fn take_deltas(&mut self, root: PhysAddr) -> Deltas {
        if self.pending == 0 {
            return Deltas::default();
        }
        let Some(space) = self.live().iter_mut().find(|space| space.root == root) else {
            return Deltas::default();
        };
        let deltas = core::mem::take(&mut space.deltas);
        if deltas != Deltas::default() {
            self.pending -= 1;
        }
        deltas
    }
}

/// Calls `f` on every level-1 entry that maps page `pfn` (whose key is `key`), with the
/// address space it is in, until `mapcount` are found; returns how many were.
fn for_each_mapping<M: AnonMemory>(
    tree: &mut Mapper<M>,
    rmap: &mut Rmap,
    (pfn, key, mapcount): (u64, u64, u32),
    mut f: impl FnMut(&mut PageTableEntry, &mut Space, VirtAddr),
) -> u32 {
    let (group, virt) = rmap_decode(key);
    let home = tree.root();
    let mut found = 0;
    for space in rmap.live().iter_mut().filter(|space| space.anon_vma == group) {
        if found >= mapcount {
            break;
        }
        // SAFETY: `Rmap::add`'s contract: a live tree in this memory.
        unsafe { tree.set_root(space.root) };
        if let Some(entry) = tree.pte(virt) {
            if entry.is_present() && entry.addr().pfn() == pfn {
                f(entry, space, virt);
                found += 1;
            }
        }
    }
    // SAFETY: the tree the mapper had.
    unsafe { tree.set_root(home) };
    found
}

/// Calls `f` on every 2 MiB leaf that maps the whole huge block at `pfn` (whose key is
/// `key`), until `mapcount` are found; returns how many were.
fn for_each_huge_mapping<M: AnonMemory>(
    tree: &mut Mapper<M>,
    rmap: &Rmap,
    (pfn, key, mapcount): (u64, u64, u32),
    mut f: impl FnMut(&mut PageTableEntry),
) -> u32 {
    let (group, virt) = rmap_decode(key);
    let block = PhysAddr::new(pfn * 4096);
    let home = tree.root();
    let mut found = 0;
    for space in rmap.spaces[..rmap.len].iter().filter(|space| space.anon_vma == group) {
        if found >= mapcount {
            break;
        }
        // SAFETY: `Rmap::add`'s contract: a live tree in this memory.
        unsafe { tree.set_root(space.root) };
        let hit = tree.update_leaf(virt, |_, entry, size| {
            let ours = size == PageSize::Size2M && entry.addr() == block;
            if ours {
                f(entry);
            }
            ours
        });
        // Only Accessed bits change: no flush is needed (Linux's ptep_clear_flush_young
        // does none on x86 either).
        found += u32::from(hit.is_some_and(|(ours, _)| ours));
    }
    // SAFETY: the tree the mapper had.
    unsafe { tree.set_root(home) };
    found
}

/// A whole huge block at the inactive tail, as Linux's reclaim splits a THP before it
/// swaps it out. Referenced since it was aged (an Accessed bit in any of its 2 MiB
/// mappings): it stays whole, for the caller to activate. Otherwise every 2 MiB mapping
/// becomes a table of 512 entries, the block 512 pages with its counts, and the pages go
/// to the inactive tail, to be reclaimed one by one. A sharer whose mapping cannot be
/// split (no memory for its table) keeps a huge leaf over the split block, which the
/// walks do not find: those pages stay until it goes. Returns whether it split.
fn split_for_reclaim<M: AnonMemory>(
    tree: &mut Mapper<M>,
    rmap: &mut Rmap,
    (pfn, key, mapcount): (u64, u64, u32),
    flush: &mut Flush,
) -> bool {
    let mut young = false;
    let found = for_each_huge_mapping(tree, rmap, (pfn, key, mapcount), |entry| {
        young |= entry.flags().contains(PteFlags::ACCESSED);
        *entry = PageTableEntry::from_raw(entry.raw() & !PteFlags::ACCESSED.bits());
    });
    if young || found == 0 {
        return false;
    }
    let (group, virt) = rmap_decode(key);
    let block = PhysAddr::new(pfn * 4096);
    let home = tree.root();
    let mut split = 0;
    for index in 0..rmap.len {
        let space = rmap.spaces[index];
        if space.anon_vma != group {
            continue;
        }
        // SAFETY: `Rmap::add`'s contract: a live tree in this memory.
        unsafe { tree.set_root(space.root) };
        let ours = tree.translate(virt).is_some_and(|m| {
            m.size == PageSize::Size2M
                && m.phys.as_u64() & !(PageSize::Size2M.bytes() - 1) == block.as_u64()
        });
        if !ours {
            continue;
        }
        let Ok(Some(done)) = tree.split_huge_leaf(virt) else { break };
        *flush = core::mem::replace(flush, Flush::NONE).and(done);
        // The new table is that address space's: its counter learns of it.
        let space = &mut rmap.spaces[index];
        rmap.pending += usize::from(!space.has_deltas());
        space.deltas.pgtables += 1;
        split += 1;
    }
    // SAFETY: the tree the mapper had.
    unsafe { tree.set_root(home) };
    if split == 0 {
        return false;
    }
    crate::anon::split_block(&mut tree.memory, block, true);
    true
}

/// What a [`shrink`] did, in Linux's vmstat terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shrunk {
    /// Inactive pages looked at (`pgscan_*`).
    pub scanned: u64,
    /// Pages freed (`pgsteal_*`).
    pub reclaimed: u64,
    /// Pages written to swap (`pswpout`).
    pub written: u64,
    /// Pages moved to the active list (referenced, or not reclaimable).
    pub activated: u64,
    /// Pages aged from the active list to the inactive one.
    pub deactivated: u64,
    /// No slot was free (or the device refused a write).
    pub swap_full: bool,
}

/// Ages up to `count` pages from the active tail to the inactive head, clearing their
/// Accessed bits so that the inactive list sees new references only (Linux's
/// `shrink_active_list`); returns how many moved. [`shrink`] calls it as it needs.
pub fn deactivate<M: AnonMemory>(tree: &mut Mapper<M>, rmap: &mut Rmap, count: usize) -> u64 {
    let mut moved = 0;
    for _ in 0..count {
        let Some(pfn) = lru::tail(&mut tree.memory, LRU_ACTIVE_ANON) else { break };
        if keep_unevictable(&mut tree.memory, pfn) {
            continue;
        }
        let Some((key, mapcount, order)) = page_info(&mut tree.memory, pfn) else {
            lru::del(&mut tree.memory, pfn, 1);
            continue;
        };
        let clear = |entry: &mut PageTableEntry| {
            *entry = PageTableEntry::from_raw(entry.raw() & !PteFlags::ACCESSED.bits());
        };
        let pages = if order == HUGE_ORDER {
            for_each_huge_mapping(tree, rmap, (pfn, key, mapcount), clear);
            HUGE_PAGES
        } else {
            for_each_mapping(tree, rmap, (pfn, key, mapcount), |entry, _, _| clear(entry));
            1
        };
        // A page off every list (a broken list) is not progress.
        moved += u64::from(lru::move_to(&mut tree.memory, pfn, pages, LRU_INACTIVE_ANON));
    }
    moved
}

/// An evictable anonymous page's reverse-map key, mapcount and order.
fn page_info<M: AnonMemory>(memory: &mut M, pfn: u64) -> Option<(u64, u32, u32)> {
    let page = memory.page(PhysAddr::new(pfn * 4096))?;
    (page.flags & (PG_ANON | PG_UNEVICTABLE) == PG_ANON).then_some((
        page.private,
        page.mapcount,
        page.order,
    ))
}

/// Whether the listed page at `pfn` must stay (`PG_UNEVICTABLE`): it goes back to the
/// active head instead.
fn keep_unevictable<M: AnonMemory>(memory: &mut M, pfn: u64) -> bool {
    let flags = memory.page(PhysAddr::new(pfn * 4096)).map_or(0, |p| p.flags);
    let keep = flags & PG_UNEVICTABLE != 0;
    if keep {
        lru::move_to(memory, pfn, 1, LRU_ACTIVE_ANON);
    }
    keep
}

/// Reclaims up to `want` pages to swap, looking at no more than `max_scan` inactive
/// pages, as Linux's `shrink_lruvec` does for anonymous memory. `tree` is any mapper over
/// the memory (its root is restored). Returns what was done and the TLB flush the
/// changed entries need (entries of trees not loaded need none, but flushing them costs
/// only the flush).
pub fn shrink<M: AnonMemory>(
    tree: &mut Mapper<M>,
    rmap: &mut Rmap,
    want: u64,
    max_scan: u64,
) -> (Shrunk, Flush) {
    let mut done = Shrunk::default();
    let mut flush = Flush::NONE;
    while done.reclaimed < want && done.scanned < max_scan && !done.swap_full {
        let lists = tree.memory.lruvec().lists;
        let mut aged = 0;
        if lists[LRU_INACTIVE_ANON].nr_pages < lists[LRU_ACTIVE_ANON].nr_pages {
            aged = deactivate(tree, rmap, SWAP_BATCH);
            done.deactivated += aged;
        }
        let scanned_before = done.scanned;
        let mut batch: [(PhysAddr, u64, bool); SWAP_BATCH] =
            [(PhysAddr::new(0), 0, false); SWAP_BATCH];
        let mut taken = 0;
        // No more than `want` in all: a batch is cut short for the last few.
        let room = usize::try_from(want - done.reclaimed).unwrap_or(SWAP_BATCH).min(SWAP_BATCH);
        while taken < room && done.scanned < max_scan {
            let Some(pfn) = lru::tail(&mut tree.memory, LRU_INACTIVE_ANON) else { break };
            done.scanned += 1;
            if keep_unevictable(&mut tree.memory, pfn) {
                continue;
            }
            let Some((key, mapcount, order)) = page_info(&mut tree.memory, pfn) else {
                lru::del(&mut tree.memory, pfn, 1);
                continue;
            };
            if order == HUGE_ORDER {
                // Split, its pages now at the tail, or referenced: to the active list.
                if !split_for_reclaim(tree, rmap, (pfn, key, mapcount), &mut flush) {
                    lru::move_to(&mut tree.memory, pfn, HUGE_PAGES, LRU_ACTIVE_ANON);
                    done.activated += 1;
                }
                continue;
            }
            let mut young = false;
            let found = for_each_mapping(tree, rmap, (pfn, key, mapcount), |entry, _, _| {
                young |= entry.flags().contains(PteFlags::ACCESSED);
                *entry = PageTableEntry::from_raw(entry.raw() & !PteFlags::ACCESSED.bits());
            });
            if young || found != mapcount {
                lru::move_to(&mut tree.memory, pfn, 1, LRU_ACTIVE_ANON);
                done.activated += 1;
                continue;
            }
            let cached = tree.memory.swap_map().and_then(|map| map.slot_of(pfn));
            let slot = match cached {
                Some(slot) => slot,
                None => match tree.memory.swap_map().and_then(|map| map.alloc()) {
                    Some(slot) => slot,
                    None => {
                        done.swap_full = true;
                        break;
                    }
                },
            };
            lru::del(&mut tree.memory, pfn, 1);
            batch[taken] = (PhysAddr::new(pfn * 4096), slot, cached.is_some());
            taken += 1;
        }
        if taken == 0 {
            // A batch of referenced pages (now active) is progress: the next round ages
            // them back. Only an inactive list with nothing to give, and nothing to age
            // onto it, ends the shrink early.
            if done.scanned == scanned_before && aged == 0 {
                break;
            }
            continue;
        }
        let batch = &batch[..taken];
        // Pages from the swap cache are in their slots already.
        let mut out = [(PhysAddr::new(0), 0); SWAP_BATCH];
        let mut writes = 0;
        for &(frame, slot, cached) in batch {
            if !cached {
                out[writes] = (frame, slot);
                writes += 1;
            }
        }
        if writes > 0 && !tree.memory.swap_write(&out[..writes]) {
            for &(frame, slot, cached) in batch {
                if let Some(map) = tree.memory.swap_map().filter(|_| !cached) {
                    map.put(slot);
                }
                lru::add(&mut tree.memory, frame.pfn(), 1, LRU_ACTIVE_ANON);
            }
            done.swap_full = true;
            break;
        }
        done.written += writes as u64;
        for &(frame, slot, cached) in batch {
            unmap_to_slot(tree, rmap, frame, slot, cached, &mut flush);
            done.reclaimed += 1;
        }
    }
    (done, flush)
}

/// Replaces every mapping of the page at `frame` (written to `slot`, or cached from it)
/// by a swap entry for the slot, and frees the page.
fn unmap_to_slot<M: AnonMemory>(
    tree: &mut Mapper<M>,
    rmap: &mut Rmap,
    frame: PhysAddr,
    slot: u64,
    cached: bool,
    flush: &mut Flush,
) {
    let pfn = frame.pfn();
    let Some((key, mapcount, _)) = page_info(&mut tree.memory, pfn) else { return };
    let mut changed = Flush::NONE;
    let mut newly_pending = 0;
    let found = for_each_mapping(tree, rmap, (pfn, key, mapcount), |entry, space, virt| {
        *entry = PageTableEntry::swap(slot);
        newly_pending += usize::from(!space.has_deltas());
        space.deltas.rss -= 1;
        space.deltas.swapents += 1;
        changed = core::mem::replace(&mut changed, Flush::NONE).and(Flush::pages(
            virt.as_u64(),
            1,
            PageSize::Size4K,
        ));
    });
    *flush = core::mem::replace(flush, Flush::NONE).and(changed);
    rmap.pending += newly_pending;
    if let Some(map) = tree.memory.swap_map() {
        // A fresh slot came with one reference (the first entry's); a cached one has those
        // of the entries that still name it, and each new entry adds one.
        let more = if cached { found } else { found.saturating_sub(1) };
        for _ in 0..more {
            map.dup(slot);
        }
        if cached {
            map.uncache(slot);
        }
    }
    if let Some(page) = tree.memory.page(frame) {
        page.flags &= !(PG_ANON | PG_SWAPCACHE | PG_UNEVICTABLE);
        (page.mapcount, page.refcount) = (0, 0);
    }
    tree.memory.free_frame(frame);
}

/// What a swap-in did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapIn {
    /// The slot was read into a new page (`pgmajfault`, `pswpin`).
    Read,
    /// Another sharer had read it: the page came from the swap cache.
    Cached,
}

/// Serves a fault at `virt` whose level-1 entry is a swap entry: the page comes back from
/// the swap cache or the slot, mapped with `flags` (without `WRITABLE` while other
/// entries still name the slot), and the entry's reference to the slot goes. `Ok(None)`
/// if the entry is not a swap entry.
pub fn swap_in<M: AnonMemory>(
    tree: &mut Mapper<M>,
    virt: VirtAddr,
    flags: PteFlags,
) -> Result<Option<SwapIn>, AnonError> {
    // No slot in use: no swap entry anywhere, so no walk (every first touch comes here).
    if tree.memory.swap_map().is_none_or(|map| map.used() == 0) {
        return Ok(None);
    }
    let Some(slot) = tree.pte(virt).and_then(|entry| entry.swap_slot()) else {
        return Ok(None);
    };
    let Some(map) = tree.memory.swap_map() else {
        return Err(AnonError::Map(MapError::NotMapped { virt: virt.as_u64() }));
    };
    let (frame, how) = match map.cached(slot) {
        Some(pfn) => {
            let frame = PhysAddr::new(pfn * 4096);
            if let Some(page) = tree.memory.page(frame) {
                page.mapcount += 1;
                page.refcount += 1;
            }
            (frame, SwapIn::Cached)
        }
        None => {
            let shared = map.count(slot) > 1;
            let frame = tree.memory.alloc_frame().ok_or(AnonError::NoMemory)?;
            if !tree.memory.swap_read(frame, slot) {
                tree.memory.free_frame(frame);
                return Err(AnonError::Io);
            }
            let key = rmap_key(tree.memory.anon_vma(), virt.as_u64());
            let cached =
                shared && tree.memory.swap_map().is_some_and(|map| map.cache(slot, frame.pfn()));
            if let Some(page) = tree.memory.page(frame) {
                page.flags |= PG_ANON;
                (page.mapcount, page.refcount, page.private) = (1, 1, key);
                if cached {
                    page.flags |= PG_SWAPCACHE;
                    page.refcount += 1;
                }
            }
            lru::add(&mut tree.memory, frame.pfn(), 1, LRU_ACTIVE_ANON);
            (frame, SwapIn::Read)
        }
    };
    let freed = tree.memory.swap_map().is_some_and(|map| map.put(slot));
    let mut flags = flags | PteFlags::PRESENT;
    if freed {
        // The last entry naming the slot: the page leaves the cache, and is this
        // mapping's alone if no sharer mapped it meanwhile.
        uncache(&mut tree.memory, slot);
    } else {
        flags -= PteFlags::WRITABLE;
    }
    if tree.memory.page(frame).is_some_and(|p| p.mapcount > 1) {
        flags -= PteFlags::WRITABLE;
    }
    if let Some(entry) = tree.pte(virt) {
        // Not present before: no TLB holds it.
        *entry = PageTableEntry::new(frame, flags);
    }
    Ok(Some(how))
}

/// A slot's last entry went: its page (if cached) leaves the swap cache.
pub fn uncache<M: AnonMemory>(memory: &mut M, slot: u64) {
    let Some(pfn) = memory.swap_map().and_then(|map| map.uncache(slot)) else { return };
    if let Some(page) = memory.page(PhysAddr::new(pfn * 4096)) {
        page.flags &= !PG_SWAPCACHE;
        page.refcount = page.refcount.saturating_sub(1);
    }
}

/// A swap entry left a tree (munmap, exit): its slot loses the reference, and a cached
/// page with it when that was the last.
pub fn drop_entry<M: AnonMemory>(memory: &mut M, entry: PageTableEntry) {
    let Some(slot) = entry.swap_slot() else { return };
    if memory.swap_map().is_some_and(|map| map.put(slot)) {
        uncache(memory, slot);
    }
}

/// A swap entry was copied into another tree (fork): its slot gains a reference.
pub fn dup_entry<M: AnonMemory>(memory: &mut M, entry: PageTableEntry) {
    if let (Some(slot), Some(map)) = (entry.swap_slot(), memory.swap_map()) {
        map.dup(slot);
    }
}
#[cfg(test)]
mod tests;
