//! A 4-level x86_64 page-table walker over any [`PhysMem`], for readers of guest memory
//! that cannot trust it (the host inspector).
//!
//! ```text
//! virt  [63:48 sign] [47:39 PML4] [38:30 PDPT] [29:21 PD] [20:12 PT] [11:0 offset]
//!        cr3 ─▶ PML4[i] ─▶ PDPT[j] ─▶ (PS: 1 GiB page) PD[k] ─▶ (PS: 2 MiB page) PT[l] ─▶ 4 KiB
//! ```
//!
//! Entry format: Intel SDM vol. 3, 4.5. A walk stops at a non-present entry, at a reserved
//! bit (PS in a PML4 entry), or at a table that is not in RAM. Enumeration ([`for_each_leaf`]) visits a virtual range in order and spends
//! one unit of a caller-given budget per entry it reads, so aliased or self-referencing
//! tables cost bounded time.

/// Guest-physical memory a walker may read. Reads outside RAM return `None`.
pub trait PhysMem {
    /// The little-endian `u64` at `gpa`.
    fn read_u64(&mut self, gpa: u64) -> Option<u64>;
}

/// Present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// User-accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Dirty.
pub const PTE_DIRTY: u64 = 1 << 6;
/// Page size: the entry maps a 1 GiB (PDPT) or 2 MiB (PD) page.
pub const PTE_HUGE: u64 = 1 << 7;
/// Global.
pub const PTE_GLOBAL: u64 = 1 << 8;
/// No-execute.
pub const PTE_NX: u64 = 1 << 63;
/// Physical-address bits the walker accepts (x86_64's architectural limit).
pub const MAX_PHYS_BITS: u32 = 52;
/// Address bits of an entry.
pub const PTE_ADDR_MASK: u64 = ((1 << MAX_PHYS_BITS) - 1) & !0xfff;

/// Name of a paging level (4 = PML4 … 1 = PT).
pub fn level_name(level: u8) -> &'static str {
    match level {
        4 => "PML4",
        3 => "PDPT",
        2 => "PD",
        _ => "PT",
    }
}

/// Bytes one entry of `level` maps.
pub const fn entry_span(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Index of `virt` in a table of `level`.
pub const fn index(virt: u64, level: u8) -> u64 {
    (virt >> (12 + 9 * (level as u32 - 1))) & 0x1ff
}

/// `virt` with bits 63:48 copies of bit 47.
pub const fn canonical(virt: u64) -> u64 {
    (((virt << 16) as i64) >> 16) as u64
}

/// One entry read on the way down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// 4 = PML4 … 1 = PT.
    pub level: u8,
    /// Guest-physical address of the entry.
    pub entry_addr: u64,
    /// The entry.
    pub entry: u64,
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
            Self::Reserved(level) => write!(f, "{} entry sets a reserved bit", level_name(level)),
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
    pub leaf: u64,
    /// Effective permissions: `PTE_WRITABLE` and `PTE_USER` if every level grants them,
    /// `PTE_NX` if any level sets it.
    pub flags: u64,
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

/// PS is reserved in a PML4 entry. Address bits above the guest's MAXPHYADDR are reserved
/// too, but a reader does not know it; such addresses are outside RAM and caught there.
fn reserved(entry: u64, level: u8) -> bool {
    level == 4 && entry & PTE_HUGE != 0
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
pub fn translate(mem: &mut impl PhysMem, cr3: u64, virt: u64) -> Result<Mapping, Stop> {
    walk_inner(mem, cr3, virt, |_| {})
}

#[inline(always)]
fn walk_inner(
    mem: &mut impl PhysMem,
    cr3: u64,
    virt: u64,
    mut record: impl FnMut(Step),
) -> Result<Mapping, Stop> {
    if canonical(virt) != virt {
        return Err(Stop::NonCanonical);
    }
    let mut table = cr3 & PTE_ADDR_MASK;
    let mut flags = PTE_WRITABLE | PTE_USER;
    for level in (1..=4u8).rev() {
        let entry_addr = table + 8 * index(virt, level);
        let entry = mem.read_u64(entry_addr).ok_or(Stop::TableOutsideRam(level))?;
        record(Step { level, entry_addr, entry });
        if entry & PTE_PRESENT == 0 {
            return Err(Stop::NotPresent(level));
        }
        if reserved(entry, level) {
            return Err(Stop::Reserved(level));
        }
        flags &= entry | !(PTE_WRITABLE | PTE_USER);
        flags |= entry & PTE_NX;
        if level == 1 || entry & PTE_HUGE != 0 {
            let page_size = entry_span(level);
            let base = entry & PTE_ADDR_MASK & !(page_size - 1);
            return Ok(Mapping {
                phys: base | (virt & (page_size - 1)),
                page_size,
                leaf: entry,
                flags,
            });
        }
        table = entry & PTE_ADDR_MASK;
    }
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
    pub entry: u64,
    /// Effective permissions, as [`Mapping::flags`].
    pub flags: u64,
}

/// What an enumeration reports besides leaves.
pub trait Visitor {
    /// A table of `level` at `gpa` is about to be read.
    fn table(&mut self, _level: u8, _gpa: u64) {}
    /// A mapped page; return `false` to stop the enumeration.
    fn leaf(&mut self, leaf: Leaf) -> bool;
}

/// Why an enumeration ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumError {
    /// The budget of entries ran out.
    Budget,
    /// The visitor asked to stop.
    Stopped,
}

/// Visits every mapped page overlapping `[start, end]` (inclusive, canonical addresses) in
/// address order. Each entry read costs one unit of `budget`. Tables outside RAM and
/// entries with reserved bits are skipped, as the CPU would fault on them.
pub fn for_each_leaf(
    mem: &mut impl PhysMem,
    cr3: u64,
    start: u64,
    end: u64,
    budget: &mut u64,
    visitor: &mut impl Visitor,
) -> Result<(), EnumError> {
    // Work in the 48-bit linear space, where the range is contiguous.
    let (start, end) = (start & 0xffff_ffff_ffff, end & 0xffff_ffff_ffff);
    if start > end {
        return Ok(());
    }
    let flags = PTE_WRITABLE | PTE_USER;
    visit(mem, cr3 & PTE_ADDR_MASK, 4, 0, start, end, flags, budget, visitor)
}

#[allow(clippy::too_many_arguments)]
fn visit(
    mem: &mut impl PhysMem,
    table: u64,
    level: u8,
    base: u64,
    start: u64,
    end: u64,
    flags: u64,
    budget: &mut u64,
    visitor: &mut impl Visitor,
) -> Result<(), EnumError> {
    visitor.table(level, table);
    let span = entry_span(level);
    let first = if start > base { (start - base) / span } else { 0 };
    let last = ((end - base) / span).min(511);
    for slot in first..=last {
        if *budget == 0 {
            return Err(EnumError::Budget);
        }
        *budget -= 1;
        let Some(entry) = mem.read_u64(table + 8 * slot) else {
            // The table itself is outside RAM: nothing below it can be mapped.
            return Ok(());
        };
        if entry & PTE_PRESENT == 0 || reserved(entry, level) {
            continue;
        }
        let virt = base + slot * span;
        let mut child = flags & (entry | !(PTE_WRITABLE | PTE_USER));
        child |= entry & PTE_NX;
        if level == 1 || entry & PTE_HUGE != 0 {
            let leaf = Leaf {
                virt: canonical(virt),
                phys: entry & PTE_ADDR_MASK & !(span - 1),
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
                entry & PTE_ADDR_MASK,
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

    const RW: u64 = PTE_PRESENT | PTE_WRITABLE;

    /// PML4 at 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000; 0xffff_8000_0000_0000 region.
    fn tree() -> Words {
        let mut m = Words::default();
        m.0.insert(0x1000 + 8 * 256, 0x2000 | RW);
        m.0.insert(0x2000, 0x3000 | RW);
        m.0.insert(0x2000 + 8, 0x4000_0000 | RW | PTE_HUGE); // 1 GiB at virt +1 GiB
        m.0.insert(0x3000, 0x4000 | PTE_PRESENT); // read-only below
        m.0.insert(0x3000 + 8, 0x20_0000 | RW | PTE_HUGE | PTE_NX); // 2 MiB
        m.0.insert(0x4000 + 8 * 3, 0x9000 | RW | PTE_USER);
        m
    }

    const BASE: u64 = 0xffff_8000_0000_0000;

    #[test]
    fn translates_every_page_size_with_effective_flags() {
        let mut m = tree();
        let small = translate(&mut m, 0x1000, BASE + 0x3123).expect("mapped");
        assert_eq!((small.phys, small.page_size), (0x9123, 4096));
        assert_eq!(
            small.flags & (PTE_WRITABLE | PTE_USER),
            0,
            "the PD entry is read-only, supervisor"
        );
        let two = translate(&mut m, 0x1000, BASE + 0x20_0000 + 5).expect("mapped");
        assert_eq!((two.phys, two.page_size, two.flags & PTE_NX), (0x20_0005, 2 << 20, PTE_NX));
        let one = translate(&mut m, 0x1000, BASE + (1 << 30) + 7).expect("mapped");
        assert_eq!((one.phys, one.page_size), (0x4000_0007, 1 << 30));
    }

    #[test]
    fn walks_stop_where_the_cpu_would_fault() {
        let mut m = tree();
        assert_eq!(translate(&mut m, 0x1000, 0x1000), Err(Stop::NotPresent(4)));
        assert_eq!(translate(&mut m, 0x1000, 1 << 47), Err(Stop::NonCanonical));
        assert_eq!(translate(&mut m, 0x1000, BASE + 0x4000), Err(Stop::NotPresent(1)));
        m.0.insert(0x1000 + 8 * 257, 0x2000 | RW | PTE_HUGE);
        assert_eq!(translate(&mut m, 0x1000, BASE + (1 << 39)), Err(Stop::Reserved(4)));
        m.0.insert(0x1000 + 8 * 258, (1 << 40) | RW);
        assert_eq!(translate(&mut m, 0x1000, BASE + (2 << 39)), Err(Stop::TableOutsideRam(3)));
        let w = walk(&mut m, 0x1000, BASE + 0x3000);
        assert_eq!(w.len, 4);
        assert_eq!(
            w.steps[3],
            Step { level: 1, entry_addr: 0x4018, entry: 0x9000 | RW | PTE_USER }
        );
    }

    struct Collect(Vec<Leaf>, Vec<(u8, u64)>);
    impl Visitor for Collect {
        fn table(&mut self, level: u8, gpa: u64) {
            self.1.push((level, gpa));
        }
        fn leaf(&mut self, leaf: Leaf) -> bool {
            self.0.push(leaf);
            true
        }
    }

    #[test]
    fn enumeration_is_ordered_clipped_and_bounded() {
        let mut m = tree();
        let mut all = Collect(Vec::new(), Vec::new());
        let mut budget = 1 << 20;
        for_each_leaf(&mut m, 0x1000, 0, u64::MAX, &mut budget, &mut all).expect("complete");
        let virts: Vec<u64> = all.0.iter().map(|l| l.virt).collect();
        assert_eq!(virts, [BASE + 0x3000, BASE + 0x20_0000, BASE + (1 << 30)]);
        assert_eq!(all.1, [(4, 0x1000), (3, 0x2000), (2, 0x3000), (1, 0x4000)]);
        let mut some = Collect(Vec::new(), Vec::new());
        let mut budget = 1 << 20;
        for_each_leaf(&mut m, 0x1000, BASE + 0x20_0000, BASE + 0x20_0000, &mut budget, &mut some)
            .expect("complete");
        assert_eq!(some.0.len(), 1);
        // A PML4 whose every entry points back at itself aliases 2^36 pages: bounded.
        for slot in 0..512 {
            m.0.insert(0x1000 + 8 * slot, 0x1000 | RW);
        }
        let mut budget = 10_000;
        let mut loops = Collect(Vec::new(), Vec::new());
        let result = for_each_leaf(&mut m, 0x1000, 0, u64::MAX, &mut budget, &mut loops);
        assert_eq!(result, Err(EnumError::Budget));
    }
}
