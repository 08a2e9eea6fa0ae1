//! The kernel's memory management: from the e820 map to the buddy allocator.
//!
//! ```text
//! physical                                  virtual
//! [0, 1 MiB)          reserved (VMM data)   0xffff_8880_0000_0000  direct map of all RAM
//! [2 MiB, kernel end) kernel image          0xffff_ea00_0000_0000  vmemmap: struct page per pfn,
//! the rest            memblock, then buddy                         backed for present memory only
//!                                           0xffff_ffff_8000_0000  kernel image (boot mapping)
//! ```
//!
//! [`setup::init`] runs the sequence (Linux's `setup_arch` → `mm_init`); [`paging`] extends
//! the boot page tables; [`vmemmap`] is the memory map the buddy allocator runs on.

pub mod global;
pub mod pager;
pub mod paging;
pub mod setup;
pub mod tables;
pub mod translations;
pub mod vmalloc;
pub mod vmcoreinfo;
pub mod vmemmap;

use shared::layout::{BOOT_MAP_SIZE, KERNEL_VIRT_BASE, PAGE_OFFSET};

/// The direct-map address of physical address `phys` while only the boot mapping exists
/// (below [`BOOT_MAP_SIZE`]).
pub fn phys_to_virt(phys: u64) -> Option<u64> {
    (phys < BOOT_MAP_SIZE).then(|| PAGE_OFFSET + phys)
}

/// The direct-map address of physical address `phys`, for RAM once [`setup::init`] has
/// mapped all of it.
pub fn direct_map(phys: u64) -> u64 {
    PAGE_OFFSET + phys
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
