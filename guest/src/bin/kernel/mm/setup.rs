//! Memory setup, in Linux's order: e820 → memblock (add RAM, reserve what is in use) →
//! direct map and vmemmap → zones → hand-off of every free range to the buddy allocator →
//! watermarks. After the hand-off memblock is kept only as a record: it allocates nothing.
//!
//! Cost scales with regions and free blocks, not with pages: the memory map is never
//! cleared (zero is a valid `struct page`), and the hand-off writes one descriptor per
//! maximal aligned block.

use super::paging::{self, MapError, PageSize, PAGE_1G, PAGE_2M};
use super::tables;
use super::vmemmap::Vmemmap;
use super::{direct_map, virt_to_phys};
use guest::buddy::Buddy;
use guest::e820::E820Map;
use guest::memblock::{Memblock, MemblockError, Region};
use log::info;
use shared::boot::E820_TYPE_RAM;
use shared::hypercall::BootTimes;
use shared::layout::{BOOT_MAP_SIZE, HIGH_MEMORY, PAGE_SIZE};

/// The kernel's memory managers.
pub struct Mm {
    /// memblock as it was at the hand-off.
    pub memblock: Memblock,
    /// The page allocator.
    pub buddy: Buddy<Vmemmap>,
    /// Boot-phase costs.
    pub times: BootTimes,
    /// The vmalloc areas.
    pub vmalloc: super::vmalloc::Vmalloc,
    /// The kmalloc caches. Slabs point back to their cache, so once `kmalloc` has slabs
    /// the `Mm` must not move (the kernel keeps it in place in `kernel_main`).
    pub kmalloc: guest::slab::Kmalloc,
}

impl Mm {
    /// The slab layer's view of the buddy allocator (pages through the direct map), and
    /// the kmalloc caches, borrowed together.
    pub fn slab(&mut self) -> (&mut guest::slab::Kmalloc, guest::slab::BuddyPages<'_, Vmemmap>) {
        let pages =
            guest::slab::BuddyPages { buddy: &mut self.buddy, base: shared::layout::PAGE_OFFSET };
        (&mut self.kmalloc, pages)
    }
}

/// Why memory setup failed.
#[derive(Debug)]
pub enum SetupError {
    /// The kernel image is not inside usable RAM.
    KernelNotInRam(Region),
    /// memblock ran out of region slots.
    Memblock(MemblockError),
    /// A mapping could not be made.
    Map(MapError),
    /// The kernel's page-table tree could not be built.
    Tree(guest::paging::MapError),
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
            Self::Map(err) => write!(f, "early page tables: {err}"),
            Self::Tree(err) => write!(f, "kernel page tables: {err:?}"),
            Self::Slab => write!(f, "kmalloc caches could not be set up"),
        }
    }
}

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The physical range of the kernel image (text to the end of the stack).
pub fn kernel_region() -> Region {
    let start = virt_to_phys(&raw const __kernel_start);
    let end = virt_to_phys(&raw const __kernel_end);
    Region { base: start, size: end - start }
}

fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reads the time-stamp counter; no memory access.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Builds memblock, the memory map, the buddy allocator and the kmalloc caches (with red
/// zones and poisoning if `slub_debug`) from the sanitised e820 map.
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
    let kernel = kernel_region();
    if !memblock.memory.contains(kernel.base, kernel.size) {
        return Err(SetupError::KernelNotInRam(kernel));
    }
    memblock.reserve(kernel.base, kernel.size).map_err(SetupError::Memblock)?;
    let memblock_ready = rdtsc();

    map_ram_beyond_boot_mapping(&mut memblock).map_err(SetupError::Map)?;
    // SAFETY: the direct map now covers all of memblock's memory, and memblock's own
    // allocations are reserved, so nothing else uses them.
    unsafe { memblock.enable_growth(|phys| direct_map(phys) as *mut u8) };
    let mut vmemmap = Vmemmap::populate(&mut memblock).map_err(SetupError::Map)?;
    // The kernel's own tree replaces the VMM's boot tables.
    let nx = crate::cpu::has_nx();
    crate::cpu::enable_paging_features();
    let root = tables::build(&mut memblock, &mut vmemmap, paging::gigabyte_pages(), nx)
        .map_err(SetupError::Tree)?;
    // SAFETY: the tree maps the kernel image, its stacks, the direct map of all RAM (where
    // the kernel keeps every other pointer it uses) and the memory map.
    unsafe { crate::cpu::switch_page_tables(root) };
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
    // The caches have no slabs yet, so `Mm` can still move to its final place.
    let kmalloc = guest::slab::Kmalloc::new(slub_debug).ok_or(SetupError::Slab)?;
    Ok(Mm { memblock, buddy, times, vmalloc: super::vmalloc::Vmalloc::new(nx), kmalloc })
}

/// Extends the direct map (the boot tables cover the first GiB) to all RAM: 1 GiB pages
/// where the CPU has them and RAM covers a whole aligned GiB, 2 MiB pages elsewhere.
fn map_ram_beyond_boot_mapping(memblock: &mut Memblock) -> Result<(), MapError> {
    let gigabytes = paging::gigabyte_pages();
    for index in 0..memblock.memory.regions().len() {
        let region = memblock.memory.regions()[index];
        let mut phys = region.base.max(BOOT_MAP_SIZE) / PAGE_2M * PAGE_2M;
        let end = region.end().next_multiple_of(PAGE_2M);
        while phys < end {
            if gigabytes && phys % PAGE_1G == 0 && phys + PAGE_1G <= end {
                if !paging::is_mapped(direct_map(phys)) {
                    paging::map(direct_map(phys), phys, PageSize::Size1G, memblock)?;
                }
                phys += PAGE_1G;
            } else {
                let len = (phys / PAGE_1G + 1) * PAGE_1G;
                let len = len.min(end) - phys;
                paging::map_2m_range(direct_map(phys), phys, len, memblock)?;
                phys += len;
            }
        }
    }
    Ok(())
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
