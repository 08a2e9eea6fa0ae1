//! The guest's page tables from outside: QEMU's `info mem` (runs of equal permissions) and
//! `info tlb` (every mapped page), and per-level translations.
//!
//! Enumeration spends one unit of [`ENTRY_BUDGET`] per entry read and stops output at
//! [`MAX_LINES`], so tables that alias each other cannot make a dump unbounded.

use super::View;
use serde::Serialize;
use shared::walk::{
    for_each_leaf, level_name, walk, EnumError, Leaf, Visitor, PTE_ACCESSED, PTE_ADDR_MASK,
    PTE_DIRTY, PTE_GLOBAL, PTE_HUGE, PTE_NX, PTE_PCD, PTE_PRESENT, PTE_PWT, PTE_USER, PTE_WRITABLE,
};
use std::fmt::Write;

/// Entries an enumeration may read: the kernel's tree of a 64 GiB guest is far below it.
pub const ENTRY_BUDGET: u64 = 1 << 24;
/// Lines a dump may print.
pub const MAX_LINES: usize = 1 << 20;

/// One run of `info mem`: virtually contiguous pages with equal effective permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// A page-table dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PageTableDump {
    /// `info mem` runs (without `--tlb`).
    pub runs: Vec<MemRun>,
    /// `info tlb` pages (with `--tlb`).
    pub pages: Vec<TlbEntry>,
    /// Why the dump is incomplete, if it is.
    pub truncated: Option<String>,
}

struct Dump {
    tlb: bool,
    out: PageTableDump,
    lines: usize,
}

impl Visitor for Dump {
    fn leaf(&mut self, leaf: Leaf) -> bool {
        if self.tlb {
            self.out.pages.push(TlbEntry {
                virt: leaf.virt,
                phys: leaf.phys,
                size: leaf.size,
                entry: leaf.entry,
            });
            self.lines += 1;
        } else {
            // As QEMU: runs break on user and writable only (NX shows with --tlb).
            let (user, writable) = (leaf.flags & PTE_USER != 0, leaf.flags & PTE_WRITABLE != 0);
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

/// The mapped pages of `[start, end]` (inclusive), as runs or as pages.
pub fn dump(view: &mut View<'_, '_>, start: u64, end: u64, tlb: bool) -> PageTableDump {
    let empty = PageTableDump { runs: Vec::new(), pages: Vec::new(), truncated: None };
    let mut dump = Dump { tlb, out: empty, lines: 0 };
    let mut budget = ENTRY_BUDGET;
    let cr3 = view.info.cr3;
    match for_each_leaf(view.ram, cr3, start, end, &mut budget, &mut dump) {
        Ok(()) => {}
        Err(EnumError::Budget) => {
            dump.out.truncated =
                Some(format!("stopped after reading {ENTRY_BUDGET} entries (aliased tables?)"))
        }
        Err(EnumError::Stopped) => {
            dump.out.truncated = Some(format!("stopped after {MAX_LINES} lines"))
        }
    }
    dump.out
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
        let _ = writeln!(out, "{:016x}: {:016x} {}", page.virt, page.phys, tlb_flags(page.entry));
    }
    if let Some(why) = &dump.truncated {
        let _ = writeln!(out, "(incomplete: {why})");
    }
    out
}

/// QEMU's `info tlb` flag letters: NX, global, PS, dirty, accessed, PCD, PWT, user, writable.
pub fn tlb_flags(entry: u64) -> String {
    [
        (PTE_NX, 'X'),
        (PTE_GLOBAL, 'G'),
        (PTE_HUGE, 'P'),
        (PTE_DIRTY, 'D'),
        (PTE_ACCESSED, 'A'),
        (PTE_PCD, 'C'),
        (PTE_PWT, 'T'),
        (PTE_USER, 'U'),
        (PTE_WRITABLE, 'W'),
    ]
    .into_iter()
    .map(|(bit, c)| if entry & bit != 0 { c } else { '-' })
    .collect()
}

/// One entry of a translation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// A translation, level by level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Translation {
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

/// Translates `virt` through the guest's tables.
pub fn translate(view: &mut View<'_, '_>, virt: u64) -> Translation {
    let cr3 = view.info.cr3;
    let w = walk(view.ram, cr3, virt);
    let levels = w.steps[..w.len]
        .iter()
        .map(|s| LevelEntry {
            level: level_name(s.level),
            entry_addr: s.entry_addr,
            value: s.entry,
            flags: format!(
                "{}{}",
                if s.entry & PTE_PRESENT != 0 { 'P' } else { '-' },
                tlb_flags(s.entry)
            ),
        })
        .collect();
    match w.result {
        Ok(m) => Translation {
            virt,
            levels,
            phys: Some(m.phys),
            page_size: Some(m.page_size),
            stop: None,
        },
        Err(stop) => {
            Translation { virt, levels, phys: None, page_size: None, stop: Some(stop.to_string()) }
        }
    }
}

/// A translation as text: one line per level, then the result.
pub fn translation_text(t: &Translation) -> String {
    let mut out = format!("{:#018x}:\n", t.virt);
    for l in &t.levels {
        let _ = writeln!(
            out,
            "  {:<4} entry at {:#012x} = {:#018x} {} -> {:#x}",
            l.level,
            l.entry_addr,
            l.value,
            l.flags,
            l.value & PTE_ADDR_MASK
        );
    }
    match (t.phys, t.page_size, &t.stop) {
        (Some(phys), Some(size), _) => {
            let _ = writeln!(out, "  = guest-physical {phys:#x} ({})", size_name(size));
        }
        (_, _, Some(stop)) => {
            let _ = writeln!(out, "  not mapped: {stop}");
        }
        _ => {}
    }
    out
}

fn size_name(size: u64) -> &'static str {
    match size {
        0x1000 => "4 KiB page",
        0x20_0000 => "2 MiB page",
        _ => "1 GiB page",
    }
}

/// Parses `A-B` (hex, `0x` optional, B exclusive) into an inclusive range.
pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let bad = || {
        "expected START-END in hex, END exclusive, e.g. ffff888000000000-ffff888040000000"
            .to_string()
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let (a, b) = (parse_hex(a).ok_or_else(bad)?, parse_hex(b).ok_or_else(bad)?);
    if b <= a {
        return Err(bad());
    }
    Ok((a, b - 1))
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

    #[test]
    fn flags_use_qemu_letters() {
        assert_eq!(tlb_flags(PTE_PRESENT | PTE_WRITABLE | PTE_ACCESSED | PTE_NX), "X---A---W");
        assert_eq!(tlb_flags(PTE_GLOBAL | PTE_HUGE | PTE_DIRTY | PTE_USER), "-GPD---U-");
    }

    #[test]
    fn ranges_are_hex_with_an_exclusive_end() {
        assert_eq!(parse_range("1000-3000").ok(), Some((0x1000, 0x2fff)));
        assert_eq!(
            parse_range("0xffff888000000000-0xffff888000001000").ok(),
            Some((0xffff_8880_0000_0000, 0xffff_8880_0000_0fff))
        );
        for bad in ["", "1000", "3000-1000", "x-y", "1000-1000"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn info_mem_lines_match_qemu() {
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
            truncated: None,
        };
        assert_eq!(
            dump_text(&dump),
            "ffff888000000000-ffff888040000000 0000000040000000 -rw\nffffffff80200000: 0000000000200000 -G-DA----\n"
        );
    }
}
