//! The kernel's own page-table tree: how it is built at boot, and the memory its tables
//! live in afterwards.
//!
//! ```text
//! PAGE_OFFSET + RAM        direct map, RW NX global, the largest pages that fit; the
//!                          kernel image's text and rodata read-only (4 KiB pages)
//! KERNEL_VIRT_BASE + image text RX, rodata R NX, data and bss RW NX (4 KiB pages, global)
//!                          stacks RW NX, each above an unmapped guard page
//! VMEMMAP_BASE             the memory map (vmemmap.rs), backed for present memory only
//! VMALLOC_START..END       vmalloc areas and the pager, added at run time
//! (nothing else)           no identity map: a null pointer faults
//! ```
//!
//! Life cycle: [`build`] makes the tree with tables from memblock ([`BootTables`]) below
//! 1 GiB, where the VMM's boot tables reach them through the direct map, then the kernel
//! loads it. A table's `struct page` is flagged `PG_TABLE` and its `private` counts the
//! table's used entries (for the mapper's unmap), but the memory map only exists once the
//! tree does, so the build keeps the counts and [`BootTree::census`] writes them right
//! after the switch. From then on the
//! tree is lent out through [`super::setup::Mm::tree`], with tables from the buddy
//! allocator ([`KernelTables`]).

use super::direct_map;
use super::vmemmap::{Vmemmap, VmemmapLayout};
use guest::anon::AnonMemory;
use guest::buddy::{Buddy, Memmap};
use guest::memblock::{Memblock, Region};
use guest::paging::{
    MapError, Mapper, PageSize, PageTableEntry, PteFlags, TableAlloc, TableMemory, Tlb,
};
use guest::vmalloc::VmallocMemory;
use shared::addr::{PhysAddr, VirtAddr};
use shared::layout::{BOOT_MAP_SIZE, KERNEL_VIRT_BASE, PAGE_SIZE};
use shared::page::{Page, ZoneType, PG_TABLE};

/// The 512 entries of the page table at `table`, through the direct map.
///
/// # Safety
/// `table` is a page table of a live tree, in RAM the direct map reaches (below 1 GiB
/// while the boot tables are loaded), and no other reference to its entries is live.
pub(crate) unsafe fn table_entries<'a>(table: PhysAddr) -> &'a mut [PageTableEntry; 512] {
    // SAFETY: the caller's contract.
    unsafe { &mut *(direct_map(table.as_u64()) as *mut [PageTableEntry; 512]) }
}

/// Zeroes the frame at `frame`, reached through the direct map.
///
/// # Safety
/// `frame` is a page of RAM the caller owns, which the direct map reaches.
pub(crate) unsafe fn zero_frame(frame: PhysAddr) {
    // The VMM's stores are native; the guest's may be emulated (about 170 µs a page).
    if crate::hypercall::zero_pages(frame.as_u64(), 1) {
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { (direct_map(frame.as_u64()) as *mut u8).write_bytes(0, super::PAGE_BYTES) };
}

/// Tables whose used-entry counts the build keeps for the census; a tree with more
/// (a guest with very many RAM ranges) is counted by reading every table instead.
const COUNTED_TABLES: usize = 256;

/// Tables from memblock below 1 GiB, while the kernel builds its tree on the VMM's boot
/// tables. The memory map that will hold their used-entry counts does not exist yet, so
/// the counts are kept here until [`BootTree::census`] writes them.
pub struct BootTables<'a> {
    /// Where tables (and the memory map's backing) come from.
    pub memblock: &'a mut Memblock,
    /// Each table allocated, with its used-entry count.
    counts: [(PhysAddr, u64); COUNTED_TABLES],
    /// Tables in `counts`.
    tables: usize,
    /// Where counts go past [`COUNTED_TABLES`]; then the census reads every table.
    overflow: Option<u64>,
}

impl TableMemory for BootTables<'_> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        // SAFETY: the caller's contract makes `table` a table of the tree being built,
        // which `alloc_table` took below 1 GiB, where the boot direct map reaches.
        unsafe { table_entries(table) }
    }
}

impl TableAlloc for BootTables<'_> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        match self.counts[..self.tables].iter().position(|&(t, _)| t == table) {
            Some(at) => &mut self.counts[at].1,
            None => self.overflow.insert(0),
        }
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = PhysAddr::new(self.memblock.alloc(PAGE_SIZE, PAGE_SIZE, BOOT_MAP_SIZE)?);
        // SAFETY: a page memblock just reserved for us, below 1 GiB.
        unsafe { zero_frame(table) };
        if let Some(slot) = self.counts.get_mut(self.tables) {
            *slot = (table, 0);
            self.tables += 1;
        } else {
            self.overflow = Some(0);
        }
        Some(table)
    }

    fn free_table(&mut self, _table: PhysAddr) {
        // Building only maps: nothing empties.
    }
}

/// The kernel's tree with tables from the buddy allocator: what [`super::setup::Mm::tree`]
/// lends out. Also the memory of vmalloc areas.
pub struct KernelTables<'a> {
    buddy: &'a mut Buddy<Vmemmap>,
    /// The swap map, for a process tree (whose swap entries it counts).
    swap: Option<&'a mut guest::swap_map::SwapMap>,
    /// The reverse-map group of the process tree this serves (0 for the kernel's).
    anon_vma: u32,
    /// Swap entries added less swap entries dropped through this lender (fork copies,
    /// munmap and exit drop): what a process's swap counter moves by.
    pub swap_added: i64,
    /// The frame `alloc_frame` or `alloc_huge` handed out last, if it was known zero:
    /// `zero_frame` or `zero_huge` of it then writes nothing.
    fresh_zero: Option<PhysAddr>,
    /// Tables allocated less tables freed through this lender: what a process's
    /// page-table counter moves by.
    pub tables_added: i64,
}

impl<'a> KernelTables<'a> {
    /// The kernel tree's memory, over the buddy allocator.
    ///
    /// # Safety
    /// Only for a [`Mapper`] over the kernel's tree (whose tables are RAM pages the direct
    /// map reaches), with no other mapper of it live.
    pub unsafe fn new(buddy: &'a mut Buddy<Vmemmap>) -> Self {
        Self { buddy, swap: None, anon_vma: 0, fresh_zero: None, tables_added: 0, swap_added: 0 }
    }

    /// The same, for a process tree of reverse-map group `anon_vma`, with the swap map.
    ///
    /// # Safety
    /// As for [`KernelTables::new`], for a process tree.
    pub unsafe fn for_process(
        buddy: &'a mut Buddy<Vmemmap>,
        swap: &'a mut guest::swap_map::SwapMap,
        anon_vma: u32,
    ) -> Self {
        // SAFETY: the caller's contract.
        Self { swap: Some(swap), anon_vma, ..unsafe { Self::new(buddy) } }
    }
}

impl TableMemory for KernelTables<'_> {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        // SAFETY: the caller's contract makes `table` a table of the kernel's tree, RAM in
        // the direct map; `new`'s contract makes this the only mapper of it.
        unsafe { table_entries(table) }
    }
}

impl TableAlloc for KernelTables<'_> {
    fn used(&mut self, table: PhysAddr) -> &mut u64 {
        let pfn = table.as_u64() / PAGE_SIZE;
        // Tables are RAM, which always has a descriptor.
        &mut self.buddy.memmap.page(pfn).expect("a page table without a struct page").private
    }

    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let (pfn, zero) = self.buddy.alloc_pages_zero(0, ZoneType::Normal)?;
        let table = PhysAddr::new(pfn * PAGE_SIZE);
        if !zero {
            // SAFETY: a page the buddy allocator just gave us.
            unsafe { zero_frame(table) };
        }
        let page = self.buddy.memmap.page(table.pfn())?;
        page.flags |= PG_TABLE;
        page.private = 0;
        self.tables_added += 1;
        Some(table)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.tables_added -= 1;
        if let Some(page) = self.buddy.memmap.page(table.pfn()) {
            page.flags &= !PG_TABLE;
            page.private = 0;
        }
        if let Err(err) = self.buddy.free_page(table.pfn()) {
            // A table built at boot from memblock: it stays out of the allocator.
            log::debug!("page table at {table:#x} kept: {err}");
        }
    }

    fn swap_entry_dropped(&mut self, entry: PageTableEntry) {
        self.swap_added -= 1;
        guest::reclaim::drop_entry(self, entry);
    }

    fn swap_entry_copied(&mut self, entry: PageTableEntry) {
        self.swap_added += 1;
        guest::reclaim::dup_entry(self, entry);
    }
}

impl VmallocMemory for KernelTables<'_> {
    fn alloc_frame(&mut self) -> Option<PhysAddr> {
        let (pfn, zero) = self.buddy.alloc_pages_zero(0, ZoneType::Normal)?;
        let frame = PhysAddr::new(pfn * PAGE_SIZE);
        self.fresh_zero = zero.then_some(frame);
        Some(frame)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        if let Err(err) = self.buddy.free_page(frame.pfn()) {
            log::error!("vfree: {err}");
        }
    }
}

/// User pages come from the buddy allocator, described by the vmemmap, reached through the
/// direct map.
impl guest::lru::LruMemory for KernelTables<'_> {
    fn lru_page(&mut self, pfn: u64) -> Option<&mut Page> {
        self.buddy.memmap.page(pfn)
    }
    fn lruvec(&mut self) -> &mut shared::mm::Lruvec {
        &mut self.buddy.lruvec
    }
}

impl AnonMemory for KernelTables<'_> {
    fn page(&mut self, frame: PhysAddr) -> Option<&mut Page> {
        self.buddy.memmap.page(frame.pfn())
    }

    fn anon_vma(&self) -> u32 {
        self.anon_vma
    }

    fn swap_map(&mut self) -> Option<&mut guest::swap_map::SwapMap> {
        self.swap.as_deref_mut()
    }

    /// One `SWAP_WRITE_BATCH` per batch (reclaim's batches fit one): the VMM copies
    /// them all in one exit.
    fn swap_write(&mut self, pages: &[(PhysAddr, u64)]) -> bool {
        use guest::reclaim::SWAP_BATCH;
        use shared::hypercall::{SwapIo, SWAP_BATCH_MAX};
        const _: () = assert!(SWAP_BATCH as u64 <= SWAP_BATCH_MAX);
        let mut batch = [SwapIo::default(); SWAP_BATCH];
        pages.chunks(batch.len()).all(|chunk| {
            for (io, &(frame, slot)) in batch.iter_mut().zip(chunk) {
                *io = SwapIo { frame: frame.as_u64(), slot };
            }
            crate::hypercall::swap_write_batch(&batch[..chunk.len()])
        })
    }

    fn swap_read(&mut self, frame: PhysAddr, slot: u64) -> bool {
        crate::hypercall::swap_read(frame.as_u64(), slot)
    }

    /// The VMM zeroes the page (natively, where the guest's stores may be emulated); the
    /// kernel does it itself only if the VMM did not.
    fn zero_frame(&mut self, frame: PhysAddr) -> bool {
        if self.fresh_zero.take() == Some(frame) {
            return false;
        }
        // SAFETY: a frame of a user page, just allocated: RAM in the direct map, ours.
        unsafe { zero_frame(frame) };
        true
    }

    fn alloc_huge(&mut self) -> Option<PhysAddr> {
        let (pfn, zero) = self.buddy.alloc_pages_zero(guest::anon::HUGE_ORDER, ZoneType::Normal)?;
        let block = PhysAddr::new(pfn * PAGE_SIZE);
        self.fresh_zero = zero.then_some(block);
        Some(block)
    }

    fn free_huge(&mut self, block: PhysAddr) {
        if let Err(err) = self.buddy.free_pages(block.pfn(), guest::anon::HUGE_ORDER) {
            log::error!("freeing a huge page: {err}");
        }
    }

    fn split_huge(&mut self, block: PhysAddr) {
        if let Err(err) = self.buddy.split_block(block.pfn(), guest::anon::HUGE_ORDER) {
            log::error!("splitting a huge page: {err}");
        }
    }

    /// The VMM zeroes all 2 MiB in one call, unless the block is known zero.
    fn zero_huge(&mut self, block: PhysAddr) -> bool {
        if self.fresh_zero.take() == Some(block) {
            return false;
        }
        if !crate::hypercall::zero_pages(block.as_u64(), guest::anon::HUGE_PAGES) {
            // SAFETY: a block just allocated: RAM in the direct map, ours, 2 MiB long.
            unsafe { (direct_map(block.as_u64()) as *mut u8).write_bytes(0, 2 << 20) };
        }
        true
    }

    /// The VMM copies the page, as it zeroes one.
    fn copy_frame(&mut self, from: PhysAddr, to: PhysAddr) {
        if crate::hypercall::copy_page(from.as_u64(), to.as_u64()) {
            return;
        }
        let (src, dst) = (direct_map(from.as_u64()), direct_map(to.as_u64()));
        // SAFETY: two distinct RAM pages in the direct map: a mapped user page and one just
        // allocated for its copy.
        unsafe {
            core::ptr::copy_nonoverlapping(src as *const u64, dst as *mut u64, 512);
        }
    }
}

/// TLB invalidation on this CPU.
pub struct LocalTlb;

impl Tlb for LocalTlb {
    fn flush_page(&self, virt: VirtAddr) {
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(virt.as_u64()));
    }

    fn flush_all(&self) {
        crate::cpu::flush_tlb_everything();
    }
}

// Symbols from `kernel.ld`.
extern "C" {
    static __kernel_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __kernel_end: u8;
    static __stack_guard: u8;
    static __stack_top: u8;
    static __fault_stack_guard: u8;
    static __fault_stack_top: u8;
}

/// The kernel image's sections, by virtual address.
#[derive(Clone, Copy)]
pub struct KernelImage {
    /// Start of the text (and of the image).
    pub text: u64,
    /// Start of the read-only data.
    pub rodata: u64,
    /// Start of the data, bss and stacks.
    pub data: u64,
    /// End of the image.
    pub end: u64,
}

impl KernelImage {
    /// The running kernel's sections.
    pub fn get() -> Self {
        let at = |symbol: *const u8| symbol as u64;
        Self {
            text: at(&raw const __kernel_start),
            rodata: at(&raw const __rodata_start),
            data: at(&raw const __data_start),
            end: at(&raw const __kernel_end),
        }
    }

    /// The image's physical range.
    pub fn region(&self) -> Region {
        Region { base: self.text - KERNEL_VIRT_BASE, size: self.end - self.text }
    }

    /// A section start's physical address.
    pub fn phys(virt: u64) -> u64 {
        virt - KERNEL_VIRT_BASE
    }
}

/// The kernel stack's guard page (virtual).
pub fn stack_guard() -> u64 {
    &raw const __stack_guard as u64
}

/// The fault stack's guard page (virtual).
pub fn fault_stack_guard() -> u64 {
    &raw const __fault_stack_guard as u64
}

/// The tree [`build`] made: its root, and its tables' used-entry counts until the memory
/// map can hold them.
pub struct BootTree {
    /// What to load into CR3.
    pub root: PhysAddr,
    counts: [(PhysAddr, u64); COUNTED_TABLES],
    tables: usize,
    complete: bool,
}

/// Builds the kernel's tree (see the module documentation) in tables from `memblock`,
/// including the memory map `vmemmap` lays out.
pub fn build(
    memblock: &mut Memblock,
    vmemmap: &VmemmapLayout,
    gigabyte_pages: bool,
    nx: bool,
) -> Result<BootTree, MapError> {
    let mut regions = [Region::default(); guest::memblock::MAX_REGIONS];
    let count = memblock.memory.regions().len().min(regions.len());
    regions[..count].copy_from_slice(&memblock.memory.regions()[..count]);
    let nx = if nx { PteFlags::NO_EXECUTE } else { PteFlags::empty() };
    let tables = BootTables {
        memblock,
        counts: [(PhysAddr::new(0), 0); COUNTED_TABLES],
        tables: 0,
        overflow: None,
    };
    let mut tree = Mapper::create(tables).ok_or(MapError::NoTableMemory)?;

    // The direct map. Linux write-protects every alias of the kernel's text and rodata,
    // so their frames are mapped read-only here too (4 KiB pages around them).
    let image = KernelImage::get();
    let read_only = (KernelImage::phys(image.text), KernelImage::phys(image.data));
    let largest = if gigabyte_pages { PageSize::Size1G } else { PageSize::Size2M };
    let rw = PteFlags::WRITABLE | PteFlags::GLOBAL | nx;
    for region in &regions[..count] {
        let (start, end) = (region.base, region.end());
        let cut = |at: u64| at.clamp(start, end);
        for (from, to, flags) in [
            (start, cut(read_only.0), rw),
            (cut(read_only.0), cut(read_only.1), PteFlags::GLOBAL | nx),
            (cut(read_only.1), end, rw),
        ] {
            if from < to {
                tree.map_range(
                    VirtAddr::new(direct_map(from)),
                    PhysAddr::new(from),
                    to - from,
                    flags,
                    largest,
                )?
                .ignore();
            }
        }
    }

    // The image at its link address; the gaps between the pieces are the guard pages.
    let sections = [
        (image.text, image.rodata, PteFlags::GLOBAL),
        (image.rodata, image.data, PteFlags::GLOBAL | nx),
        (image.data, stack_guard(), rw),
        (stack_guard() + PAGE_SIZE, &raw const __stack_top as u64, rw),
        (fault_stack_guard() + PAGE_SIZE, &raw const __fault_stack_top as u64, rw),
    ];
    for (start, end, flags) in sections {
        let phys = PhysAddr::new(KernelImage::phys(start));
        tree.map_range(VirtAddr::new(start), phys, end - start, flags, PageSize::Size4K)?.ignore();
    }

    vmemmap.populate(&mut tree, rw)?;
    // Not loaded yet: nothing to flush.
    let root = tree.root();
    let BootTables { counts, tables, overflow, .. } = tree.memory;
    Ok(BootTree { root, counts, tables, complete: overflow.is_none() })
}

impl BootTree {
    /// Writes every table's `struct page` (`PG_TABLE`, used entries in `private`), once
    /// the tree is loaded and the memory map exists: from the counts the build kept, or,
    /// past [`COUNTED_TABLES`] tables, by reading every table (slow under emulation: 512
    /// entries each).
    pub fn census(&self, vmemmap: &mut Vmemmap) {
        let mut write = |table: PhysAddr, used: u64| {
            if let Some(page) = vmemmap.page(table.pfn()) {
                page.flags |= PG_TABLE;
                page.private = used;
            }
        };
        if self.complete {
            self.counts[..self.tables].iter().for_each(|&(table, used)| write(table, used));
            return;
        }
        // SAFETY: `root` is the loaded kernel tree, whose tables are RAM the direct map now
        // reaches; nothing else maps it during the census.
        let mut tree = unsafe { Mapper::new(self.root, DirectMapTables) };
        tree.for_each_table(|table, _, used| write(table, used));
    }
}

/// A loaded tree read through the direct map, for the census.
struct DirectMapTables;

impl TableMemory for DirectMapTables {
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; 512] {
        // SAFETY: the caller's contract: a table of the loaded tree, in RAM.
        unsafe { table_entries(table) }
    }
}
