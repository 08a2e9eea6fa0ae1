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

use crate::paging::{Flush, Frame, MapError, Mapper, PageSize, PageTableEntry, PteFlags, VirtPage};
use crate::vmalloc::VmallocMemory;
use shared::addr::PhysAddr;
use shared::page::{Page, PG_ANON};

/// The memory anonymous pages come from: page tables, frames, their descriptors, and the
/// two ways of filling a frame.
pub trait AnonMemory: VmallocMemory {
    /// The descriptor of `frame`, if it has one.
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page>;
    /// Fills `frame` with zeros.
    fn zero_frame(&mut self, frame: PhysAddr);
    /// Copies the page at `from` to `to`.
    fn copy_frame(&mut self, from: PhysAddr, to: PhysAddr);
}

/// Why an anonymous page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnonError {
    /// No memory for the page or a table.
    NoMemory,
    /// The tables refused (a caller's bug: the VMAs and the tables disagree).
    Map(MapError),
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

/// A zeroed anonymous page mapped at `page` with `flags`; returns its frame.
pub fn map_new<M: AnonMemory>(
    tree: &mut Mapper<M>,
    page: VirtPage,
    flags: PteFlags,
) -> Result<PhysAddr, AnonError> {
    let frame = tree.memory.alloc_frame().ok_or(AnonError::NoMemory)?;
    tree.memory.zero_frame(frame);
    mark_new(&mut tree.memory, frame);
    match tree.map(page, Frame::new(frame, PageSize::Size4K)?, flags) {
        // The entry was not present: nothing to flush.
        Ok(flush) => flush.ignore(),
        Err(err) => {
            release(&mut tree.memory, Frame::containing(frame, PageSize::Size4K));
            return Err(err.into());
        }
    }
    Ok(frame)
}

/// Takes one more mapping of `frame` (fork's copy of a page-table entry).
#[inline]
pub fn share<M: AnonMemory>(memory: &mut M, frame: Frame) {
    if let Some(page) = memory.page(frame.start()).filter(|p| p.flags & PG_ANON != 0) {
        page.mapcount += 1;
        page.refcount += 1;
    }
}

/// Drops one mapping of `frame`; frees the page when it was the last. Returns whether it
/// freed it.
#[inline]
pub fn release<M: AnonMemory>(memory: &mut M, frame: Frame) -> bool {
    let Some(page) = memory.page(frame.start()).filter(|p| p.flags & PG_ANON != 0) else {
        return false;
    };
    page.mapcount = page.mapcount.saturating_sub(1);
    page.refcount = page.refcount.saturating_sub(1);
    if page.mapcount > 0 {
        return false;
    }
    page.flags &= !PG_ANON;
    memory.free_frame(frame.start());
    true
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
            if size != PageSize::Size4K {
                return Err(AnonError::Map(MapError::SizeMismatch));
            }
            let old = entry.addr();
            let mapcount = memory.page(old).filter(|p| p.flags & PG_ANON != 0).map(|p| p.mapcount);
            let present = flags | PteFlags::PRESENT;
            match mapcount {
                Some(1) => {
                    *entry = PageTableEntry::new(old, present);
                    Ok(WriteFault::Reused)
                }
                Some(_) => {
                    let new = memory.alloc_frame().ok_or(AnonError::NoMemory)?;
                    memory.copy_frame(old, new);
                    mark_new(memory, new);
                    *entry = PageTableEntry::new(new, present);
                    release(memory, Frame::containing(old, PageSize::Size4K));
                    Ok(WriteFault::Copied)
                }
                // Not an anonymous page: nothing here may make it writable.
                None => Err(not_mapped),
            }
        })
        .ok_or(not_mapped)?;
    Ok((done?, flush))
}

fn mark_new<M: AnonMemory>(memory: &mut M, frame: PhysAddr) {
    if let Some(page) = memory.page(frame) {
        page.flags |= PG_ANON;
        page.mapcount = 1;
        page.refcount = 1;
    }
}

#[cfg(test)]
mod tests;
