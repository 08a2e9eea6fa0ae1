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

use shared::addr::PhysAddr;
use shared::layout::{
    BOOT_MAP_SIZE, BOOT_PD, BOOT_PDPT_HIGH, BOOT_PDPT_LOW, BOOT_PML4, KERNEL_VIRT_BASE, PAGE_OFFSET,
};
use shared::pte::{table_index, PageSize, PageTableEntry, PteFlags};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// The boot page tables as (guest-physical address, entry) writes.
pub fn boot_page_table_entries() -> Vec<(u64, PageTableEntry)> {
    let table = |addr: u64| {
        PageTableEntry::new(PhysAddr::new(addr), PteFlags::PRESENT | PteFlags::WRITABLE)
    };
    let slot = |base: u64, virt: u64, level: u8| base + 8 * table_index(virt, level) as u64;
    let mut writes = vec![
        (slot(BOOT_PML4, 0, 4), table(BOOT_PDPT_LOW)),
        (slot(BOOT_PML4, PAGE_OFFSET, 4), table(BOOT_PDPT_LOW)),
        (slot(BOOT_PML4, KERNEL_VIRT_BASE, 4), table(BOOT_PDPT_HIGH)),
        (slot(BOOT_PDPT_LOW, 0, 3), table(BOOT_PD)),
        (slot(BOOT_PDPT_HIGH, KERNEL_VIRT_BASE, 3), table(BOOT_PD)),
    ];
    let huge = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::HUGE;
    let page = PageSize::Size2M.bytes();
    for index in 0..(BOOT_MAP_SIZE / page) {
        let entry = PageTableEntry::new(PhysAddr::new(index * page), huge);
        writes.push((BOOT_PD + 8 * index, entry));
    }
    writes
}

/// Writes the boot page tables into guest memory (which is zero, so unset entries are
/// not present).
pub fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    for (addr, entry) in boot_page_table_entries() {
        mem.write_obj(entry.raw(), GuestAddress(addr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::walk::{translate, PhysMem};
    use std::collections::HashMap;

    /// The written entries as memory; everything else reads as zero (not present).
    struct Entries(HashMap<u64, PageTableEntry>);

    impl PhysMem for Entries {
        fn read_u64(&mut self, gpa: u64) -> Option<u64> {
            Some(self.0.get(&gpa).map_or(0, |e| e.raw()))
        }
    }

    fn walk(tables: &mut Entries, virt: u64) -> Option<u64> {
        translate(tables, BOOT_PML4, virt).ok().map(|m| m.phys)
    }

    #[test]
    fn the_first_gib_appears_at_all_three_bases() {
        let tables = &mut Entries(boot_page_table_entries().into_iter().collect());
        for phys in [0, 0x7000, 0x20_0000, 0x12_3456, BOOT_MAP_SIZE - 1] {
            assert_eq!(walk(tables, phys), Some(phys), "identity {phys:#x}");
            assert_eq!(walk(tables, PAGE_OFFSET + phys), Some(phys), "direct map {phys:#x}");
            assert_eq!(walk(tables, KERNEL_VIRT_BASE + phys), Some(phys), "kernel {phys:#x}");
        }
        assert_eq!(walk(tables, BOOT_MAP_SIZE), None);
        assert_eq!(walk(tables, PAGE_OFFSET + BOOT_MAP_SIZE), None);
    }
}
