//! A 4-level x86_64 page-table walker over any [`PhysMem`], for readers of guest memory
//! that cannot trust it (the host inspector), and for the guest's own translations.
//!
//! ```text
//! virt  [63:48 sign] [47:39 PML4] [38:30 PDPT] [29:21 PD] [20:12 PT] [11:0 offset]
//!        cr3 ─▶ PML4[i] ─▶ PDPT[j] ─▶ (PS: 1 GiB page) PD[k] ─▶ (PS: 2 MiB page) PT[l] ─▶ 4 KiB
//! ```
//!
//! The entry format is [`crate::pte`]'s. A walk stops where the CPU would fault: at a
//! non-present entry, at a reserved bit ([`PageTableEntry::has_reserved_bits`]), or at a
//! table that is not in RAM. Enumeration ([`for_each_leaf`]) visits a canonical virtual
//! range in order and spends one unit of a caller-given budget per entry it reads, so
//! aliased or self-referencing tables cost bounded time.

use crate::addr::VirtAddr;
use crate::pte::{
    entry_span, level_name, table_index, PageTableEntry, PteFlags, ADDR_MASK, ENTRIES,
};
use core::ops::RangeInclusive;

/// Guest-physical memory a walker may read. Reads outside RAM return `None`.
pub trait PhysMem {
    /// The little-endian `u64` at `gpa`.
    fn read_u64(&mut self, gpa: u64) -> Option<u64>;

    /// Fills `words` from `gpa` on (8-byte aligned, within one page: a run of a table's
    /// entries); false if they are not in RAM. One word at a time unless the memory
    /// knows better.
    fn read_words(&mut self, gpa: u64, words: &mut [u64]) -> bool {
        for (at, word) in (gpa..).step_by(8).zip(words.iter_mut()) {
            match self.read_u64(at) {
                Some(value) => *word = value,
                None => return false,
            }
        }
        true
    }
}

/// One entry read on the way down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// 4 = PML4 … 1 = PT.
    pub level: u8,
    /// Guest-physical address of the entry.
    pub entry_addr: u64,
    /// The entry.
    pub entry: PageTableEntry,
}

/// Where a walk ends without a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The address is not canonical.
    NonCanonical,
    /// The entry at this level is not present.
    NotPresent(u8),
    /// The entry at this level sets a reserved bit.
    Reserved(u8),
    /// The table this level reads is not in RAM.
    TableOutsideRam(u8),
}

impl core::fmt::Display for Stop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NonCanonical => write!(f, "not a canonical address"),
            Self::NotPresent(level) => write!(f, "{} entry not present", level_name(level)),
            Self::Reserved(level) => {
                write!(f, "{} entry sets a reserved bit (the CPU faults on it)", level_name(level))
            }
            Self::TableOutsideRam(level) => {
                write!(f, "{} table is not in guest RAM", level_name(level))
            }
        }
    }
}

/// A mapped address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Guest-physical address of the byte.
    pub phys: u64,
    /// Size of the page: 4 KiB, 2 MiB or 1 GiB.
    pub page_size: u64,
    /// The leaf entry.
    pub leaf: PageTableEntry,
    /// Effective permissions: `WRITABLE` and `USER` if every level grants them,
    /// `NO_EXECUTE` if any level sets it.
    pub flags: PteFlags,
}

/// A full walk: the entries read, and the mapping or where it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Entries read, PML4 first.
    pub steps: [Step; 4],
    /// Valid entries of `steps`.
    pub len: usize,
    /// The outcome.
    pub result: Result<Mapping, Stop>,
}

/// Walks `virt` from the PML4 at `cr3`, recording every entry read.
pub fn walk(mem: &mut impl PhysMem, cr3: u64, virt: u64) -> Walk {
    let mut out = Walk { steps: [Step::default(); 4], len: 0, result: Err(Stop::NonCanonical) };
    out.result = walk_inner(mem, cr3, virt, |step| {
        out.steps[out.len] = step;
        out.len += 1;
    });
    out
}

/// Translates `virt` from the PML4 at `cr3`.
#[inline]
pub fn translate(mem: &mut impl PhysMem, cr3: u64, virt: u64) -> Result<Mapping, Stop> {
    walk_inner(mem, cr3, virt, |_| {})
}

/// The permissions below an entry: `WRITABLE` and `USER` only where every level grants
/// them, `NO_EXECUTE` where any level sets it.
#[inline(always)]
fn inherit(above: PteFlags, entry: PageTableEntry) -> PteFlags {
    let granted = PteFlags::WRITABLE | PteFlags::USER;
    let entry = entry.flags();
    (above & (entry | !granted)) | (entry & PteFlags::NO_EXECUTE)
}

#[inline(always)]
fn walk_inner(
    mem: &mut impl PhysMem,
    cr3: u64,
    virt: u64,
    mut record: impl FnMut(Step),
) -> Result<Mapping, Stop> {
    if !VirtAddr::is_canonical(virt) {
        return Err(Stop::NonCanonical);
    }
    let mut table = cr3 & ADDR_MASK;
    let mut flags = PteFlags::WRITABLE | PteFlags::USER;
    // One step per level, written out so that each level's index shift, reserved bits and
    // leaf test are constants: the walk is the inspector's and the mapper's hot path.
    macro_rules! step {
        ($level:literal) => {
            let level: u8 = $level;
            let entry_addr = table + 8 * table_index(virt, level) as u64;
            let raw = mem.read_u64(entry_addr).ok_or(Stop::TableOutsideRam(level))?;
            let entry = PageTableEntry::from_raw(raw);
            record(Step { level, entry_addr, entry });
            if !entry.is_present() {
                return Err(Stop::NotPresent(level));
            }
            if entry.has_reserved_bits(level) {
                return Err(Stop::Reserved(level));
            }
            flags = inherit(flags, entry);
            if entry.is_leaf(level) {
                let page_size = entry_span(level);
                let base = entry.addr().as_u64() & !(page_size - 1);
                return Ok(Mapping {
                    phys: base | (virt & (page_size - 1)),
                    page_size,
                    leaf: entry,
                    flags,
                });
            }
            table = entry.addr().as_u64();
        };
    }
    step!(4);
    step!(3);
    step!(2);
    step!(1);
    let _ = table;
    unreachable!("level 1 always ends the walk")
}

/// A mapped page found by [`for_each_leaf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First virtual address (canonical).
    pub virt: u64,
    /// First guest-physical address.
    pub phys: u64,
    /// Page size.
    pub size: u64,
    /// The leaf entry.
    pub entry: PageTableEntry,
    /// Effective permissions, as [`Mapping::flags`].
    pub flags: PteFlags,
}

/// What an enumeration reports besides leaves.
pub trait Visitor {
    /// A table of `level` at `gpa` is about to be read.
    fn table(&mut self, _level: u8, _gpa: u64) {}
    /// A present entry at `level` (at guest-physical `entry_addr`, covering virtual
    /// addresses from `virt`) sets a reserved bit: the CPU faults there, so nothing below
    /// it is mapped.
    fn reserved(&mut self, _level: u8, _entry_addr: u64, _virt: u64, _entry: PageTableEntry) {}
    /// A mapped page; return `false` to stop the enumeration.
    fn leaf(&mut self, leaf: Leaf) -> bool;
    /// A not-present entry that is not zero (a swap entry, in a process's level-1 table)
    /// at `level`, for the virtual addresses from `virt`.
    fn not_present(&mut self, _level: u8, _virt: u64, _entry: PageTableEntry) {}
}

/// Why an enumeration ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumError {
    /// The budget of entries ran out.
    Budget,
    /// The visitor asked to stop.
    Stopped,
}

/// Visits every mapped page overlapping `range` (canonical, inclusive) in address order,
/// lower half first. Each entry read costs one unit of `budget`. Tables outside RAM and
/// entries with reserved bits are skipped, as the CPU would fault on them.
pub fn for_each_leaf(
    mem: &mut impl PhysMem,
    cr3: u64,
    range: RangeInclusive<VirtAddr>,
    budget: &mut u64,
    visitor: &mut impl Visitor,
) -> Result<(), EnumError> {
    // In the 48-bit linear space the canonical addresses are one contiguous range.
    let (start, end) = (range.start().linear(), range.end().linear());
    if start > end {
        return Ok(());
    }
    let flags = PteFlags::WRITABLE | PteFlags::USER;
    visit(mem, cr3 & ADDR_MASK, 4, 0, start, end, flags, budget, visitor)
}

/// Every canonical address, for [`for_each_leaf`].
pub const ALL_ADDRESSES: RangeInclusive<VirtAddr> = VirtAddr::new(0)..=VirtAddr::new(u64::MAX);

#[allow(clippy::too_many_arguments)]
fn visit(
    mem: &mut impl PhysMem,
    table: u64,
    level: u8,
    base: u64,
    start: u64,
    end: u64,
    flags: PteFlags,
    budget: &mut u64,
    visitor: &mut impl Visitor,
) -> Result<(), EnumError> {
    visitor.table(level, table);
    let span = entry_span(level);
    let first = if start > base { (start - base) / span } else { 0 };
    let last = ((end - base) / span).min(511);
    if first > last {
        return Ok(());
    }
    let count = last + 1 - first;
    *budget = budget.checked_sub(count).ok_or(EnumError::Budget)?;
    // The entries in range, read in one go: a table is a page, in RAM or not as a whole.
    let mut entries = [0u64; ENTRIES];
    let entries = &mut entries[..usize::try_from(count).unwrap_or(ENTRIES)];
    if !mem.read_words(table + 8 * first, entries) {
        // The table itself is outside RAM: nothing below it can be mapped.
        return Ok(());
    }
    for (slot, &raw) in (first..).zip(entries.iter()) {
        let entry_addr = table + 8 * slot;
        let entry = PageTableEntry::from_raw(raw);
        let virt = base + slot * span;
        if !entry.is_present() {
            if raw != 0 {
                visitor.not_present(level, VirtAddr::new_truncate(virt).as_u64(), entry);
            }
            continue;
        }
        if entry.has_reserved_bits(level) {
            visitor.reserved(level, entry_addr, VirtAddr::new_truncate(virt).as_u64(), entry);
            continue;
        }
        let child = inherit(flags, entry);
        if entry.is_leaf(level) {
            let leaf = Leaf {
                virt: VirtAddr::new_truncate(virt).as_u64(),
                phys: entry.addr().as_u64() & !(span - 1),
                size: span,
                entry,
                flags: child,
            };
            if !visitor.leaf(leaf) {
                return Err(EnumError::Stopped);
            }
        } else {
            let child_end = end.min(virt + span - 1);
            visit(
                mem,
                entry.addr().as_u64(),
                level - 1,
                virt,
                start.max(virt),
                child_end,
                child,
                budget,
                visitor,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Sparse memory: 8-byte words by address.
    #[derive(Default)]
    struct Words(BTreeMap<u64, u64>);

    impl PhysMem for Words {
        fn read_u64(&mut self, gpa: u64) -> Option<u64> {
            (gpa < 1 << 30).then(|| self.0.get(&gpa).copied().unwrap_or(0))
        }
    }

    const P: u64 = PteFlags::PRESENT.bits();
    const RW: u64 = P | PteFlags::WRITABLE.bits();
    const PS: u64 = PteFlags::HUGE.bits();
    const NX: u64 = PteFlags::NO_EXECUTE.bits();
    const US: u64 = PteFlags::USER.bits();

    /// PML4 at 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000; 0xffff_8000_0000_0000 region.
    fn tree() -> Words {
        let mut m = Words::default();
        m.0.insert(0x1000 + 8 * 256, 0x2000 | RW);
        m.0.insert(0x2000, 0x3000 | RW);
        m.0.insert(0x2000 + 8, 0x4000_0000 | RW | PS); // 1 GiB at virt +1 GiB
        m.0.insert(0x3000, 0x4000 | P); // read-only below
        m.0.insert(0x3000 + 8, 0x20_0000 | RW | PS | NX); // 2 MiB
        m.0.insert(0x4000 + 8 * 3, 0x9000 | RW | US);
        m
    }

    const BASE: u64 = 0xffff_8000_0000_0000;

    #[test]
    fn translates_every_page_size_with_effective_flags() {
        let mut m = tree();
        let small = translate(&mut m, 0x1000, BASE + 0x3123).expect("mapped");
        assert_eq!((small.phys, small.page_size), (0x9123, 4096));
        assert!(
            !small.flags.intersects(PteFlags::WRITABLE | PteFlags::USER),
            "the PD entry is read-only, supervisor"
        );
        let two = translate(&mut m, 0x1000, BASE + 0x20_0000 + 5).expect("mapped");
        assert_eq!((two.phys, two.page_size), (0x20_0005, 2 << 20));
        assert!(two.flags.contains(PteFlags::NO_EXECUTE));
        let one = translate(&mut m, 0x1000, BASE + (1 << 30) + 7).expect("mapped");
        assert_eq!((one.phys, one.page_size), (0x4000_0007, 1 << 30));
    }

    #[test]
    fn walks_stop_where_the_cpu_would_fault() {
        let mut m = tree();
        assert_eq!(translate(&mut m, 0x1000, 0x1000), Err(Stop::NotPresent(4)));
        assert_eq!(translate(&mut m, 0x1000, 1 << 47), Err(Stop::NonCanonical));
        assert_eq!(translate(&mut m, 0x1000, BASE + 0x4000), Err(Stop::NotPresent(1)));
        m.0.insert(0x1000 + 8 * 257, 0x2000 | RW | PS);
        assert_eq!(translate(&mut m, 0x1000, BASE + (1 << 39)), Err(Stop::Reserved(4)));
        m.0.insert(0x1000 + 8 * 258, (1 << 40) | RW);
        assert_eq!(translate(&mut m, 0x1000, BASE + (2 << 39)), Err(Stop::TableOutsideRam(3)));
        let w = walk(&mut m, 0x1000, BASE + 0x3000);
        assert_eq!(w.len, 4);
        assert_eq!(
            w.steps[3],
            Step {
                level: 1,
                entry_addr: 0x4018,
                entry: PageTableEntry::from_raw(0x9000 | RW | US)
            }
        );
    }

    #[test]
    fn misaligned_large_leaves_fault_on_their_reserved_bits() {
        let mut m = tree();
        // A 2 MiB leaf with bit 13 set, a 1 GiB leaf with bit 29 set.
        m.0.insert(0x3000 + 16, 0x40_2000 | RW | PS);
        m.0.insert(0x2000 + 16, 0x8000_0000 | (1 << 29) | RW | PS);
        assert_eq!(translate(&mut m, 0x1000, BASE + 0x40_0000), Err(Stop::Reserved(2)));
        assert_eq!(translate(&mut m, 0x1000, BASE + (2 << 30)), Err(Stop::Reserved(3)));
        // Bit 12 is the PAT bit of a large leaf: allowed.
        m.0.insert(0x3000 + 24, 0x60_1000 | RW | PS);
        assert_eq!(translate(&mut m, 0x1000, BASE + 0x60_0010).map(|t| t.phys), Ok(0x60_0010));
        // Bit 7 of a 4 KiB entry is PAT, not PS: still a 4 KiB page.
        m.0.insert(0x4000 + 8 * 4, 0xa000 | RW | PS);
        let pat = translate(&mut m, 0x1000, BASE + 0x4008).expect("mapped");
        assert_eq!((pat.phys, pat.page_size), (0xa008, 4096));
    }

    struct Collect(Vec<Leaf>, Vec<(u8, u64)>, Vec<(u8, u64)>);
    impl Visitor for Collect {
        fn table(&mut self, level: u8, gpa: u64) {
            self.1.push((level, gpa));
        }
        fn reserved(&mut self, level: u8, _: u64, virt: u64, _: PageTableEntry) {
            self.2.push((level, virt));
        }
        fn leaf(&mut self, leaf: Leaf) -> bool {
            self.0.push(leaf);
            true
        }
    }

    fn collect() -> Collect {
        Collect(Vec::new(), Vec::new(), Vec::new())
    }

    #[test]
    fn enumeration_is_ordered_clipped_and_bounded() {
        let mut m = tree();
        let mut all = collect();
        let mut budget = 1 << 20;
        for_each_leaf(&mut m, 0x1000, ALL_ADDRESSES, &mut budget, &mut all).expect("complete");
        let virts: Vec<u64> = all.0.iter().map(|l| l.virt).collect();
        assert_eq!(virts, [BASE + 0x3000, BASE + 0x20_0000, BASE + (1 << 30)]);
        assert_eq!(all.1, [(4, 0x1000), (3, 0x2000), (2, 0x3000), (1, 0x4000)]);
        let mut some = collect();
        let mut budget = 1 << 20;
        let one = VirtAddr::new(BASE + 0x20_0000);
        for_each_leaf(&mut m, 0x1000, one..=one, &mut budget, &mut some).expect("complete");
        assert_eq!(some.0.len(), 1);
        // A PML4 whose every entry points back at itself aliases 2^36 pages: bounded.
        for slot in 0..512 {
            m.0.insert(0x1000 + 8 * slot, 0x1000 | RW);
        }
        let mut budget = 10_000;
        let mut loops = collect();
        let result = for_each_leaf(&mut m, 0x1000, ALL_ADDRESSES, &mut budget, &mut loops);
        assert_eq!(result, Err(EnumError::Budget));
    }

    #[test]
    fn enumeration_names_entries_with_reserved_bits_and_skips_them() {
        let mut m = tree();
        m.0.insert(0x1000 + 8 * 300, 0x2000 | RW | PS);
        m.0.insert(0x3000 + 16, 0x40_2000 | RW | PS);
        let mut found = collect();
        let mut budget = 1 << 20;
        for_each_leaf(&mut m, 0x1000, ALL_ADDRESSES, &mut budget, &mut found).expect("complete");
        assert_eq!(found.0.len(), 3, "the bad entries map nothing");
        assert_eq!(found.2, [(2, BASE + 0x40_0000), (4, 0xffff_9600_0000_0000)]);
    }

    #[test]
    fn enumeration_names_non_zero_entries_that_are_not_present() {
        struct Absent(Vec<(u8, u64, Option<u64>)>);
        impl Visitor for Absent {
            fn leaf(&mut self, _: Leaf) -> bool {
                true
            }
            fn not_present(&mut self, level: u8, virt: u64, entry: PageTableEntry) {
                self.0.push((level, virt, entry.swap_slot()));
            }
        }
        let mut m = tree();
        m.0.insert(0x4000 + 8 * 5, PageTableEntry::swap(77).raw());
        m.0.insert(0x3000 + 8 * 7, 0x9000 | PteFlags::WRITABLE.bits());
        let mut found = Absent(Vec::new());
        let mut budget = 1 << 20;
        for_each_leaf(&mut m, 0x1000, ALL_ADDRESSES, &mut budget, &mut found).expect("complete");
        assert_eq!(found.0, [(1, BASE + 0x5000, Some(77)), (2, BASE + 0xe0_0000, None)]);
    }

    #[test]
    fn a_range_across_the_hole_covers_both_halves_and_nothing_else() {
        let mut m = tree();
        m.0.insert(0x1000, 0x5000 | RW | US);
        m.0.insert(0x5000 + 8 * 511, 0x6000 | RW | US);
        m.0.insert(0x6000 + 8 * 511, 0x7000 | RW | US);
        m.0.insert(0x7000 + 8 * 511, 0xb000 | RW | US);
        let mut found = collect();
        let mut budget = 1 << 20;
        let range = VirtAddr::new(0x7f_ffff_f000)..=VirtAddr::new(BASE + 0x3fff);
        for_each_leaf(&mut m, 0x1000, range, &mut budget, &mut found).expect("complete");
        let virts: Vec<u64> = found.0.iter().map(|l| l.virt).collect();
        assert_eq!(virts, [0x7f_ffff_f000, BASE + 0x3000]);
    }
}
