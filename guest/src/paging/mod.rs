//! x86_64 4-level page tables (Intel SDM vol. 3, 4.5): map, unmap, protect, translate.
//!
//! ```text
//! virtual address   [63..48 sign] [47..39 PML4] [38..30 PDPT] [29..21 PD] [20..12 PT] [11..0]
//! leaf              PDPT entry with PS: 1 GiB   PD entry with PS: 2 MiB   PT entry: 4 KiB
//! ```
//!
//! - [`addr`]: [`VirtPage`] and [`Frame`], an aligned start and a size;
//! - [`mapper`]: the [`Mapper`], which works on tables reached through a [`TableMemory`],
//!   so the same code runs on the kernel's live tables (through the direct map) and on a
//!   host arena in tests and benchmarks;
//! - [`flush`]: the `#[must_use]` [`Flush`] every change to live tables returns.
//!
//! The entry format, flags and page sizes are `shared::pte`'s, and translation reads the
//! tables through `shared::walk`, the walker the host inspector uses. Each table's count
//! of used entries is kept beside it (in the kernel, in the table page's `struct page`),
//! so that unmapping frees a table the moment it empties without scanning it.

pub mod addr;
pub mod flush;
pub mod mapper;

pub use addr::{Frame, VirtPage};
pub use flush::{Flush, Tlb, FLUSH_ALL_THRESHOLD};
pub use mapper::Mapper;
pub use shared::pte::{PageSize, PageTableEntry, PteFlags};

use shared::addr::PhysAddr;
use shared::pte::ENTRIES;

/// The page tables' memory, for reading (translate, through `shared::walk`) and writing
/// entries.
pub trait TableMemory {
    /// The 512 entries of the table at physical address `table`.
    ///
    /// # Safety
    /// `table` is a page table of a tree in this memory: the root a [`Mapper`] was made
    /// with or allocated, or an address read from a present non-leaf entry of one of its
    /// tables. Implementations may rely on it: the kernel's reach the table through the
    /// direct map, which is sound for page tables and nothing else.
    unsafe fn entries(&mut self, table: PhysAddr) -> &mut [PageTableEntry; ENTRIES];
}

/// Page-table memory that can also allocate and free tables and count their entries, for
/// changing the tree (map, unmap, protect).
pub trait TableAlloc: TableMemory {
    /// The count of used entries of the table at `table`.
    fn used(&mut self, table: PhysAddr) -> &mut u64;
    /// A new table, zeroed, with a used count of zero.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Gives back a table whose entries are all zero.
    fn free_table(&mut self, table: PhysAddr);
    /// A swap entry (a not-present, non-zero level-1 entry) is cleared: its slot has one
    /// reference less. Memory without swap has no such entries.
    fn swap_entry_dropped(&mut self, _entry: PageTableEntry) {}
    /// A swap entry is copied into another tree (fork): its slot has one reference more.
    fn swap_entry_copied(&mut self, _entry: PageTableEntry) {}
}

/// Why a change could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address is not aligned to the page size, or not canonical.
    Misaligned {
        /// The offending address.
        addr: u64,
    },
    /// No memory for a page table.
    NoTableMemory,
    /// The page is already mapped.
    AlreadyMapped {
        /// The virtual address.
        virt: u64,
    },
    /// A larger page covers the address (and the operation does not split).
    ParentEntryHugePage {
        /// The virtual address.
        virt: u64,
    },
    /// A page and a frame of different sizes.
    SizeMismatch,
    /// Nothing is mapped at the address.
    NotMapped {
        /// The virtual address.
        virt: u64,
    },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Misaligned { addr } => {
                write!(f, "{addr:#x} is not aligned to the page size, or not canonical")
            }
            Self::NoTableMemory => write!(f, "no memory for a page table"),
            Self::AlreadyMapped { virt } => write!(f, "{virt:#x} is already mapped"),
            Self::ParentEntryHugePage { virt } => write!(f, "{virt:#x} is inside a huge page"),
            Self::SizeMismatch => write!(f, "a page and a frame of different sizes"),
            Self::NotMapped { virt } => write!(f, "nothing is mapped at {virt:#x}"),
        }
    }
}

/// A translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the virtual address maps to.
    pub phys: PhysAddr,
    /// The size of the page it lies in.
    pub size: PageSize,
    /// The leaf entry's flags.
    pub flags: PteFlags,
}

/// What a tree holds: tables per level and leaves per page size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Tables: PML4, PDPT, PD, PT.
    pub tables: [u64; 4],
    /// Leaves: 4 KiB, 2 MiB, 1 GiB.
    pub pages: [u64; 3],
}

#[cfg(test)]
mod tests;
