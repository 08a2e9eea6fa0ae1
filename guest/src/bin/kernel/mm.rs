//! Address translation while the kernel runs on the VMM's boot page tables, which map the
//! first GiB of physical memory at 0, at `PAGE_OFFSET` and at `KERNEL_VIRT_BASE`
//! (`shared::layout`).

use shared::layout::{BOOT_MAP_SIZE, KERNEL_VIRT_BASE, PAGE_OFFSET};

/// The direct-map address of physical address `phys`, which must be below
/// [`BOOT_MAP_SIZE`] for the mapping to exist.
pub fn phys_to_virt(phys: u64) -> Option<u64> {
    (phys < BOOT_MAP_SIZE).then(|| PAGE_OFFSET + phys)
}

/// The physical address behind a kernel pointer (kernel image, direct map or identity map).
pub fn virt_to_phys<T: ?Sized>(ptr: *const T) -> u64 {
    let virt = ptr.cast::<u8>() as u64;
    if virt >= KERNEL_VIRT_BASE {
        virt - KERNEL_VIRT_BASE
    } else if virt >= PAGE_OFFSET {
        virt - PAGE_OFFSET
    } else {
        virt
    }
}
