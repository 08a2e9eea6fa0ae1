//! `vmcoreinfo`: where the host finds the guest's memory-management state.
//!
//! The descriptor sits at the fixed guest-physical address [`VMCOREINFO_ADDR`], in the
//! first MiB, which the guest reserves as a whole. It is written in two steps:
//!
//! ```text
//! VMM, before boot    nr_ram, ram[]          RAM ranges and their offsets in the RAM file
//! guest, after mm     everything else        pointers are kernel virtual addresses
//!                     magic, last            (until then a reader sees "not published")
//! guest, at run time  seq                    odd while an allocator is being changed
//! ```
//!
//! Pointers are kernel virtual addresses, as in Linux's vmcoreinfo: the host translates
//! them through the guest's own page tables from `cr3`. A reader takes `seq`, reads what
//! it needs, and takes `seq` again: an odd value or a change means a torn snapshot.
//!
//! The descriptor lives at the fixed address itself rather than behind a pointer there:
//! one untrusted pointer fewer to follow.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Guest-physical address of the descriptor.
pub const VMCOREINFO_ADDR: u64 = 0x6000;

/// `magic` once the guest has published the descriptor: "kvmmcore".
pub const VMCOREINFO_MAGIC: u64 = u64::from_le_bytes(*b"kvmmcore");

/// The layout version this crate describes (3: the task array; 4: `MmStruct::pgtables`,
/// `VmaNode` in four cache lines, the swap device's slots and map, `lowmem_reserve`, the
/// LRU lists and the vmstat events; 5: `Task::oom_score_adj`; 6: `VmaNode` of 32 entries
/// in eight cache lines).
pub const VMCOREINFO_VERSION: u32 = 6;

/// [`VmCoreInfo::paging_flags`]: the kernel maps with no-execute (EFER.NXE is on), so
/// everything but its text must be NX.
pub const PAGING_NX: u64 = 1 << 0;

/// RAM ranges the descriptor can list.
pub const MAX_RAM_RANGES: usize = 8;

/// A RAM range and where it is in the RAM file.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct RamRange {
    /// First guest-physical address.
    pub guest_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Offset of the first byte in the RAM file.
    pub file_offset: u64,
}

/// The descriptor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VmCoreInfo {
    /// [`VMCOREINFO_MAGIC`] once published.
    pub magic: u64,
    /// [`VMCOREINFO_VERSION`].
    pub version: u32,
    /// RAM ranges in `ram` (written by the VMM).
    pub nr_ram: u32,
    /// The RAM ranges (written by the VMM).
    pub ram: [RamRange; MAX_RAM_RANGES],
    /// Sequence counter: bumped before and after every allocator change (odd = changing).
    pub seq: u64,
    /// Physical address of the kernel's PML4.
    pub cr3: u64,
    /// Base of the direct map (`PAGE_OFFSET`).
    pub page_offset: u64,
    /// Base of the `struct page` array (`vmemmap`): page frame `pfn` is described at
    /// `vmemmap + 64 × pfn`.
    pub vmemmap: u64,
    /// Page frames below this may have a `struct page`.
    pub max_pfn: u64,
    /// Physical range of the kernel image: start.
    pub kernel_start: u64,
    /// Physical range of the kernel image: end (exclusive).
    pub kernel_end: u64,
    /// Physical start of the kernel's read-only data; its text is `[kernel_start, here)`.
    pub kernel_rodata: u64,
    /// Physical start of the kernel's data, bss and stacks: `[here, kernel_end)`.
    pub kernel_data: u64,
    /// How the kernel maps: [`PAGING_NX`].
    pub paging_flags: u64,
    /// The vmalloc area: start.
    pub vmalloc_start: u64,
    /// The vmalloc area: end (exclusive).
    pub vmalloc_end: u64,
    /// `[`[`crate::mm::Zone`]`; nr_zones]`, DMA first.
    pub zones: u64,
    /// Zones at `zones`.
    pub nr_zones: u64,
    /// memblock's `memory` regions: [`crate::mm::Region`]s.
    pub memblock_memory: u64,
    /// Regions at `memblock_memory`.
    pub memblock_memory_cnt: u64,
    /// memblock's `reserved` regions.
    pub memblock_reserved: u64,
    /// Regions at `memblock_reserved`.
    pub memblock_reserved_cnt: u64,
    /// The sanitised e820 map: packed 20-byte [`crate::boot::E820Entry`]s.
    pub e820: u64,
    /// Entries at `e820`.
    pub e820_cnt: u64,
    /// The slab caches: each begins with a [`crate::mm::SlabCache`].
    pub slab_caches: u64,
    /// Bytes from one cache to the next.
    pub slab_cache_stride: u64,
    /// Caches at `slab_caches`.
    pub nr_slab_caches: u64,
    /// The processes: [`crate::process::Task`]s, free slots included.
    pub tasks: u64,
    /// Slots at `tasks`.
    pub nr_tasks: u64,
    /// Page slots of the swap device (0: none).
    pub nr_swap_slots: u64,
    /// The swap map: one byte per slot, the references to it (0: free); 0 without a
    /// device.
    pub swap_map: u64,
    /// The node's LRU lists: a [`crate::mm::Lruvec`].
    pub lruvec: u64,
    /// The /proc/vmstat event counters: a [`crate::mm::VmEvents`].
    pub vm_events: u64,
}

/// Size of a [`VmCoreInfo`].
pub const VMCOREINFO_SIZE: usize = 440;
const _: () = assert!(core::mem::size_of::<VmCoreInfo>() == VMCOREINFO_SIZE);
const _: () = assert!(VMCOREINFO_SIZE as u64 <= crate::layout::PAGE_SIZE);
// The descriptor's page lies below the zero page, in the first MiB.
const _: () = assert!(VMCOREINFO_ADDR + crate::layout::PAGE_SIZE <= crate::layout::ZERO_PAGE);
