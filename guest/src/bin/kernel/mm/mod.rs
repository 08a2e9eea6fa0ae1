//! The kernel's memory management: from the e820 map to the buddy allocator, and the
//! mappings the kernel runs on.
//!
//! ```text
//! physical                                  virtual
//! [0, 1 MiB)          reserved (VMM data)   0xffff_8880_0000_0000  direct map of all RAM
//! [2 MiB, kernel end) kernel image          0xffff_c900_0000_0000  vmalloc areas, the pager
//! the rest            memblock, then buddy  0xffff_ea00_0000_0000  vmemmap: struct page per pfn,
//!                                                                  backed for present memory only
//!                                           0xffff_ffff_8000_0000  kernel image
//! ```
//!
//! [`setup::init`] runs the sequence (Linux's `setup_arch` → `mm_init`); [`tables`] builds
//! the kernel's page-table tree and lends it out; [`vmemmap`] is the memory map the buddy
//! allocator runs on; [`global`] holds the memory managers once booted; [`pager`] maps
//! pages on first touch from the page-fault handler.

pub mod global;
pub mod pager;
pub mod setup;
pub mod tables;
pub mod translations;
pub mod vmcoreinfo;
pub mod vmemmap;

use shared::addr::PhysAddr;
use shared::layout::{BOOT_MAP_SIZE, KERNEL_VIRT_BASE, PAGE_OFFSET, VMALLOC_START};

/// Bytes of a base page, as a length.
pub const PAGE_BYTES: usize = 4096;

/// The direct-map address of physical address `phys` while only the boot mapping exists
/// (below [`BOOT_MAP_SIZE`]).
pub fn boot_phys_to_virt(phys: u64) -> Option<u64> {
    (phys < BOOT_MAP_SIZE).then(|| PAGE_OFFSET + phys)
}

/// The direct-map address of physical address `phys`: where the kernel reaches RAM once
/// its own tree is loaded.
pub fn direct_map(phys: u64) -> u64 {
    PAGE_OFFSET + phys
}

/// The physical address behind `virt` where it is linear: the kernel image (up to its end)
/// and the direct map. Anything else (vmalloc, the vmemmap, unmapped or user addresses) is refused, as
/// its pages need not be physically contiguous: translate those through the page tables.
pub fn virt_to_phys(virt: u64) -> Option<PhysAddr> {
    let image = tables::KernelImage::get();
    let phys = if (image.text..image.end).contains(&virt) {
        virt - KERNEL_VIRT_BASE
    } else if (PAGE_OFFSET..VMALLOC_START).contains(&virt) {
        virt - PAGE_OFFSET
    } else {
        return None;
    };
    PhysAddr::try_new(phys)
}

/// [`virt_to_phys`] of a pointer.
pub fn virt_to_phys_of<T: ?Sized>(ptr: *const T) -> Option<PhysAddr> {
    virt_to_phys(ptr.cast::<u8>() as u64)
}
