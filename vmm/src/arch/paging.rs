//! The boot page tables: the first GiB of physical memory mapped with 2 MiB pages at 0
//! (identity), at `PAGE_OFFSET` (direct map) and at `KERNEL_VIRT_BASE` (kernel image).
//!
//! ```text
//! PML4[0]   ─┐
//! PML4[273] ─┴▶ PDPT low [0]   ─┐
//! PML4[511] ──▶ PDPT high [510] ┴▶ PD: 512 × 2 MiB = [0, 1 GiB)
//! ```
//!
//! Entry format: Intel SDM vol. 3, 4.5 (4-level paging).

use shared::layout::{
    BOOT_MAP_SIZE, BOOT_PD, BOOT_PDPT_HIGH, BOOT_PDPT_LOW, BOOT_PML4, KERNEL_VIRT_BASE, PAGE_OFFSET,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// Present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page size: the entry maps a large page.
pub const PTE_HUGE: u64 = 1 << 7;

const PAGE_2M: u64 = 2 << 20;

/// Index of `virt` in the table at `level` (4 = PML4 … 1 = PT).
pub const fn table_index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The boot page tables as (guest-physical address, 64-bit entry) writes.
pub fn boot_page_table_entries() -> Vec<(u64, u64)> {
    let table = PTE_PRESENT | PTE_WRITABLE;
    let slot = |base: u64, index: usize| base + 8 * index as u64;
    let mut writes = vec![
        (slot(BOOT_PML4, table_index(0, 4)), BOOT_PDPT_LOW | table),
        (slot(BOOT_PML4, table_index(PAGE_OFFSET, 4)), BOOT_PDPT_LOW | table),
        (slot(BOOT_PML4, table_index(KERNEL_VIRT_BASE, 4)), BOOT_PDPT_HIGH | table),
        (slot(BOOT_PDPT_LOW, table_index(0, 3)), BOOT_PD | table),
        (slot(BOOT_PDPT_HIGH, table_index(KERNEL_VIRT_BASE, 3)), BOOT_PD | table),
    ];
    for index in 0..(BOOT_MAP_SIZE / PAGE_2M) {
        writes.push((BOOT_PD + 8 * index, (index * PAGE_2M) | table | PTE_HUGE));
    }
    writes
}

/// Writes the boot page tables into guest memory (which is zero, so unset entries are
/// not present).
pub fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    for (addr, entry) in boot_page_table_entries() {
        mem.write_obj(entry, GuestAddress(addr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Walks the entries like the MMU: the physical address behind `virt`, if mapped.
    fn walk(tables: &HashMap<u64, u64>, virt: u64) -> Option<u64> {
        let present = |entry: &u64| entry & PTE_PRESENT != 0;
        let mut table = BOOT_PML4;
        for level in [4, 3] {
            let entry = tables
                .get(&(table + 8 * table_index(virt, level) as u64))
                .filter(|e| present(e))?;
            table = entry & 0x000f_ffff_ffff_f000;
        }
        let entry =
            tables.get(&(table + 8 * table_index(virt, 2) as u64)).filter(|e| present(e))?;
        (entry & PTE_HUGE != 0).then(|| (entry & 0x000f_ffff_ffe0_0000) | (virt & (PAGE_2M - 1)))
    }

    #[test]
    fn the_first_gib_appears_at_all_three_bases() {
        let tables: HashMap<u64, u64> = boot_page_table_entries().into_iter().collect();
        for phys in [0, 0x7000, 0x20_0000, 0x12_3456, BOOT_MAP_SIZE - 1] {
            assert_eq!(walk(&tables, phys), Some(phys), "identity {phys:#x}");
            assert_eq!(walk(&tables, PAGE_OFFSET + phys), Some(phys), "direct map {phys:#x}");
            assert_eq!(walk(&tables, KERNEL_VIRT_BASE + phys), Some(phys), "kernel {phys:#x}");
        }
        assert_eq!(walk(&tables, BOOT_MAP_SIZE), None);
        assert_eq!(walk(&tables, PAGE_OFFSET + BOOT_MAP_SIZE), None);
    }
}
