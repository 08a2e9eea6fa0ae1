//! `struct page`: the 64-byte descriptor of every present physical page frame, in the
//! vmemmap at [`crate::layout::VMEMMAP_BASE`] (`pfn_to_page(pfn)` = base + 64 × pfn), and the
//! zone geometry. The host reads both, so their layout is fixed here.
//!
//! An all-zero `Page` is a valid state: "not free, not allocated, owned by nobody" (a
//! reserved or not-yet-managed frame). The VMM hands over zeroed RAM, so the guest never
//! initialises the memory map; the hand-off to the buddy allocator touches only the first
//! page of each free block.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Page-frame descriptor (64 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Page {
    /// `PG_*` flags.
    pub flags: u64,
    /// References to an allocated page (1 from allocation to free).
    pub refcount: u32,
    /// Order of the block this page heads: free (`PG_BUDDY`) or allocated (`PG_HEAD`).
    pub order: u32,
    /// Next page frame on the free list (with `PG_BUDDY`) or the LRU list (with `PG_LRU`,
    /// towards the tail); [`NO_PFN`] ends the list.
    pub next: u64,
    /// Previous page frame on the free list or the LRU list.
    pub prev: u64,
    /// Slab: address of the owning cache.
    pub slab_cache: u64,
    /// Slab: first free object.
    pub slab_freelist: u64,
    /// Slab: objects in use (at most 4096: an order-3 slab of 8-byte objects).
    pub slab_inuse: u16,
    /// Slab: objects in the slab.
    pub slab_objects: u16,
    /// User page (`PG_ANON`): the page-table entries that map it, across every process
    /// (Linux's `_mapcount` + 1). Each mapping also holds one `refcount`.
    pub mapcount: u32,
    /// Owner-specific data: a page table's used entries; a kmalloc slab's size class; a
    /// user page's reverse-map key (`(anon_vma << 36) | virtual page number`: where every
    /// mapping of it lies, and in which group of address spaces).
    pub private: u64,
}

const _: () = assert!(core::mem::size_of::<Page>() == PAGE_STRUCT_SIZE);

/// Size of a [`Page`].
pub const PAGE_STRUCT_SIZE: usize = 64;

/// The first page of a free block in the buddy allocator (Linux's `PageBuddy`).
pub const PG_BUDDY: u64 = 1 << 0;
/// On a per-CPU free list (an order-0 page the buddy allocator counts as allocated).
pub const PG_PCP: u64 = 1 << 1;
/// The first page of an allocated block; `order` holds its order.
pub const PG_HEAD: u64 = 1 << 2;
/// Part of a slab (set on the slab's first page).
pub const PG_SLAB: u64 = 1 << 3;
/// A page table of the kernel's tree; `private` counts its used entries.
pub const PG_TABLE: u64 = 1 << 4;
/// An anonymous page of user processes (Linux's `PageAnon`); `mapcount` counts its
/// mappings.
pub const PG_ANON: u64 = 1 << 5;
/// Known to hold zeros (on a free block's first page): a block the VMM discarded, or RAM
/// never written since boot. The buddy allocator keeps it through splits and merges
/// (a merge with a block not known zero clears it) and takes it off at allocation,
/// telling the caller (`Buddy::alloc_pages_zero` in the guest), which then skips zeroing.
pub const PG_ZERO: u64 = 1 << 6;

/// On an LRU list (Linux's `PG_lru`): `next` and `prev` link it there. A whole huge
/// block is one entry, on its head.
pub const PG_LRU: u64 = 1 << 7;
/// On the active LRU list rather than the inactive one (Linux's `PG_active`).
pub const PG_ACTIVE: u64 = 1 << 8;
/// A user page in the swap cache (Linux's `PG_swapcache`): read back from a swap slot
/// that other page tables still name, so that their faults find it here instead of
/// reading the slot again. The cache holds one `refcount` of its own.
pub const PG_SWAPCACHE: u64 = 1 << 9;
/// Reclaim must not take it (Linux's `PG_unevictable`): a page of a `MAP_SHARED`
/// anonymous mapping, whose sharers must keep seeing one page (Linux swaps those through
/// shmem, which this kernel does not have). It stays on the active list.
pub const PG_UNEVICTABLE: u64 = 1 << 10;

/// End of a free list.
pub const NO_PFN: u64 = u64::MAX;

/// Number of buddy orders: blocks of 2^0 to 2^10 pages (Linux's `NR_PAGE_ORDERS`).
pub const NR_ORDERS: usize = 11;
/// Largest order.
pub const MAX_ORDER: u32 = 10;

/// log2 of a page.
pub const PAGE_SHIFT: u32 = 12;
/// log2 of a memory section: 128 MiB, whose 32 768 `Page`s fill exactly one 2 MiB page of
/// vmemmap (Linux x86_64's `SECTION_SIZE_BITS`).
pub const SECTION_SHIFT: u32 = 27;
/// Page frames per section.
pub const PAGES_PER_SECTION: u64 = 1 << (SECTION_SHIFT - PAGE_SHIFT);

/// The zones, in fallback order from the top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum ZoneType {
    /// Below 16 MiB.
    Dma = 0,
    /// Below 4 GiB.
    Dma32 = 1,
    /// From 4 GiB.
    Normal = 2,
}

/// Number of zones.
pub const NR_ZONES: usize = 3;

impl ZoneType {
    /// All zones, lowest first.
    pub const ALL: [ZoneType; NR_ZONES] = [Self::Dma, Self::Dma32, Self::Normal];

    /// The name `/proc/zoneinfo` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dma => "DMA",
            Self::Dma32 => "DMA32",
            Self::Normal => "Normal",
        }
    }

    /// The zone with this number.
    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.get(value as usize).copied()
    }

    /// Page frames `[start, end)` the zone may span.
    pub fn pfn_limits(self) -> (u64, u64) {
        match self {
            Self::Dma => (0, DMA_END_PFN),
            Self::Dma32 => (DMA_END_PFN, DMA32_END_PFN),
            Self::Normal => (DMA32_END_PFN, u64::MAX >> PAGE_SHIFT),
        }
    }

    /// The zone a page frame belongs to.
    pub fn of_pfn(pfn: u64) -> Self {
        if pfn < DMA_END_PFN {
            Self::Dma
        } else if pfn < DMA32_END_PFN {
            Self::Dma32
        } else {
            Self::Normal
        }
    }
}

/// First page frame above ZONE_DMA (16 MiB).
pub const DMA_END_PFN: u64 = (16 << 20) >> PAGE_SHIFT;
/// First page frame above ZONE_DMA32 (4 GiB).
pub const DMA32_END_PFN: u64 = (4 << 30) >> PAGE_SHIFT;
