//! The kernel's own page-table tree, and the memory its tables live in.
//!
//! A table page is flagged `PG_TABLE` in its `struct page`, whose `private` field counts
//! the table's used entries (for `guest::paging`'s unmap). Tables come from memblock while
//! the kernel boots ([`EarlyTables`]) and from the buddy allocator afterwards
//! ([`RuntimeTables`]); either way they are reached through the direct map.
//!
//! The tree ([`build`]):
//!
//! ```text
//! PAGE_OFFSET + RAM        direct map, RW NX global, 1 GiB / 2 MiB pages, 4 KiB at the edges
//! KERNEL_VIRT_BASE + image text RX, rodata R NX, data and bss RW NX (4 KiB pages)
//!                          stacks RW NX, each with an unmapped guard page below it
//! VMEMMAP_BASE             the memory map, the same pages the boot tables mapped
//! (nothing else)           no identity map: a null pointer faults
//! ```

use super::direct_map;
use super::vmemmap::{address, Vmemmap};
use guest::buddy::{Buddy, Memmap};
use guest::memblock::Memblock;
use guest::paging::{
    Frame, MapError, Mapper, Page, PageSize, TableAlloc, TableMemory, GLOBAL, NO_EXECUTE, WRITABLE,
};
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{KERNEL_VIRT_BASE, PAGE_SIZE};
use shared::page::{ZoneType, PG_TABLE};

/// The entries of the page table at physical `table`, through the direct map.
pub fn entries_at(table: u64) -> &'static mut [u64; 512] {
    // SAFETY: callers pass a page table of a live tree (the VMM's boot tables, the
    // kernel's, or one just allocated for it): RAM, which the direct map covers, used by
    // nothing but the tree and only from this CPU.
    unsafe { &mut *(direct_map(table) as *mut [u64; 512]) }
}

fn zero(table: u64) {
    // SAFETY: a page just allocated for a table, reached through the direct map.
    unsafe { (direct_map(table) as *mut u8).write_bytes(0, 4096) };
}

/// Tables from memblock, during boot.
pub struct EarlyTables<'a> {
    /// Where tables come from.
    pub memblock: &'a mut Memblock,
    /// Where their counts live.
    pub memmap: &'a mut Vmemmap,
}

impl TableMemory for EarlyTables<'_> {
    fn entries(&mut self, table: PhysAddr) -> &mut [u64; 512] {
        let table = table.as_u64();
        entries_at(table)
    }
}

impl TableAlloc for EarlyTables<'_> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        let table = table.as_u64();
        table_count(self.memmap, table)
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = self.memblock.alloc(PAGE_SIZE, PAGE_SIZE, u64::MAX)?;
        zero(table);
        let page = self.memmap.page(table / PAGE_SIZE)?;
        page.flags |= PG_TABLE;
        page.private = 0;
        Some(PhysAddr::new(table))
    }

    fn free_table(&mut self, table: PhysAddr) {
        let table = table.as_u64();
        // Boot tables are never freed back to memblock: memblock is a record by then.
        if let Some(page) = self.memmap.page(table / PAGE_SIZE) {
            page.flags &= !PG_TABLE;
        }
    }
}

/// Tables from the buddy allocator, once it runs.
pub struct RuntimeTables<'a> {
    /// Where tables come from.
    pub buddy: &'a mut Buddy<Vmemmap>,
}

impl TableMemory for RuntimeTables<'_> {
    fn entries(&mut self, table: PhysAddr) -> &mut [u64; 512] {
        let table = table.as_u64();
        entries_at(table)
    }
}

impl TableAlloc for RuntimeTables<'_> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        let table = table.as_u64();
        table_count(&mut self.buddy.memmap, table)
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = self.buddy.alloc_page(ZoneType::Normal)? * PAGE_SIZE;
        zero(table);
        let page = self.buddy.memmap.page(table / PAGE_SIZE)?;
        page.flags |= PG_TABLE;
        page.private = 0;
        Some(PhysAddr::new(table))
    }

    fn free_table(&mut self, table: PhysAddr) {
        let table = table.as_u64();
        if let Some(page) = self.buddy.memmap.page(table / PAGE_SIZE) {
            page.flags &= !PG_TABLE;
        }
        if let Err(err) = self.buddy.free_page(table / PAGE_SIZE) {
            // A table built at boot from memblock: it stays out of the allocator.
            log::debug!("page table at {table:#x} kept: {err}");
        }
    }
}

/// The used-entry count of a table page, in its `struct page`.
fn table_count(memmap: &mut Vmemmap, table: u64) -> &mut u64 {
    // Tables are only ever allocated from RAM, which always has a descriptor.
    &mut memmap.page(table / PAGE_SIZE).expect("a page table without a struct page").private
}

// Symbols from `kernel.ld`.
extern "C" {
    static __kernel_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __stack_guard: u8;
    static __stack_top: u8;
    static __fault_stack_guard: u8;
    static __fault_stack_top: u8;
}

/// The kernel stack's guard page (virtual).
pub fn stack_guard() -> u64 {
    &raw const __stack_guard as u64
}

/// The fault stack's guard page (virtual).
pub fn fault_stack_guard() -> u64 {
    &raw const __fault_stack_guard as u64
}

/// The start and end of the read-only data (virtual).
pub fn rodata() -> (u64, u64) {
    (&raw const __rodata_start as u64, &raw const __data_start as u64)
}

/// Builds the kernel's tree (see the module documentation) and returns its root.
pub fn build(
    memblock: &mut Memblock,
    memmap: &mut Vmemmap,
    gigabyte_pages: bool,
    nx: bool,
) -> Result<u64, MapError> {
    let memory = memblock.memory.regions().iter().copied().take(128);
    let mut regions = [(0u64, 0u64); 128];
    let mut count = 0;
    for region in memory {
        regions[count] = (region.base, region.size);
        count += 1;
    }
    let nx = if nx { NO_EXECUTE } else { 0 };
    let mut tree =
        Mapper::create(EarlyTables { memblock, memmap }).ok_or(MapError::NoTableMemory)?;

    let largest = if gigabyte_pages { PageSize::Size1G } else { PageSize::Size2M };
    for &(base, size) in &regions[..count] {
        tree.map_range(
            VirtAddr::new(direct_map(base)),
            PhysAddr::new(base),
            size,
            WRITABLE | nx | GLOBAL,
            largest,
        )?
        .ignore();
    }

    let image = |symbol: *const u8| symbol as u64;
    let sections = [
        // (start, end, flags): the gaps between them are the guard pages.
        (image(&raw const __kernel_start), image(&raw const __rodata_start), GLOBAL),
        (image(&raw const __rodata_start), image(&raw const __data_start), GLOBAL | nx),
        (image(&raw const __data_start), stack_guard(), WRITABLE | GLOBAL | nx),
        (stack_guard() + PAGE_SIZE, image(&raw const __stack_top), WRITABLE | GLOBAL | nx),
        (
            fault_stack_guard() + PAGE_SIZE,
            image(&raw const __fault_stack_top),
            WRITABLE | GLOBAL | nx,
        ),
    ];
    for (start, end, flags) in sections {
        let phys = start - KERNEL_VIRT_BASE;
        tree.map_range(
            VirtAddr::new(start),
            PhysAddr::new(phys),
            end - start,
            flags,
            PageSize::Size4K,
        )?
        .ignore();
    }

    // The memory map: the pages the boot tables map it with, at the same addresses.
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    let mut boot = Mapper::new(PhysAddr::new(cr3), LiveTables);
    for &(base, size) in &regions[..count] {
        let (mut virt, end) =
            (address(base / PAGE_SIZE) & !(PAGE_SIZE - 1), address((base + size) / PAGE_SIZE));
        while virt < end {
            match boot.translate(VirtAddr::new(virt)) {
                Some(t) => {
                    let page = virt & !(t.size.bytes() - 1);
                    if tree.translate(VirtAddr::new(page)).is_none() {
                        let (page, frame) = (
                            Page::new(VirtAddr::new(page), t.size)?,
                            Frame::containing(t.phys, t.size),
                        );
                        tree.map(page, frame, WRITABLE | GLOBAL | nx)?.ignore();
                    }
                    virt = page + t.size.bytes();
                }
                None => virt += PAGE_SIZE,
            }
        }
    }
    Ok(tree.root().as_u64())
}

/// Whatever tree CR3 (or a walk) leads to, read and written through the direct map: the
/// VMM's boot tables, the kernel's own.
pub struct LiveTables;

impl TableMemory for LiveTables {
    fn entries(&mut self, table: PhysAddr) -> &mut [u64; 512] {
        entries_at(table.as_u64())
    }
}
