//! The guest's page tables from outside: QEMU's `info mem` (runs of equal permissions) and
//! `info tlb` (every mapped page), and per-level translations.
//!
//! Enumeration pays one unit of the command's budget per entry read and stops output at
//! [`MAX_LINES`], so tables that alias each other cannot make a dump unbounded. Entries
//! with reserved bits map nothing (the CPU faults on them) and are listed as such.

use super::{InspectError, View};
use schemars::JsonSchema;
use serde::Serialize;
use shared::addr::VirtAddr;
use shared::pte::{level_name, PageTableEntry, PteFlags};
use shared::walk::{for_each_leaf, walk, EnumError, Leaf, Visitor};
use std::fmt::Write;

/// Lines a dump may print.
pub const MAX_LINES: usize = 1 << 20;

/// A range of canonical virtual addresses, both ends inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub first: VirtAddr,
    /// Last address.
    pub last: VirtAddr,
}

impl Default for Range {
    /// Every canonical address.
    fn default() -> Self {
        Self { first: VirtAddr::new(0), last: VirtAddr::new(u64::MAX) }
    }
}

/// One run of `info mem`: virtually contiguous pages with equal effective permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MemRun {
    /// First address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// User-accessible at every level.
    pub user: bool,
    /// Writable at every level.
    pub writable: bool,
}

/// One line of `info tlb`: a mapped page and its leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TlbEntry {
    /// Virtual address.
    pub virt: u64,
    /// Guest-physical address.
    pub phys: u64,
    /// Page size.
    pub size: u64,
    /// The leaf entry.
    pub entry: u64,
}

/// An entry that sets a reserved bit: the CPU faults on any address below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReservedEntry {
    /// 4 = PML4 … 1 = PT.
    pub level: u8,
    /// Guest-physical address of the entry.
    pub entry_addr: u64,
    /// First virtual address it covers.
    pub virt: u64,
    /// The entry.
    pub entry: u64,
}

/// A page-table dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PageTableDump {
    /// `info mem` runs (without `--tlb`).
    pub runs: Vec<MemRun>,
    /// `info tlb` pages (with `--tlb`).
    pub pages: Vec<TlbEntry>,
    /// Entries with reserved bits, where the CPU would fault.
    pub reserved: Vec<ReservedEntry>,
    /// Why the dump is incomplete, if it is.
    pub truncated: Option<String>,
}

struct Dump {
    tlb: bool,
    out: PageTableDump,
    lines: usize,
}

impl Visitor for Dump {
    fn reserved(&mut self, level: u8, entry_addr: u64, virt: u64, entry: PageTableEntry) {
        if self.lines < MAX_LINES {
            self.out.reserved.push(ReservedEntry { level, entry_addr, virt, entry: entry.raw() });
            self.lines += 1;
        }
    }

    fn leaf(&mut self, leaf: Leaf) -> bool {
        if self.tlb {
            self.out.pages.push(TlbEntry {
                virt: leaf.virt,
                phys: leaf.phys,
                size: leaf.size,
                entry: leaf.entry.raw(),
            });
            self.lines += 1;
        } else {
            // As QEMU: runs break on user and writable only (NX shows with --tlb).
            let user = leaf.flags.contains(PteFlags::USER);
            let writable = leaf.flags.contains(PteFlags::WRITABLE);
            let end = leaf.virt.wrapping_add(leaf.size);
            match self.out.runs.last_mut() {
                Some(run)
                    if run.end == leaf.virt && (run.user, run.writable) == (user, writable) =>
                {
                    run.end = end
                }
                _ => {
                    self.out.runs.push(MemRun { start: leaf.virt, end, user, writable });
                    self.lines += 1;
                }
            }
        }
        self.lines < MAX_LINES
    }
}

/// The mapped pages of `range` in the tree at `cr3` (the kernel's, or a process's), as
/// runs or as pages. The tree's root must be in RAM.
pub fn dump(
    view: &mut View<'_, '_>,
    cr3: u64,
    range: Range,
    tlb: bool,
) -> Result<PageTableDump, InspectError> {
    let root = cr3 & shared::pte::ADDR_MASK;
    if view.ram.read_obj::<[u64; 512]>(root).is_err() {
        return Err(InspectError::Corrupt(format!(
            "the page-table root, CR3 {cr3:#x}, is not in guest RAM: there are no page tables to show"
        )));
    }
    let empty = PageTableDump {
        runs: Vec::new(),
        pages: Vec::new(),
        reserved: Vec::new(),
        truncated: None,
    };
    let mut dump = Dump { tlb, out: empty, lines: 0 };
    let walked =
        for_each_leaf(view.ram, cr3, range.first..=range.last, view.budget.left_mut(), &mut dump);
    match walked {
        Ok(()) => {}
        Err(EnumError::Budget) => {
            return Err(view
                .budget
                .exhausted("enumerating the page tables (do tables alias each other?)".into()))
        }
        Err(EnumError::Stopped) => {
            dump.out.truncated = Some(format!("stopped after {MAX_LINES} lines"))
        }
    }
    Ok(dump.out)
}

/// `info mem` or `info tlb` text.
pub fn dump_text(dump: &PageTableDump) -> String {
    let mut out = String::new();
    for run in &dump.runs {
        let _ = writeln!(
            out,
            "{:016x}-{:016x} {:016x} {}r{}",
            run.start,
            run.end,
            run.end.wrapping_sub(run.start),
            if run.user { 'u' } else { '-' },
            if run.writable { 'w' } else { '-' },
        );
    }
    for page in &dump.pages {
        let level = shared::pte::PageSize::from_bytes(page.size).map_or(1, |s| s.level());
        let flags = tlb_flags(PageTableEntry::from_raw(page.entry), level);
        let _ = writeln!(out, "{:016x}: {:016x} {flags}", page.virt, page.phys);
    }
    for entry in &dump.reserved {
        let _ = writeln!(
            out,
            "{:016x}: {} entry at {:#x} = {:#018x} sets a reserved bit: the CPU faults here",
            entry.virt,
            level_name(entry.level),
            entry.entry_addr,
            entry.entry
        );
    }
    if let Some(why) = &dump.truncated {
        let _ = writeln!(out, "(incomplete: {why})");
    }
    out
}

/// QEMU's `info tlb` flag letters for an entry at `level`: NX, global, PS, dirty,
/// accessed, PCD, PWT, user, writable. Bit 7 is PS only above a page table: in a 4 KiB
/// entry it is the PAT bit, which QEMU does not print.
pub fn tlb_flags(entry: PageTableEntry, level: u8) -> String {
    let flags = entry.flags();
    [
        (PteFlags::NO_EXECUTE, 'X'),
        (PteFlags::GLOBAL, 'G'),
        (PteFlags::HUGE, 'P'),
        (PteFlags::DIRTY, 'D'),
        (PteFlags::ACCESSED, 'A'),
        (PteFlags::NO_CACHE, 'C'),
        (PteFlags::WRITE_THROUGH, 'T'),
        (PteFlags::USER, 'U'),
        (PteFlags::WRITABLE, 'W'),
    ]
    .into_iter()
    .map(|(bit, c)| {
        let shown = flags.contains(bit) && !(bit == PteFlags::HUGE && level == 1);
        if shown {
            c
        } else {
            '-'
        }
    })
    .collect()
}

/// One entry of a translation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LevelEntry {
    /// PML4, PDPT, PD or PT.
    pub level: &'static str,
    /// Guest-physical address of the entry.
    pub entry_addr: u64,
    /// The entry.
    pub value: u64,
    /// Its flags, as `info tlb` letters with P for present.
    pub flags: String,
}

/// One address walked through the tables, level by level (`translate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AddressWalk {
    /// The virtual address.
    pub virt: u64,
    /// Entries read, PML4 first.
    pub levels: Vec<LevelEntry>,
    /// Guest-physical address, if mapped.
    pub phys: Option<u64>,
    /// Page size, if mapped.
    pub page_size: Option<u64>,
    /// Where and why the walk stopped, if unmapped.
    pub stop: Option<String>,
}

/// Translates `virt` through the tree at `cr3` (the kernel's, or a process's).
pub fn translate(view: &mut View<'_, '_>, cr3: u64, virt: u64) -> AddressWalk {
    let w = walk(view.ram, cr3, virt);
    let levels = w.steps[..w.len]
        .iter()
        .map(|s| LevelEntry {
            level: level_name(s.level),
            entry_addr: s.entry_addr,
            value: s.entry.raw(),
            flags: format!(
                "{}{}",
                if s.entry.is_present() { 'P' } else { '-' },
                tlb_flags(s.entry, s.level)
            ),
        })
        .collect();
    match w.result {
        Ok(m) => AddressWalk {
            virt,
            levels,
            phys: Some(m.phys),
            page_size: Some(m.page_size),
            stop: None,
        },
        Err(stop) => {
            AddressWalk { virt, levels, phys: None, page_size: None, stop: Some(stop.to_string()) }
        }
    }
}

/// A translation as text: one line per level, then the result.
pub fn address_walk_text(t: &AddressWalk) -> String {
    let mut out = format!("{:#018x}:\n", t.virt);
    for l in &t.levels {
        let _ = writeln!(
            out,
            "  {:<4} entry at {:#012x} = {:#018x} {} -> {:#x}",
            l.level,
            l.entry_addr,
            l.value,
            l.flags,
            l.value & shared::pte::ADDR_MASK
        );
    }
    match (t.phys, t.page_size, &t.stop) {
        (Some(phys), Some(size), _) => {
            // A walk ends at a leaf of one of the three sizes.
            let size = shared::pte::PageSize::from_bytes(size).map_or("1 GiB", |s| s.name());
            let _ = writeln!(out, "  = guest-physical {phys:#x} ({size} page)");
        }
        (_, _, Some(stop)) => {
            let _ = writeln!(out, "  not mapped: {stop}");
        }
        _ => {}
    }
    out
}

/// The exclusive end of the lower half.
const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;

/// Parses `A-B` (hex, `0x` optional, B exclusive) into a range of canonical addresses.
/// A must be canonical, and so must B, or it is the end of the lower half; a range may
/// run from the lower half into the upper one (it skips the hole between them).
pub fn parse_range(text: &str) -> Result<Range, String> {
    let bad = || {
        "expected START-END in hex, END exclusive, e.g. ffff888000000000-ffff888040000000"
            .to_string()
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (a, b) = (parse_hex(a).ok_or_else(bad)?, parse_hex(b).ok_or_else(bad)?);
    let hole = |bound: u64| {
        format!(
            "{bound:x} is not a canonical address: x86_64 has none from 800000000000 to ffff7fffffffffff; a range may end the lower half at 800000000000 or start the upper half at ffff800000000000"
        )
    };
    let first = VirtAddr::try_new(a).ok_or_else(|| hole(a))?;
    if b != LOWER_HALF_END && VirtAddr::try_new(b).is_none() {
        return Err(hole(b));
    }
    if b <= a {
        return Err(format!("{text}: END must be above START (END is exclusive)"));
    }
    // The last address: one below B, or the lower half's last when B starts the upper half.
    let last = VirtAddr::try_new(b - 1).unwrap_or(VirtAddr::new(LOWER_HALF_END - 1));
    Ok(Range { first, last })
}

/// Parses a hex number, with or without `0x`.
pub fn parse_hex(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    u64::from_str_radix(&digits.replace('_', ""), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: PteFlags) -> PageTableEntry {
        PageTableEntry::new(shared::addr::PhysAddr::new(0x1000), flags)
    }

    #[test]
    fn inspect_tlb_flags_use_qemu_letters() {
        let rw = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::ACCESSED | PteFlags::NO_EXECUTE;
        assert_eq!(tlb_flags(entry(rw), 1), "X---A---W");
        let huge = PteFlags::GLOBAL | PteFlags::HUGE | PteFlags::DIRTY | PteFlags::USER;
        assert_eq!(tlb_flags(entry(huge), 2), "-GPD---U-");
    }

    #[test]
    fn inspect_tlb_flags_show_no_ps_for_the_pat_bit_of_a_4k_entry() {
        let pat = PteFlags::PRESENT | PteFlags::HUGE | PteFlags::WRITABLE;
        assert_eq!(tlb_flags(entry(pat), 1), "--------W", "bit 7 of a PTE is PAT");
        assert_eq!(tlb_flags(entry(pat), 2), "--P-----W", "bit 7 of a PDE is PS");
    }

    fn range(first: u64, last: u64) -> Option<Range> {
        Some(Range { first: VirtAddr::new(first), last: VirtAddr::new(last) })
    }

    #[test]
    fn inspect_ranges_are_hex_with_an_exclusive_end() {
        assert_eq!(parse_range("1000-3000").ok(), range(0x1000, 0x2fff));
        assert_eq!(
            parse_range("0xffff888000000000-0xffff888000001000").ok(),
            range(0xffff_8880_0000_0000, 0xffff_8880_0000_0fff)
        );
        for bad in ["", "1000", "3000-1000", "x-y", "1000-1000"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inspect_ranges_refuse_bounds_in_the_non_canonical_hole() {
        // Masked to 48 bits, each of these used to land in the other half.
        for bad in
            ["0-900000000000", "900000000000-ffff888000002000", "800000000001-ffff800000001000"]
        {
            let err = parse_range(bad).expect_err(bad);
            assert!(err.contains("is not a canonical address"), "{bad}: {err}");
        }
        assert_eq!(parse_range("0-800000000000").ok(), range(0, 0x7fff_ffff_ffff));
        assert_eq!(
            parse_range("7ffffffff000-ffff800000001000").ok(),
            range(0x7fff_ffff_f000, 0xffff_8000_0000_0fff),
            "across the hole"
        );
        assert_eq!(
            parse_range("1000-ffff800000000000").ok(),
            range(0x1000, 0x7fff_ffff_ffff),
            "up to the upper half's start: the rest of the lower half"
        );
    }

    #[test]
    fn inspect_info_mem_lines_match_qemu() {
        let dump = PageTableDump {
            runs: vec![MemRun {
                start: 0xffff_8880_0000_0000,
                end: 0xffff_8880_4000_0000,
                user: false,
                writable: true,
            }],
            pages: vec![TlbEntry {
                virt: 0xffff_ffff_8020_0000,
                phys: 0x20_0000,
                size: 4096,
                entry: 0x20_0161,
            }],
            reserved: Vec::new(),
            truncated: None,
        };
        assert_eq!(
            dump_text(&dump),
            "ffff888000000000-ffff888040000000 0000000040000000 -rw\nffffffff80200000: 0000000000200000 -G-DA----\n"
        );
    }
}
