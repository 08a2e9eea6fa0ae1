//! Fixed guest-physical and guest-virtual addresses of the boot contract.
//!
//! ```text
//! guest physical                          written by the VMM
//! 0x0000_0500 .. 0x0000_0520              GDT (null, code64, data, TSS)
//! 0x0000_7000 .. 0x0000_8000              zero page (`boot_params`)
//! 0x0000_9000 .. 0x0000_d000              boot page tables: PML4, PDPT low, PDPT high, PD
//! 0x0002_0000 .. 0x0002_0800              kernel command line (NUL-terminated)
//! 0x0009_fc00 .. 0x0010_0000              reserved in e820 (EBDA, VGA, BIOS)
//! 0x0020_0000 ..                          kernel image (ELF PT_LOAD segments at p_paddr)
//! 3 GiB .. 4 GiB                          32-bit MMIO gap: never RAM
//! ```
//!
//! Every structure the VMM writes except the kernel image lies below 1 MiB, which the guest
//! reserves as a whole (as Linux does), so none of it can reach an allocator.
//!
//! The boot page tables map the first GiB of physical memory three times with 2 MiB pages:
//! at 0 (identity), at [`PAGE_OFFSET`] (the direct map) and at [`KERNEL_VIRT_BASE`] (the
//! kernel's link address, `__START_KERNEL_map` in Linux).

/// One KiB.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Guest-physical address of the GDT the VMM builds.
pub const BOOT_GDT: u64 = 0x500;
/// Guest-physical address of the zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Guest-physical address of the boot PML4.
pub const BOOT_PML4: u64 = 0x9000;
/// Guest-physical address of the boot PDPT for the lower half (identity and direct map).
pub const BOOT_PDPT_LOW: u64 = 0xa000;
/// Guest-physical address of the boot PDPT for the kernel's higher-half mapping.
pub const BOOT_PDPT_HIGH: u64 = 0xb000;
/// Guest-physical address of the boot page directory (512 × 2 MiB = the first GiB).
pub const BOOT_PD: u64 = 0xc000;
/// End (exclusive) of the boot page tables.
pub const BOOT_PAGE_TABLES_END: u64 = 0xd000;
/// Bytes of physical memory the boot page tables map.
pub const BOOT_MAP_SIZE: u64 = GIB;

/// Guest-physical address of the kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Largest command line, terminating NUL included (Linux's `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX: usize = 2048;

/// Start of the Extended BIOS Data Area: conventional RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory: RAM resumes here.
pub const HIGH_MEMORY: u64 = MIB;
/// Lowest guest-physical address the kernel image may occupy.
pub const KERNEL_PHYS_START: u64 = 2 * MIB;

/// Start of the 32-bit MMIO gap, never RAM.
pub const MMIO_GAP_START: u64 = 3 * GIB;
/// End (exclusive) of the 32-bit MMIO gap; RAM beyond 3 GiB continues here.
pub const MMIO_GAP_END: u64 = 4 * GIB;

/// Virtual base of the direct map of all RAM (Linux's `PAGE_OFFSET`, 4-level paging).
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// Virtual base of the vmalloc area.
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// End (exclusive) of the vmalloc area (32 TiB, as Linux with 4-level paging).
pub const VMALLOC_END: u64 = 0xffff_e900_0000_0000;
/// Virtual base of the vmemmap: the `struct page` array, backed only for present sections.
pub const VMEMMAP_BASE: u64 = 0xffff_ea00_0000_0000;
/// Virtual address that maps physical address 0 for the kernel image
/// (Linux's `__START_KERNEL_map`): kernel VA = PA + this.
pub const KERNEL_VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

/// Size of a base page.
pub const PAGE_SIZE: u64 = 4096;
