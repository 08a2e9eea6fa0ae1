//! Demand paging: an area whose pages are mapped on first touch.
//!
//! The page-fault handler cannot borrow the kernel's memory managers (the code that
//! faulted may be using them), so the pager owns what it needs: the area, and a pool of
//! page frames taken from the buddy allocator in advance, which supplies both the zeroed
//! pages it maps and any page table a mapping needs. The owner arms it with
//! [`arm`], touches the area, and [`disarm`]s it to get the unused frames back.

use super::direct_map;
use super::vmemmap::address;
use core::cell::UnsafeCell;
use guest::paging::{
    Frame, Mapper, Page as VirtPage, PageSize, TableAlloc, TableMemory, GLOBAL, WRITABLE,
};
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::PAGE_SIZE;
use shared::page::{Page, PG_TABLE};

/// Frames the pool can hold.
pub const POOL_CAPACITY: usize = 64;

/// The armed area and its frames.
struct State {
    area: (u64, u64),
    pool: [u64; POOL_CAPACITY],
    count: usize,
    faults: u64,
    flags: u64,
}

/// The pager's state: touched by the owner while no fault can occur, and by the fault
/// handler, which runs on the same (only) CPU and never nests in itself.
struct Pager(UnsafeCell<State>);

// SAFETY: one CPU; the owner's accesses and the handler's never overlap (see `State`).
unsafe impl Sync for Pager {}

static PAGER: Pager = Pager(UnsafeCell::new(State {
    area: (0, 0),
    pool: [0; POOL_CAPACITY],
    count: 0,
    faults: 0,
    flags: 0,
}));

fn state() -> &'static mut State {
    // SAFETY: see `Pager`: accesses never overlap.
    unsafe { &mut *PAGER.0.get() }
}

/// Arms the pager for `[start, end)` with `frames` (page-frame numbers, order-0 blocks
/// from the buddy allocator). Mappings are read-write, plus `flags`.
pub fn arm(start: u64, end: u64, frames: &[u64], flags: u64) {
    let state = state();
    let count = frames.len().min(POOL_CAPACITY);
    state.pool[..count].copy_from_slice(&frames[..count]);
    *state = State { area: (start, end), pool: state.pool, count, faults: 0, flags };
}

/// Disarms the pager; returns how many faults it handled and the frames it did not use.
pub fn disarm() -> (u64, &'static [u64]) {
    let state = state();
    state.area = (0, 0);
    (state.faults, &state.pool[..state.count])
}

/// Maps a zeroed page at `addr` if it lies in the armed area; whether it did.
pub fn handle(addr: u64) -> bool {
    let state = state();
    let (start, end) = state.area;
    if !(start..end).contains(&addr) {
        return false;
    }
    let Some(frame) = take(state) else { return false };
    let Some(page) =
        VirtAddr::try_new(addr).map(|addr| VirtPage::containing(addr, PageSize::Size4K))
    else {
        return false;
    };
    // SAFETY: a frame from the pool: ours alone, RAM, reached through the direct map.
    unsafe { (direct_map(frame * PAGE_SIZE) as *mut u8).write_bytes(0, 4096) };
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    let flags = WRITABLE | GLOBAL | state.flags;
    // The page was not present: no TLB holds it.
    let frame = Frame::containing(PhysAddr::new(frame * PAGE_SIZE), PageSize::Size4K);
    match Mapper::new(PhysAddr::new(cr3), PoolTables).map(page, frame, flags) {
        Ok(flush) => flush.ignore(),
        Err(_) => return false,
    }
    state.faults += 1;
    true
}

fn take(state: &mut State) -> Option<u64> {
    state.count = state.count.checked_sub(1)?;
    Some(state.pool[state.count])
}

/// Page tables from the pool; counts in the frames' `struct page`.
struct PoolTables;

fn descriptor(table: u64) -> &'static mut Page {
    // SAFETY: page tables are RAM, whose descriptors the vmemmap backs; the table's
    // descriptor is used by the tree alone.
    unsafe { &mut *(address(table / PAGE_SIZE) as *mut Page) }
}

impl TableMemory for PoolTables {
    fn entries(&mut self, table: PhysAddr) -> &mut [u64; 512] {
        super::tables::entries_at(table.as_u64())
    }
}

impl TableAlloc for PoolTables {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        let table = table.as_u64();
        &mut descriptor(table).private
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = take(state())? * PAGE_SIZE;
        // SAFETY: a frame from the pool, ours alone, in the direct map.
        unsafe { (direct_map(table) as *mut u8).write_bytes(0, 4096) };
        let page = descriptor(table);
        page.flags |= PG_TABLE;
        page.private = 0;
        Some(PhysAddr::new(table))
    }

    fn free_table(&mut self, _table: PhysAddr) {
        // The pager only maps; tables are freed by whoever unmaps the area.
    }
}
