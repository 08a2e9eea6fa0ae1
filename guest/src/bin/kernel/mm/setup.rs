//! Memory setup, in Linux's order: e820 → memblock (add RAM, reserve what is in use) →
//! the kernel's own page tables with the memory map, loaded → zones → hand-off of every
//! free range to the buddy allocator → watermarks → kmalloc and vmalloc. After the
//! hand-off memblock is kept only as a record: it allocates nothing.
//!
//! Cost scales with regions and free blocks, not with pages: the memory map is never
//! cleared (zero is a valid `struct page`), and the hand-off writes one descriptor per
//! maximal aligned block.

use super::direct_map;
use super::tables::{self, KernelImage, KernelTables, LocalTlb};
use super::vmemmap::{Vmemmap, VmemmapLayout};
use guest::buddy::Buddy;
use guest::e820::E820Map;
use guest::memblock::{Memblock, MemblockError, Region};
use guest::paging::{MapError, Mapper, PageTableEntry, TableAlloc};
use guest::reclaim::Rmap;
use guest::slab::{BuddyPages, Kmalloc};
use guest::swap_map::SwapMap;
use guest::vmalloc::{Vmalloc, VmallocError};
use log::info;
use shared::addr::{PhysAddr, VirtAddr};
use shared::boot::E820_TYPE_RAM;
use shared::hypercall::BootTimes;
use shared::layout::{HIGH_MEMORY, PAGE_OFFSET, PAGE_SIZE, VMALLOC_END, VMALLOC_START};
use shared::mm::VmEvents;

/// The kernel's memory managers.
pub struct Mm {
    /// memblock as it was at the hand-off.
    pub memblock: Memblock,
    /// The page allocator.
    pub buddy: Buddy<Vmemmap>,
    /// Boot-phase costs.
    pub times: BootTimes,
    /// The vmalloc areas.
    pub vmalloc: Vmalloc,
    /// The kmalloc caches. Slabs point back to their cache, so once `kmalloc` has slabs
    /// the `Mm` must not move (the kernel keeps it in place in `mm::global`).
    pub kmalloc: Kmalloc,
    /// The kernel tree's root (what CR3 holds).
    root: PhysAddr,
    /// The swap device's slots and swap cache (no slots without a device).
    pub swap: SwapMap,
    /// The process trees reclaim may unmap pages from.
    pub rmap: Rmap,
    /// Linux's /proc/vmstat event counters that apply.
    pub events: VmEvents,
}

impl Mm {
    /// The slab layer's view of the buddy allocator (pages through the direct map), and
    /// the kmalloc caches, borrowed together.
    pub fn slab(&mut self) -> (&mut Kmalloc, BuddyPages<'_, Vmemmap>) {
        // SAFETY: the direct map reaches every frame the buddy allocator hands out, at
        // PAGE_OFFSET + pfn × 4096, and a block is the slab layer's while it holds it: the
        // buddy allocator refuses to free a PG_SLAB block. The kmalloc caches only ever
        // meet this backend (the only buddy allocator, at PAGE_OFFSET).
        let pages = unsafe { BuddyPages::new(&mut self.buddy, PAGE_OFFSET) };
        (&mut self.kmalloc, pages)
    }

    /// The kernel's page-table tree, with tables from the buddy allocator.
    pub fn tree(&mut self) -> Mapper<KernelTables<'_>> {
        kernel_tree(self.root, &mut self.buddy)
    }

    /// The kernel tree's root.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// A new process tree: a zeroed PML4 whose upper half (the kernel's) is the kernel
    /// tree's. Returns its root, or `None` without memory.
    pub fn new_user_tree(&mut self) -> Option<PhysAddr> {
        let kernel = self.root;
        let mut tree = self.tree();
        let root = tree.memory.alloc_table()?;
        // SAFETY: both are page tables in RAM the direct map reaches; `root` was allocated
        // just now, so nothing else refers to it, and the kernel tree's root is only read.
        unsafe {
            let mut upper = [PageTableEntry::UNUSED; 256];
            upper.copy_from_slice(&super::tables::table_entries(kernel)[256..]);
            let entries = super::tables::table_entries(root);
            entries[256..].copy_from_slice(&upper);
            *tree.memory.used(root) = upper.iter().filter(|e| e.is_present()).count() as u64;
        }
        Some(root)
    }

    /// The process tree at `root`, of reverse-map group `group`, with tables from the
    /// buddy allocator.
    ///
    /// # Safety
    /// `root` is a tree [`Mm::new_user_tree`] made and not yet freed; no other mapper of it
    /// is live.
    pub unsafe fn user_tree(&mut self, root: PhysAddr, group: u32) -> Mapper<KernelTables<'_>> {
        // SAFETY: the caller's contract: a tree of RAM page tables the direct map reaches.
        unsafe {
            Mapper::new(root, KernelTables::for_process(&mut self.buddy, &mut self.swap, group))
        }
    }

    /// Reclaims up to `want` pages of anonymous memory to swap (see `guest::reclaim`), and
    /// counts it as kswapd's (`background`) or direct reclaim. Returns the pages freed.
    ///
    /// Rounds scan a growing share of the LRU lists, as Linux's reclaim priorities do:
    /// from a 4096th of them (at least four pages per page wanted) up to all of them, until
    /// `want` are freed or the device is full. A list full of pages referenced since they
    /// were aged is then not mistaken for one with nothing to give: the later rounds age
    /// and scan further.
    pub fn reclaim(&mut self, want: u64, background: bool) -> u64 {
        /// Linux's `DEF_PRIORITY`: the first round scans lists >> 12.
        const DEF_PRIORITY: u32 = 12;
        if self.swap.slots() == 0 {
            // Anonymous memory can only go to swap (Linux's get_scan_count scans no
            // anonymous list without it).
            return 0;
        }
        let lists = self.buddy.lruvec.lists;
        let root = self.root;
        // SAFETY: the kernel's tree, a tree in this memory; reclaim only reads it before
        // moving to the process trees the reverse map holds.
        let mut tree = unsafe {
            Mapper::new(root, KernelTables::for_process(&mut self.buddy, &mut self.swap, 0))
        };
        let listed = lists.iter().map(|list| list.nr_pages).sum::<u64>();
        let (mut scanned, mut reclaimed, mut written) = (0, 0, 0);
        for priority in (0..=DEF_PRIORITY).rev() {
            let budget = (listed >> priority).max(4 * (want - reclaimed));
            let (done, flush) =
                guest::reclaim::shrink(&mut tree, &mut self.rmap, want - reclaimed, budget);
            flush.flush(&LocalTlb);
            (scanned, reclaimed, written) =
                (scanned + done.scanned, reclaimed + done.reclaimed, written + done.written);
            if reclaimed >= want || done.swap_full {
                break;
            }
        }
        let events = &mut self.events;
        events.pswpout += written;
        if background {
            events.pgscan_kswapd += scanned;
            events.pgsteal_kswapd += reclaimed;
        } else {
            events.pgscan_direct += scanned;
            events.pgsteal_direct += reclaimed;
        }
        reclaimed
    }

    /// Background reclaim (Linux's kswapd, run here at the end of a fault rather than in
    /// a thread of its own): below the Normal zone's low watermark, reclaims until the
    /// high one holds, a batch at a time, giving up when a batch frees nothing. Without a
    /// swap device there is nothing it could free.
    pub fn balance(&mut self) {
        use guest::buddy::Watermark;
        use shared::page::ZoneType;
        if self.swap.slots() == 0 || self.buddy.watermark_ok(ZoneType::Normal, Watermark::Low) {
            return;
        }
        while !self.buddy.watermark_ok(ZoneType::Normal, Watermark::High) {
            if self.reclaim(guest::reclaim::SWAP_BATCH as u64, true) == 0 {
                break;
            }
        }
    }

    /// Frees the process tree at `root`, whose lower half must be empty by now
    /// ([`Mapper::unmap_present`] of all of it).
    ///
    /// # Safety
    /// `root` is a tree [`Mm::new_user_tree`] made, not loaded in CR3, and never used again.
    pub unsafe fn free_user_tree(&mut self, root: PhysAddr) {
        // SAFETY: the caller's contract: a PML4 in RAM that nothing uses any more.
        let entries = unsafe { super::tables::table_entries(root) };
        debug_assert!(entries[..256].iter().all(|e| !e.is_present()));
        entries[256..].fill(PageTableEntry::UNUSED);
        let mut tree = self.tree();
        *tree.memory.used(root) = 0;
        tree.memory.free_table(root);
    }

    /// Allocates `size` bytes of vmalloc memory.
    pub fn vmalloc(&mut self, size: u64) -> Result<VirtAddr, VmallocError> {
        self.vmalloc.vmalloc(&mut kernel_tree(self.root, &mut self.buddy), &LocalTlb, size)
    }

    /// Frees the vmalloc area at `addr`.
    pub fn vfree(&mut self, addr: VirtAddr) -> Result<(), VmallocError> {
        self.vmalloc.vfree(&mut kernel_tree(self.root, &mut self.buddy), &LocalTlb, addr)
    }

    /// Maps `size` bytes of device memory at `phys` uncached, executable if asked.
    pub fn ioremap(
        &mut self,
        phys: PhysAddr,
        size: u64,
        executable: bool,
    ) -> Result<VirtAddr, VmallocError> {
        let tree = &mut kernel_tree(self.root, &mut self.buddy);
        self.vmalloc.ioremap(tree, phys, size, executable)
    }
}

/// The kernel's tree at `root` over `buddy`: the one way to a mapper of it, since both
/// come only from [`Mm`].
fn kernel_tree(root: PhysAddr, buddy: &mut Buddy<Vmemmap>) -> Mapper<KernelTables<'_>> {
    // SAFETY: `root` is the kernel's tree (set once at boot), whose tables are RAM pages
    // the direct map reaches; the `&mut` borrow of the buddy allocator, which only `Mm`
    // holds, makes this the only mapper of it.
    unsafe { Mapper::new(root, KernelTables::new(buddy)) }
}

/// Why memory setup failed.
#[derive(Debug)]
pub enum SetupError {
    /// The kernel image is not inside usable RAM.
    KernelNotInRam(Region),
    /// memblock ran out of region slots.
    Memblock(MemblockError),
    /// The kernel's page-table tree could not be built.
    Tree(MapError),
    /// The kmalloc caches could not be set up.
    Slab,
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::KernelNotInRam(kernel) => write!(
                f,
                "the kernel image [mem {:#018x}-{:#018x}] is not in usable RAM: the e820 map leaves too little for the kernel",
                kernel.base,
                kernel.end() - 1
            ),
            Self::Memblock(err) => write!(f, "memblock: {err:?}: more than 128 regions"),
            Self::Tree(err) => write!(f, "kernel page tables: {err}"),
            Self::Slab => write!(f, "kmalloc caches could not be set up"),
        }
    }
}

fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reads the time-stamp counter; no memory access.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Builds memblock, the kernel's page tables and memory map, the buddy allocator, the
/// kmalloc caches (with red zones and poisoning if `slub_debug`) and the vmalloc areas
/// from the sanitised e820 map, and loads the kernel's tree.
pub fn init(e820: &E820Map, slub_debug: bool) -> Result<Mm, SetupError> {
    let start = rdtsc();
    let mut memblock = Memblock::new();
    for entry in e820.entries().iter().filter(|e| e.typ == E820_TYPE_RAM) {
        // Whole pages only, as Linux's memblock_trim_memory.
        let base = entry.addr.next_multiple_of(PAGE_SIZE);
        let end = (entry.addr + entry.size) / PAGE_SIZE * PAGE_SIZE;
        if base < end {
            memblock.add(base, end - base).map_err(SetupError::Memblock)?;
        }
    }
    // Like Linux, reserve all of the first MiB: the first page, the zero page, the command
    // line, the GDT and the boot page tables, everything the VMM placed, live there.
    memblock.reserve(0, HIGH_MEMORY).map_err(SetupError::Memblock)?;
    let kernel = KernelImage::get().region();
    if !memblock.memory.contains(kernel.base, kernel.size) {
        return Err(SetupError::KernelNotInRam(kernel));
    }
    memblock.reserve(kernel.base, kernel.size).map_err(SetupError::Memblock)?;
    let memblock_ready = rdtsc();

    // The kernel's own tree replaces the VMM's boot tables.
    let nx = crate::cpu::has_nx();
    crate::cpu::enable_paging_features();
    let layout = VmemmapLayout::new(memblock.memory.regions());
    let tree = tables::build(&mut memblock, &layout, crate::cpu::has_gigabyte_pages(), nx)
        .map_err(SetupError::Tree)?;
    let root = tree.root;
    // SAFETY: the tree maps the kernel image, its stacks, the direct map of all RAM (where
    // the kernel keeps every other pointer it uses) and the memory map; it replaces the
    // VMM's boot tables, which map nothing global.
    unsafe { crate::cpu::switch_page_tables(root) };
    // SAFETY: the tree just loaded backs `layout`, and this is its one memory map.
    let mut vmemmap = unsafe { layout.activate() };
    tree.census(&mut vmemmap);
    // SAFETY: the direct map now covers all of memblock's memory, and memblock's own
    // allocations are reserved, so nothing else uses them.
    unsafe { memblock.enable_growth(|phys| direct_map(phys) as *mut u8) };
    let memmap_ready = rdtsc();

    let mut buddy = Buddy::new(vmemmap);
    for region in memblock.memory.regions() {
        buddy.add_present(region.base / PAGE_SIZE, region.end() / PAGE_SIZE);
    }
    for free in memblock.free_ranges() {
        buddy.hand_off(free.base.div_ceil(PAGE_SIZE), free.end() / PAGE_SIZE);
    }
    buddy.setup_watermarks();
    let buddy_ready = rdtsc();

    let times = BootTimes {
        memblock_cycles: memblock_ready - start,
        memmap_cycles: memmap_ready - memblock_ready,
        buddy_cycles: buddy_ready - memmap_ready,
        ram_bytes: memblock.memory.total(),
    };
    // Every PML4 entry a later kernel mapping can need (the vmalloc area's; the direct
    // map, vmemmap and image are complete) gets its table now and keeps it, so the kernel
    // half every process tree copies never changes (Linux's preallocate_vmalloc_pages).
    kernel_tree(root, &mut buddy)
        .preallocate_upper(VirtAddr::new(VMALLOC_START), VMALLOC_END - VMALLOC_START)
        .map_err(SetupError::Tree)?;
    // The per-CPU lists they came through start empty, as if nothing had been allocated.
    buddy.drain_pcp();
    // The caches have no slabs yet, so `Mm` can still move to its final place.
    let kmalloc = Kmalloc::new(slub_debug).ok_or(SetupError::Slab)?;
    let vmalloc = Vmalloc::new(VirtAddr::new(VMALLOC_START), VirtAddr::new(VMALLOC_END), nx);
    // The swap map comes once `alloc` works (`main`, after `global::install`).
    let (swap, rmap, events) = (SwapMap::default(), Rmap::default(), VmEvents::default());
    Ok(Mm { memblock, buddy, times, vmalloc, kmalloc, root, swap, rmap, events })
}

/// Prints memblock in the format of Linux's `/sys/kernel/debug/memblock/{memory,reserved}`.
pub fn print_memblock(memblock: &Memblock) {
    for (name, set) in [("memory", &memblock.memory), ("reserved", &memblock.reserved)] {
        info!("memblock {name}:");
        for (index, region) in set.regions().iter().enumerate() {
            info!("{index:4}: {:#018x}..{:#018x}", region.base, region.end() - 1);
        }
    }
}
