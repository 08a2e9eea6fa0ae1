//! Early mappings on top of the VMM's boot page tables: the direct map beyond the first
//! GiB and the vmemmap. Page-table pages come from memblock below 1 GiB, where the boot
//! direct map reaches them. New mappings replace only non-present entries, which the TLB
//! never caches, so no flush is needed.

use super::phys_to_virt;
use guest::memblock::Memblock;
use shared::layout::{BOOT_MAP_SIZE, PAGE_SIZE};
use shared::walk::{self, PTE_ADDR_MASK as PTE_ADDR, PTE_HUGE, PTE_PRESENT, PTE_WRITABLE};

/// Bytes of a page table.
const TABLE_BYTES: usize = 4096;

/// 2 MiB.
pub const PAGE_2M: u64 = 2 << 20;
/// 1 GiB.
pub const PAGE_1G: u64 = 1 << 30;

/// The size of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB, in a page table.
    Size4K,
    /// 2 MiB, in a page directory.
    Size2M,
    /// 1 GiB, in a page-directory-pointer table (needs [`gigabyte_pages`]).
    Size1G,
}

/// Whether the CPU maps 1 GiB pages (CPUID 0x8000_0001 EDX bit 26, `pdpe1gb`).
pub fn gigabyte_pages() -> bool {
    let leaf = core::arch::x86_64::__cpuid(0x8000_0001);
    leaf.edx & (1 << 26) != 0
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// memblock had no page below 1 GiB for a page table.
    NoTablePage,
    /// A huge page already covers the address.
    HugePageInTheWay(u64),
    /// The address is already mapped.
    AlreadyMapped(u64),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoTablePage => write!(f, "no memory below 1 GiB for a page table"),
            Self::HugePageInTheWay(virt) => write!(f, "{virt:#x} is inside a huge page"),
            Self::AlreadyMapped(virt) => write!(f, "{virt:#x} is already mapped"),
        }
    }
}

/// The entry for `virt` in the table at physical `table` (below 1 GiB).
fn entry(table: u64, virt: u64, level: u8) -> *mut u64 {
    let table = phys_to_virt(table).unwrap_or(0);
    (table + 8 * walk::index(virt, level)) as *mut u64
}

fn root() -> u64 {
    x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64()
}

/// Whether `virt` is mapped (by a page of any size).
///
/// Not `shared::walk::translate`: that one also computes effective permissions and checks
/// reserved bits, and the vmemmap set-up asks this for every 4 KiB page it backs. Under an
/// emulating KVM the extra instructions put the 6 GiB boot's memmap phase up by 23 %.
pub fn is_mapped(virt: u64) -> bool {
    let mut table = root();
    for level in (1..=4).rev() {
        // SAFETY: `table` is a page table the boot code or `map` built, below 1 GiB and
        // mapped by the boot direct map; reading an entry has no side effect.
        let value = unsafe { entry(table, virt, level).read_volatile() };
        if value & PTE_PRESENT == 0 {
            return false;
        }
        if level == 1 || value & PTE_HUGE != 0 {
            return true;
        }
        table = value & PTE_ADDR;
    }
    false
}

/// Maps `virt` to `phys` (both aligned to `size`), writable.
pub fn map(virt: u64, phys: u64, size: PageSize, memblock: &mut Memblock) -> Result<(), MapError> {
    let leaf_level = leaf_level(size);
    let slot = entry(table_for(virt, leaf_level, memblock)?, virt, leaf_level);
    // SAFETY: `slot` is an entry of a live page table below 1 GiB (see `is_mapped`).
    unsafe {
        if slot.read_volatile() & PTE_PRESENT != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        let huge_bit = if leaf_level > 1 { PTE_HUGE } else { 0 };
        slot.write_volatile(phys | PTE_PRESENT | PTE_WRITABLE | huge_bit);
    }
    Ok(())
}

/// Maps `[virt, virt + len)` to `[phys, phys + len)` with 2 MiB pages (all 2 MiB aligned),
/// skipping what is already mapped. Fills each page directory in one pass: every
/// instruction costs on an emulating KVM, and a walk per page would dominate the boot.
pub fn map_2m_range(
    virt: u64,
    phys: u64,
    len: u64,
    memblock: &mut Memblock,
) -> Result<(), MapError> {
    let mut offset = 0;
    while offset < len {
        let table = table_for(virt + offset, 2, memblock)?;
        let first = walk::index(virt + offset, 2);
        let entries = (512 - first).min((len - offset) / PAGE_2M);
        for slot_index in first..first + entries {
            let slot = (phys_to_virt(table).unwrap_or(0) + 8 * slot_index) as *mut u64;
            // SAFETY: an entry of the live page directory `table` (see `is_mapped`).
            unsafe {
                if slot.read_volatile() & PTE_PRESENT == 0 {
                    slot.write_volatile((phys + offset) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE);
                }
            }
            offset += PAGE_2M;
        }
    }
    Ok(())
}

fn leaf_level(size: PageSize) -> u8 {
    match size {
        PageSize::Size4K => 1,
        PageSize::Size2M => 2,
        PageSize::Size1G => 3,
    }
}

/// The physical address of the table at `leaf_level` that holds `virt`'s entry, creating
/// the tables above it as needed.
fn table_for(virt: u64, leaf_level: u8, memblock: &mut Memblock) -> Result<u64, MapError> {
    let mut table = root();
    for level in (leaf_level + 1..=4).rev() {
        let slot = entry(table, virt, level);
        // SAFETY: as in `is_mapped`; this CPU is the only user of the tables and the
        // slot's new value points to a zeroed, reserved page table.
        let value = unsafe { slot.read_volatile() };
        table = if value & PTE_PRESENT == 0 {
            let new =
                memblock.alloc(PAGE_SIZE, PAGE_SIZE, BOOT_MAP_SIZE).ok_or(MapError::NoTablePage)?;
            let page = phys_to_virt(new).ok_or(MapError::NoTablePage)? as *mut u8;
            // SAFETY: `new` is a page memblock just reserved for us, mapped at `page`.
            unsafe {
                page.write_bytes(0, TABLE_BYTES);
                slot.write_volatile(new | PTE_PRESENT | PTE_WRITABLE);
            }
            new
        } else if value & PTE_HUGE != 0 {
            return Err(MapError::HugePageInTheWay(virt));
        } else {
            value & PTE_ADDR
        };
    }
    Ok(table)
}
