//! The x86_64 paging vocabulary (Intel SDM vol. 3, 4.5, 4-level paging), shared by the
//! guest's mapper, the VMM's boot tables, the walker and the inspector.
//!
//! ```text
//! virtual address  [63:48 sign] [47:39 PML4] [38:30 PDPT] [29:21 PD] [20:12 PT] [11:0]
//! level            4            4            3            2          1
//! leaf             PDPT entry with PS: 1 GiB   PD entry with PS: 2 MiB   PT entry: 4 KiB
//!
//! entry  [63 NX] [62:52 ignored] [51:12 address] [11:9 ignored] [8 G] [7 PS/PAT] [6 D]
//!        [5 A] [4 PCD] [3 PWT] [2 U/S] [1 R/W] [0 P]
//! ```
//!
//! Bit 7 is PS (a leaf) in a PDPT or PD entry, PAT in a PT entry, and reserved in a PML4
//! entry. A 2 MiB leaf must have bits 20:13 clear and a 1 GiB leaf bits 29:13 (bit 12 is
//! their PAT bit); the CPU takes a reserved-bit fault on an entry that breaks this, and so
//! does [`crate::walk`]. Canonical-address helpers are [`crate::addr::VirtAddr`]'s.

use crate::addr::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

bitflags::bitflags! {
    /// The flag bits of an entry. Decoded from guest memory with `from_bits_retain`, so
    /// bits this type does not name (the ignored ones) survive a round trip.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// Present.
        const PRESENT = 1 << 0;
        /// Writable.
        const WRITABLE = 1 << 1;
        /// Reachable from user mode.
        const USER = 1 << 2;
        /// Write-through caching (PWT).
        const WRITE_THROUGH = 1 << 3;
        /// Caching disabled (PCD).
        const NO_CACHE = 1 << 4;
        /// Accessed (set by the CPU).
        const ACCESSED = 1 << 5;
        /// Dirty (set by the CPU, leaves only).
        const DIRTY = 1 << 6;
        /// Page size (PS): a PDPT or PD entry is a leaf. The PAT bit in a PT entry.
        const HUGE = 1 << 7;
        /// Global: kept in the TLB across CR3 loads (needs CR4.PGE).
        const GLOBAL = 1 << 8;
        /// No execute (needs EFER.NXE).
        const NO_EXECUTE = 1 << 63;
    }
}

impl PteFlags {
    /// The bits a mapping's permissions and caching are made of, as callers pass them.
    pub const PERMISSIONS: Self = Self::WRITABLE
        .union(Self::USER)
        .union(Self::WRITE_THROUGH)
        .union(Self::NO_CACHE)
        .union(Self::GLOBAL)
        .union(Self::NO_EXECUTE);
}

/// Physical-address bits the walker accepts (x86_64's architectural limit).
pub const MAX_PHYS_BITS: u32 = 52;
/// The address bits of an entry: 51:12.
pub const ADDR_MASK: u64 = ((1 << MAX_PHYS_BITS) - 1) & !0xfff;
/// Bits 20:13, reserved in a 2 MiB leaf.
const RESERVED_2M: u64 = 0x1f_e000;
/// Bits 29:13, reserved in a 1 GiB leaf.
const RESERVED_1G: u64 = 0x3fff_e000;

/// One page-table entry.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(transparent)]
pub struct PageTableEntry(u64);

/// Where a swap entry's (inverted) slot starts.
const SWAP_SLOT_SHIFT: u32 = 9;
/// A swap entry's slot bits (58:9; bits 63:59 stay clear: Linux keeps the swap type there).
const SWAP_SLOT_MASK: u64 = (1 << 50) - 1;

impl PageTableEntry {
    /// A non-present entry.
    pub const UNUSED: Self = Self(0);

    /// An entry pointing at `addr` (its bits 51:12) with `flags`.
    #[inline]
    pub const fn new(addr: PhysAddr, flags: PteFlags) -> Self {
        Self((addr.as_u64() & ADDR_MASK) | (flags.bits() & !ADDR_MASK))
    }

    /// The entry with this raw value.
    #[inline]
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The flag bits (everything but the address).
    #[inline]
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_retain(self.0 & !ADDR_MASK)
    }

    /// The physical address in bits 51:12: the next table, or the frame of a leaf.
    #[inline]
    pub const fn addr(self) -> PhysAddr {
        PhysAddr::new_masked(self.0 & ADDR_MASK)
    }

    /// Whether the present bit is set.
    #[inline]
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }

    /// Whether a present entry at `level` maps a page rather than a table.
    #[inline]
    pub const fn is_leaf(self, level: u8) -> bool {
        level == 1 || (level <= 3 && self.0 & PteFlags::HUGE.bits() != 0)
    }

    /// A swap entry for slot `slot` of the swap device: a not-present page-table entry
    /// (level 1 only) whose bits 58:9 hold the slot inverted, as Linux's x86 swap entries
    /// do (L1TF: a not-present entry never names a RAM frame the CPU could speculate on).
    /// Bits 8:0 are zero, so the entry is neither present nor `PROT_NONE`-like.
    #[inline]
    pub const fn swap(slot: u64) -> Self {
        Self((!slot & SWAP_SLOT_MASK) << SWAP_SLOT_SHIFT)
    }

    /// The slot of a swap entry ([`PageTableEntry::swap`]); `None` for an unused or present
    /// entry, or one with other bits set.
    #[inline]
    pub const fn swap_slot(self) -> Option<u64> {
        if self.0 == 0 || self.0 & ((1 << SWAP_SLOT_SHIFT) - 1) != 0 || self.0 >> 59 != 0 {
            return None;
        }
        Some(!(self.0 >> SWAP_SLOT_SHIFT) & SWAP_SLOT_MASK)
    }

    /// Whether a present entry at `level` sets a bit the CPU requires clear: PS in a PML4
    /// entry, bits 29:13 of a 1 GiB leaf, bits 20:13 of a 2 MiB leaf. Address bits above
    /// the guest's MAXPHYADDR are reserved too, but a reader does not know it; such
    /// addresses lie outside RAM, where readers stop anyway.
    #[inline]
    pub const fn has_reserved_bits(self, level: u8) -> bool {
        let huge = self.0 & PteFlags::HUGE.bits() != 0;
        match level {
            4 => huge,
            3 => huge && self.0 & RESERVED_1G != 0,
            2 => huge && self.0 & RESERVED_2M != 0,
            _ => false,
        }
    }
}

impl core::fmt::Debug for PageTableEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PageTableEntry({:#x}, {:?})", self.addr().as_u64(), self.flags())
    }
}

/// The size of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, in a page table (level 1).
    Size4K,
    /// 2 MiB, in a page directory (level 2).
    Size2M,
    /// 1 GiB, in a page-directory-pointer table (level 3).
    Size1G,
}

impl PageSize {
    /// Every size, smallest first.
    pub const ALL: [PageSize; 3] = [Self::Size4K, Self::Size2M, Self::Size1G];

    /// Bytes in a page.
    #[inline]
    pub const fn bytes(self) -> u64 {
        entry_span(self.level())
    }

    /// The table level that holds the leaf (1 = PT, 2 = PD, 3 = PDPT).
    #[inline]
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    /// The size of a leaf at `level` (1 to 3; anything above is taken as 3).
    #[inline]
    pub const fn at_level(level: u8) -> Self {
        match level {
            0 | 1 => Self::Size4K,
            2 => Self::Size2M,
            _ => Self::Size1G,
        }
    }

    /// The size of `bytes`, if it is a page size.
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            0x1000 => Some(Self::Size4K),
            0x20_0000 => Some(Self::Size2M),
            0x4000_0000 => Some(Self::Size1G),
            _ => None,
        }
    }

    /// "4 KiB", "2 MiB" or "1 GiB".
    pub const fn name(self) -> &'static str {
        match self {
            Self::Size4K => "4 KiB",
            Self::Size2M => "2 MiB",
            Self::Size1G => "1 GiB",
        }
    }
}

/// Entries in a table.
pub const ENTRIES: usize = 512;

/// Bytes one entry of `level` (4 = PML4 … 1 = PT) maps.
#[inline]
pub const fn entry_span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Index of `virt` in its table at `level` (4 = PML4 … 1 = PT).
#[inline]
pub const fn table_index(virt: u64, level: u8) -> usize {
    ((virt >> (12 + 9 * (level as u32 - 1))) & 0x1ff) as usize
}

/// Name of a paging level (4 = PML4 … 1 = PT).
pub const fn level_name(level: u8) -> &'static str {
    match level {
        4 => "PML4",
        3 => "PDPT",
        2 => "PD",
        _ => "PT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_into_address_and_flags() {
        let flags = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::NO_EXECUTE;
        let entry = PageTableEntry::new(PhysAddr::new(0x1234_5000), flags);
        assert_eq!(entry.raw(), 0x8000_0000_1234_5003);
        assert_eq!((entry.addr().as_u64(), entry.flags()), (0x1234_5000, flags));
        // Ignored bits survive decoding; the address never leaks into the flags.
        let odd = PageTableEntry::from_raw(0x0ff0_0000_0000_0e01 | 0x7000);
        assert_eq!(odd.flags().bits(), 0x0ff0_0000_0000_0e01);
        assert_eq!(odd.addr().as_u64(), 0x7000);
    }

    #[test]
    fn swap_entries_round_trip_and_never_look_present_or_unused() {
        for slot in [0, 1, 255, 0x12_3456, (1 << 24) - 1] {
            let entry = PageTableEntry::swap(slot);
            assert!(!entry.is_present() && entry.raw() != 0, "{slot}: {:#x}", entry.raw());
            assert_eq!(entry.swap_slot(), Some(slot));
            // The address bits name no low frame (the slot is inverted).
            assert!(entry.addr().as_u64() >= 1 << 40, "{slot}: {:#x}", entry.raw());
        }
        assert_eq!(PageTableEntry::UNUSED.swap_slot(), None);
        let present = PageTableEntry::new(PhysAddr::new(0x5000), PteFlags::PRESENT);
        assert_eq!(present.swap_slot(), None);
        assert_eq!(PageTableEntry::from_raw(PageTableEntry::swap(3).raw() | 2).swap_slot(), None);
    }

    #[test]
    fn bit_7_is_ps_pat_or_reserved_by_level() {
        let huge = PageTableEntry::from_raw(0x20_0000 | 0x81);
        assert!(huge.is_leaf(2) && huge.is_leaf(3) && huge.is_leaf(1));
        assert!(huge.has_reserved_bits(4), "PS is reserved in a PML4 entry");
        assert!(!huge.has_reserved_bits(2) && !huge.has_reserved_bits(1), "PAT in a PTE");
        let table = PageTableEntry::from_raw(0x3000 | 0x3);
        assert!(!table.is_leaf(2) && table.is_leaf(1));
    }

    #[test]
    fn large_leaves_must_be_aligned_above_their_pat_bit() {
        let at = |raw: u64| PageTableEntry::from_raw(raw | 0x81);
        assert!(!at(0x20_0000 | 1 << 12).has_reserved_bits(2), "bit 12 is PAT");
        assert!(at(0x20_0000 | 1 << 13).has_reserved_bits(2));
        assert!(at(0x20_0000 | 1 << 20).has_reserved_bits(2));
        assert!(!at(0x20_0000 | 1 << 21).has_reserved_bits(2));
        assert!(at(0x4000_0000 | 1 << 29).has_reserved_bits(3));
        assert!(!at(0x4000_0000 | 1 << 12).has_reserved_bits(3));
        assert!(!at(1 << 30).has_reserved_bits(3));
        // A table entry (PS clear) has no such bits: its address is 4 KiB aligned.
        assert!(!PageTableEntry::from_raw(0x20_3003).has_reserved_bits(2));
    }

    #[test]
    fn sizes_levels_and_indices_agree() {
        for size in PageSize::ALL {
            assert_eq!(PageSize::at_level(size.level()), size);
            assert_eq!(PageSize::from_bytes(size.bytes()), Some(size));
        }
        assert_eq!(PageSize::from_bytes(8192), None);
        let virt = 0xffff_8880_4060_3123u64;
        let indices = [4, 3, 2, 1].map(|level| table_index(virt, level));
        assert_eq!(indices, [0x111, 1, 3, 3]);
        assert_eq!(entry_span(3), 1 << 30);
    }
}
