//! Anonymous user pages: demand-zero, fork's sharing and copy-on-write, with the counts
//! Linux keeps in `struct page` (mm/memory.c's `do_anonymous_page`, `copy_present_pte` and
//! `do_wp_page`; mm/rmap.c's mapcount).
//!
//! Life of a page:
//!
//! ```text
//! first touch   allocated and zeroed: PG_ANON, mapcount 1, refcount 1     map_new
//! fork          every sharer maps it read-only; mapcount + 1               share
//! write fault   mapcount 1: the last sharer takes it back, writable        write_fault: Reused
//!               else: copied to a new page; mapcount − 1 on the old one    write_fault: Copied
//! unmap, exit   mapcount − 1; the last mapping frees the page              release
//! ```
//!
//! `refcount` equals `mapcount` while a page is mapped: each mapping holds one reference,
//! and nothing else (no page cache, no swap cache) holds any yet. Pages without `PG_ANON`
//! (the system-call trampoline, mapped into every process) are neither counted nor freed.
//!
//! Transparent huge pages: a 2 MiB block (an order-9 allocation) mapped by one PMD entry
//! keeps its counts on its head page while it stays whole. Splitting a mapping of it
//! (a partial munmap or mprotect, or copy-on-write without a free block) first splits
//! the block itself into 512 pages (Linux's `split_page`), each with the block's counts,
//! so from then on every mapping of it, huge or not, counts on every page it covers.
//!
//! ```text
//! huge fault     an order-9 block, zeroed, mapped by a PMD: head counts 1     map_new_huge
//! fork           head + 1 (whole block) or each page + 1 (split block)        share
//! write fault    last sharer: writable in place; else a new block, copied     write_fault
//! split          the PMD becomes a page table; the block, 512 pages           split_leaf
//! unmap, exit    head − 1, the last frees the block; or page by page          release
//! ```

use crate::paging::{Flush, Frame, MapError, Mapper, PageSize, PageTableEntry, PteFlags, VirtPage};
use crate::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::page::{Page, PG_ACTIVE, PG_ANON, PG_SWAPCACHE, PG_UNEVICTABLE};

/// The memory anonymous pages come from: page tables, frames and 2 MiB blocks, their
/// descriptors, and the ways of filling them.
pub trait AnonMemory: VmallocMemory + crate::lru::LruMemory {
    /// The descriptor of `frame`, if it has one.
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page>;
    /// The reverse-map group (`crate::reclaim`'s anon_vma) of the address space whose
    /// tree this memory serves: new pages record it.
    fn anon_vma(&self) -> u32 {
        0
    }
    /// Fills the page just allocated at `frame` with zeros; returns whether it had to
    /// (`false`: it was known to hold zeros already).
    fn zero_frame(&mut self, frame: PhysAddr) -> bool;
    /// Copies the page at `from` to `to`.
    fn copy_frame(&mut self, from: PhysAddr, to: PhysAddr);
    /// A 2 MiB block, aligned (an order-9 allocation); `None` when none is free.
    fn alloc_huge(&mut self) -> Option<PhysAddr>;
    /// Gives back a block [`alloc_huge`](Self::alloc_huge) returned, whole.
    fn free_huge(&mut self, block: PhysAddr);
    /// Makes the block at `block` 512 pages, each freed on its own with
    /// [`VmallocMemory::free_frame`] (its descriptors' counts are the caller's).
    fn split_huge(&mut self, block: PhysAddr);
    /// Fills the block just allocated with zeros; returns whether it had to.
    fn zero_huge(&mut self, block: PhysAddr) -> bool {
        let mut wrote = false;
        for page in 0..HUGE_PAGES {
            wrote |= self.zero_frame(PhysAddr::new(block.as_u64() + page * 4096));
        }
        wrote
    }
    /// The swap device's map and cache; `None` without a swap device.
    fn swap_map(&mut self) -> Option<&mut crate::swap_map::SwapMap> {
        None
    }
    /// Writes each page to its slot (one request for the batch); `false` if the device
    /// refused.
    fn swap_write(&mut self, _pages: &[(PhysAddr, u64)]) -> bool {
        false
    }
    /// Reads slot `slot` into the page at `frame`; `false` if the device refused.
    fn swap_read(&mut self, _frame: PhysAddr, _slot: u64) -> bool {
        false
    }
    /// Copies the block at `from` to `to`.
    fn copy_huge(&mut self, from: PhysAddr, to: PhysAddr) {
        for page in 0..HUGE_PAGES {
            let offset = page * 4096;
            self.copy_frame(
                PhysAddr::new(from.as_u64() + offset),
                PhysAddr::new(to.as_u64() + offset),
            );
        }
    }
}

/// Pages in a 2 MiB block.
pub const HUGE_PAGES: u64 = 512;
/// The order of a 2 MiB block.
pub const HUGE_ORDER: u32 = 9;

/// Whether a mapping of `frame` (a leaf of `size`) is its pages' only one, so that it may
/// be writable without copy-on-write: a 4 KiB page mapped once, or a whole huge block
/// mapped once. A huge leaf over a split block is never, whatever its pages' counts: its
/// write fault splits it and decides page by page.
pub fn exclusive<M: AnonMemory>(memory: &mut M, frame: PhysAddr, size: PageSize) -> bool {
    if size != PageSize::Size4K && !whole_block(memory, frame) {
        return false;
    }
    memory
        .page(frame)
        .is_some_and(|p| p.flags & (PG_ANON | PG_SWAPCACHE) == PG_ANON && p.mapcount == 1)
}

/// Whether `block` heads a whole huge block of anonymous memory (not split yet).
fn whole_block<M: AnonMemory>(memory: &mut M, block: PhysAddr) -> bool {
    memory.page(block).is_some_and(|p| p.flags & PG_ANON != 0 && p.order == HUGE_ORDER)
}

/// Why an anonymous page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnonError {
    /// No memory for the page or a table.
    NoMemory,
    /// The tables refused (a caller's bug: the VMAs and the tables disagree).
    Map(MapError),
    /// The swap device did not give a page back (Linux's `VM_FAULT_SIGBUS`).
    Io,
}

impl From<MapError> for AnonError {
    fn from(err: MapError) -> Self {
        match err {
            MapError::NoTableMemory => Self::NoMemory,
            other => Self::Map(other),
        }
    }
}

/// What a write fault on a present, read-only page did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// The page had no other sharer: it became writable where it is.
    Reused,
    /// The page was shared: the writer got its own copy.
    Copied,
}

/// A page or block just mapped: its frame, and whether it had to be zeroed (or was known
/// to hold zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPage {
    /// Its first frame.
    pub frame: PhysAddr,
    /// Whether zeros were written (`false`: it was known zero).
    pub zeroed: bool,
}

/// A zeroed anonymous page mapped at `page` with `flags`.
pub fn map_new<M: AnonMemory>(
    tree: &mut Mapper<M>,
    page: VirtPage,
    flags: PteFlags,
) -> Result<NewPage, AnonError> {
    let frame = tree.memory.alloc_frame().ok_or(AnonError::NoMemory)?;
    let zeroed = tree.memory.zero_frame(frame);
    mark_new(&mut tree.memory, frame, 1, page.start());
    match tree.map(page, Frame::new(frame, PageSize::Size4K)?, flags) {
        // The entry was not present: nothing to flush.
        Ok(flush) => flush.ignore(),
        Err(err) => {
            release(&mut tree.memory, Frame::containing(frame, PageSize::Size4K));
            return Err(err.into());
        }
    }
    Ok(NewPage { frame, zeroed })
}

/// Takes one more mapping of `frame` (fork's copy of a page-table entry): on the head of
/// a whole huge block, or on each page a mapping covers.
#[inline]
pub fn share<M: AnonMemory>(memory: &mut M, frame: Frame) {
    if frame.size() != PageSize::Size4K && !whole_block(memory, frame.start()) {
        for page in 0..frame.size().bytes() / 4096 {
            let small = PhysAddr::new(frame.start().as_u64() + page * 4096);
            share(memory, Frame::containing(small, PageSize::Size4K));
        }
        return;
    }
    if let Some(page) = memory.page(frame.start()).filter(|p| p.flags & PG_ANON != 0) {
        page.mapcount += 1;
        page.refcount += 1;
    }
}

/// Drops one mapping of `frame`; frees the page (or the whole huge block) when it was the
/// last. Returns whether it freed something.
#[inline]
pub fn release<M: AnonMemory>(memory: &mut M, frame: Frame) -> bool {
    if frame.size() != PageSize::Size4K && !whole_block(memory, frame.start()) {
        let mut freed = false;
        for page in 0..frame.size().bytes() / 4096 {
            let small = PhysAddr::new(frame.start().as_u64() + page * 4096);
            freed |= release(memory, Frame::containing(small, PageSize::Size4K));
        }
        return freed;
    }
    let Some(page) = memory.page(frame.start()).filter(|p| p.flags & PG_ANON != 0) else {
        return false;
    };
    page.mapcount = page.mapcount.saturating_sub(1);
    page.refcount = page.refcount.saturating_sub(1);
    if page.mapcount > 0 {
        return false;
    }
    let cached = page.flags & PG_SWAPCACHE != 0;
    page.flags &= !(PG_ANON | PG_SWAPCACHE | PG_UNEVICTABLE);
    page.refcount = 0;
    if cached {
        // Its last mapping went: the slot still holds the data for the entries that name
        // it, so the cache's copy goes too.
        let pfn = frame.start().pfn();
        if let Some(map) = memory.swap_map() {
            map.slot_of(pfn).map(|slot| map.uncache(slot));
        }
    }
    crate::lru::del(memory, frame.start().pfn(), frame.size().bytes() / 4096);
    if frame.size() == PageSize::Size4K {
        memory.free_frame(frame.start());
    } else {
        memory.free_huge(frame.start());
    }
    true
}

/// A zeroed huge block mapped at the 2 MiB page `page` with `flags`. `Err(NoMemory)`
/// without a free block, and an error when a page table already sits where the leaf
/// would go: the caller falls back to 4 KiB pages.
pub fn map_new_huge<M: AnonMemory>(
    tree: &mut Mapper<M>,
    page: VirtPage,
    flags: PteFlags,
) -> Result<NewPage, AnonError> {
    // Nothing may sit there yet (a page table of 4 KiB pages, say): checked before a block
    // is taken, so that a refusal costs no block (and no known-zero mark).
    if !tree.is_unmapped(page) {
        return Err(AnonError::Map(MapError::AlreadyMapped { virt: page.start().as_u64() }));
    }
    let block = tree.memory.alloc_huge().ok_or(AnonError::NoMemory)?;
    let frame = Frame::new(block, PageSize::Size2M)?;
    match tree.map(page, frame, flags) {
        // The entry was not present: nothing to flush.
        Ok(flush) => flush.ignore(),
        Err(err) => {
            tree.memory.free_huge(block);
            return Err(err.into());
        }
    }
    let zeroed = tree.memory.zero_huge(block);
    mark_new(&mut tree.memory, block, HUGE_PAGES, page.start());
    if let Some(head) = tree.memory.page(block) {
        head.order = HUGE_ORDER;
    }
    Ok(NewPage { frame: block, zeroed })
}

/// Splits the huge mapping of `virt`, if a 2 MiB leaf maps it, into a page table of 512
/// entries, and its block into 512 pages that each take the block's counts. Returns the
/// flush the split needs (none if nothing huge maps `virt`).
pub fn split_leaf<M: AnonMemory>(tree: &mut Mapper<M>, virt: VirtAddr) -> Result<Flush, AnonError> {
    let Some(mapped) = tree.translate(virt) else { return Ok(Flush::NONE) };
    if mapped.size != PageSize::Size2M {
        return Ok(Flush::NONE);
    }
    let block = PhysAddr::new(mapped.phys.as_u64() & !(PageSize::Size2M.bytes() - 1));
    let flush = tree.split_huge_leaf(virt)?.unwrap_or(Flush::NONE);
    split_block(&mut tree.memory, block, false);
    Ok(flush)
}

/// Makes a whole huge block 512 anonymous pages with its counts (nothing for a block
/// already split). Its pages go where the block's entry was, at the head of its LRU list,
/// or, for reclaim (`to_reclaim`), at the inactive tail, to be reclaimed next.
pub(crate) fn split_block<M: AnonMemory>(memory: &mut M, block: PhysAddr, to_reclaim: bool) {
    if !whole_block(memory, block) {
        return;
    }
    let Some((mapcount, refcount)) = memory.page(block).map(|p| (p.mapcount, p.refcount)) else {
        return;
    };
    // The block's one LRU entry becomes 512, in address order from the head of the same
    // list (added last page first) or towards the inactive tail (first page first).
    let active = memory.page(block).is_some_and(|p| p.flags & PG_ACTIVE != 0);
    let key = memory.page(block).map_or(0, |p| p.private);
    crate::lru::del(memory, block.pfn(), HUGE_PAGES);
    memory.split_huge(block);
    for step in 0..HUGE_PAGES {
        let page = if to_reclaim { step } else { HUGE_PAGES - 1 - step };
        let frame = PhysAddr::new(block.as_u64() + page * 4096);
        if let Some(p) = memory.page(frame) {
            p.flags |= PG_ANON;
            (p.mapcount, p.refcount, p.order) = (mapcount, refcount, 0);
            // Page `page` of the block lies `page` pages above its start in every mapping.
            p.private = key + page;
        }
        if to_reclaim {
            crate::lru::add_tail(memory, frame.pfn(), 1, shared::mm::LRU_INACTIVE_ANON);
        } else {
            crate::lru::add(memory, frame.pfn(), 1, usize::from(active));
        }
    }
}

/// Serves a write to the present, read-only anonymous page at `page` of a writable private
/// mapping: the last sharer reuses it, any other gets a copy. `flags` are the writable
/// entry's. One walk of the tables does it.
pub fn write_fault<M: AnonMemory>(
    tree: &mut Mapper<M>,
    page: VirtPage,
    flags: PteFlags,
) -> Result<(WriteFault, Flush), AnonError> {
    let virt = page.start();
    let not_mapped = AnonError::Map(MapError::NotMapped { virt: virt.as_u64() });
    let (done, flush) = tree
        .update_leaf(virt, |memory, entry, size| {
            let huge = size == PageSize::Size2M;
            if size != PageSize::Size4K && !(huge && whole_block(memory, entry.addr())) {
                // A split block or a 1 GiB page: the caller splits the mapping first.
                return Err(AnonError::Map(MapError::SizeMismatch));
            }
            let old = entry.addr();
            // A page in the swap cache is never reused: the entries that still name its
            // slot must find what went out.
            let mapcount = memory.page(old).filter(|p| p.flags & PG_ANON != 0).map(|p| {
                if p.flags & PG_SWAPCACHE != 0 {
                    u32::MAX
                } else {
                    p.mapcount
                }
            });
            let present =
                flags | PteFlags::PRESENT | if huge { PteFlags::HUGE } else { PteFlags::empty() };
            match mapcount {
                Some(1) => {
                    *entry = PageTableEntry::new(old, present);
                    Ok(WriteFault::Reused)
                }
                Some(_) if huge => {
                    let new = memory.alloc_huge().ok_or(AnonError::NoMemory)?;
                    memory.copy_huge(old, new);
                    mark_new(memory, new, HUGE_PAGES, virt.align_down(HUGE_PAGES * 4096));
                    if let Some(head) = memory.page(new) {
                        head.order = HUGE_ORDER;
                    }
                    *entry = PageTableEntry::new(new, present);
                    release(memory, Frame::containing(old, PageSize::Size2M));
                    Ok(WriteFault::Copied)
                }
                Some(_) => {
                    let new = memory.alloc_frame().ok_or(AnonError::NoMemory)?;
                    memory.copy_frame(old, new);
                    mark_new(memory, new, 1, virt);
                    *entry = PageTableEntry::new(new, present);
                    release(memory, Frame::containing(old, PageSize::Size4K));
                    Ok(WriteFault::Copied)
                }
                // Not an anonymous page: nothing here may make it writable.
                None => Err(not_mapped),
            }
        })
        .ok_or(not_mapped)?;
    match done {
        Ok(how) => Ok((how, flush)),
        // A huge page that cannot be copied whole (no free block, or a split block):
        // split the mapping and serve the 4 KiB page written.
        Err(AnonError::NoMemory | AnonError::Map(MapError::SizeMismatch))
            if tree.translate(virt).is_some_and(|m| m.size == PageSize::Size2M) =>
        {
            flush.ignore();
            let split = split_leaf(tree, virt)?;
            let (how, flush) = write_fault(tree, page, flags)?;
            Ok((how, split.and(flush)))
        }
        Err(err) => Err(err),
    }
}

/// A page (or a whole huge block of `pages`) just allocated for its first mapping, at
/// `virt`: anonymous, mapped once, its reverse-map key recorded, on the active LRU list
/// (see `crate::lru`).
fn mark_new<M: AnonMemory>(memory: &mut M, frame: PhysAddr, pages: u64, virt: VirtAddr) {
    let key = crate::reclaim::rmap_key(memory.anon_vma(), virt.as_u64());
    if let Some(page) = memory.page(frame) {
        page.flags = (page.flags | PG_ANON) & !PG_UNEVICTABLE;
        page.mapcount = 1;
        page.refcount = 1;
        page.private = key;
    }
    crate::lru::add(memory, frame.pfn(), pages, shared::mm::LRU_ACTIVE_ANON);
}

#[cfg(test)]
mod tests;
