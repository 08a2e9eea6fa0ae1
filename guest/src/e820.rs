//! Sanitising an e820 memory map, as Linux's `e820__update_table`
//! (`arch/x86/kernel/e820.c`).
//!
//! Firmware (here: the VMM, or a user's `--e820`) may hand over entries that are unsorted,
//! overlapping or adjacent. Sanitising turns them into a sorted list of disjoint ranges:
//!
//! 1. every nonempty entry contributes two change points, its start and its end;
//! 2. the change points are sorted by address;
//! 3. a sweep keeps the set of entries covering the current address; wherever the highest
//!    type value in that set changes, the current output range ends and a new one starts
//!    (so in an overlap the higher type wins: reserved (2) beats usable (1));
//! 4. ranges covered by no entry are holes, equal neighbours are one range, and empty
//!    ranges are dropped.
//!
//! Postcondition: the result is sorted, its ranges are disjoint and nonempty, and no two
//! adjacent ranges have the same type. All ranges are half-open, `[addr, addr + size)`.

use shared::boot::{E820Entry, E820_MAX_ENTRIES};

/// An e820 map of at most [`E820_MAX_ENTRIES`] entries, stored inline.
#[derive(Clone, Copy)]
pub struct E820Map {
    entries: [E820Entry; E820_MAX_ENTRIES],
    len: usize,
}

/// Why a map cannot be sanitised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanitizeError {
    /// More entries than the zero page can hold.
    TooManyEntries(usize),
    /// `addr + size` of this entry overflows 64 bits.
    Overflow(E820Entry),
}

impl core::fmt::Display for SanitizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooManyEntries(n) => {
                write!(f, "{n} e820 entries, more than the {E820_MAX_ENTRIES} the zero page holds")
            }
            Self::Overflow(entry) => {
                let (addr, size) = (entry.addr, entry.size);
                write!(f, "e820 entry at {addr:#x} of size {size:#x} runs past 2^64")
            }
        }
    }
}

impl E820Map {
    /// An empty map.
    pub const fn new() -> Self {
        Self { entries: [E820Entry::new(0, 0, 0); E820_MAX_ENTRIES], len: 0 }
    }

    /// The entries.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries[..self.len]
    }

    /// Appends an entry, failing when the map is full.
    fn push(&mut self, entry: E820Entry) -> Result<(), SanitizeError> {
        let slot =
            self.entries.get_mut(self.len).ok_or(SanitizeError::TooManyEntries(self.len + 1))?;
        *slot = entry;
        self.len += 1;
        Ok(())
    }

    /// Sanitises `raw` (see the module documentation).
    ///
    /// The output never has more ranges than the input has change points minus one, but it
    /// can have more ranges than input entries (a reserved range in the middle of a RAM
    /// range splits it in three); past [`E820_MAX_ENTRIES`] this fails, as Linux's does.
    pub fn sanitize(raw: &[E820Entry]) -> Result<Self, SanitizeError> {
        if raw.len() > E820_MAX_ENTRIES {
            return Err(SanitizeError::TooManyEntries(raw.len()));
        }
        // A change point: (address, is the end of its entry, index of its entry).
        let mut points = [(0u64, false, 0usize); 2 * E820_MAX_ENTRIES];
        let mut npoints = 0;
        for (index, entry) in raw.iter().enumerate() {
            let (addr, size) = (entry.addr, entry.size);
            if size == 0 {
                continue;
            }
            let end = addr.checked_add(size).ok_or(SanitizeError::Overflow(*entry))?;
            points[npoints] = (addr, false, index);
            points[npoints + 1] = (end, true, index);
            npoints += 2;
        }
        let points = &mut points[..npoints];
        // At equal addresses, starts sort before ends, as in Linux's `cpcompare`.
        points.sort_unstable_by_key(|&(addr, is_end, _)| (addr, is_end));

        let mut covering = [0usize; E820_MAX_ENTRIES];
        let mut ncovering = 0;
        let mut map = Self::new();
        // The type being emitted (0: in a hole) and where its range began.
        let (mut current, mut start) = (0u32, 0u64);
        for &(addr, is_end, index) in points.iter() {
            if is_end {
                if let Some(at) = covering[..ncovering].iter().position(|&i| i == index) {
                    ncovering -= 1;
                    covering[at] = covering[ncovering];
                }
            } else {
                covering[ncovering] = index;
                ncovering += 1;
            }
            let highest = covering[..ncovering].iter().map(|&i| raw[i].typ).max().unwrap_or(0);
            if highest != current {
                if current != 0 && addr > start {
                    map.push(E820Entry::new(start, addr - start, current))?;
                }
                current = highest;
                start = addr;
            }
        }
        Ok(map)
    }

    /// The lowest address at or above `from` that no range covers, if any.
    pub fn first_hole_from(&self, from: u64) -> Option<u64> {
        let mut addr = from;
        for entry in self.entries() {
            let (start, size) = (entry.addr, entry.size);
            if start <= addr && addr - start < size {
                addr = start.checked_add(size)?;
            }
        }
        Some(addr)
    }

    /// Total bytes of ranges of type `typ`.
    pub fn total(&self, typ: u32) -> u64 {
        self.entries().iter().filter(|e| e.typ == typ).map(|e| e.size).sum()
    }
}

impl Default for E820Map {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shared::boot::{E820_TYPE_ACPI, E820_TYPE_RAM as RAM, E820_TYPE_RESERVED as RES};
    use std::vec::Vec;

    fn sanitize(raw: &[(u64, u64, u32)]) -> Vec<(u64, u64, u32)> {
        let raw: Vec<_> = raw.iter().map(|&(a, s, t)| E820Entry::new(a, s, t)).collect();
        let map = E820Map::sanitize(&raw).expect("sanitizes");
        map.entries().iter().map(|e| (e.addr, e.size, e.typ)).collect()
    }

    #[test]
    fn sorts_and_merges_adjacent_equal_entries() {
        let out =
            sanitize(&[(0x10_0000, 0x10_0000, RAM), (0, 0x9fc00, RAM), (0x20_0000, 0x1000, RAM)]);
        assert_eq!(out, [(0, 0x9fc00, RAM), (0x10_0000, 0x10_1000, RAM)]);
    }

    #[test]
    fn reserved_inside_ram_splits_it_in_three() {
        let out = sanitize(&[(0, 0x10000, RAM), (0x4000, 0x1000, RES)]);
        assert_eq!(out, [(0, 0x4000, RAM), (0x4000, 0x1000, RES), (0x5000, 0xb000, RAM)]);
    }

    #[test]
    fn higher_type_wins_in_partial_overlaps() {
        let out =
            sanitize(&[(0x1000, 0x3000, E820_TYPE_ACPI), (0, 0x2000, RES), (0x3000, 0x2000, RAM)]);
        assert_eq!(
            out,
            [(0, 0x1000, RES), (0x1000, 0x3000, E820_TYPE_ACPI), (0x4000, 0x1000, RAM)]
        );
    }

    #[test]
    fn drops_empty_entries_and_keeps_holes() {
        let out = sanitize(&[(0x5000, 0, RES), (0, 0x1000, RAM), (0x3000, 0x1000, RAM)]);
        assert_eq!(out, [(0, 0x1000, RAM), (0x3000, 0x1000, RAM)]);
    }

    #[test]
    fn range_ending_at_the_last_address_is_accepted() {
        // Ends are exclusive and must fit in 64 bits, as in Linux.
        let out = sanitize(&[(u64::MAX - 0x1000, 0x1000, RES)]);
        assert_eq!(out, [(u64::MAX - 0x1000, 0x1000, RES)]);
    }

    #[test]
    fn first_hole_skips_covered_ranges() {
        let raw = [
            E820Entry::new(0, 0x9fc00, RAM),
            E820Entry::new(0x9fc00, 0x60400, RES),
            E820Entry::new(0x10_0000, 0x30_0000, RAM),
        ];
        let map = E820Map::sanitize(&raw).expect("sanitizes");
        assert_eq!(map.first_hole_from(0x10_0000), Some(0x40_0000));
        assert_eq!(map.first_hole_from(0x50_0000), Some(0x50_0000));
        assert_eq!(map.first_hole_from(0), Some(0x40_0000));
        let top = E820Map::sanitize(&[E820Entry::new(u64::MAX - 0x1000, 0x1000, RES)])
            .expect("sanitizes");
        assert_eq!(top.first_hole_from(u64::MAX - 1), Some(u64::MAX));
    }

    #[test]
    fn rejects_overflow_and_too_many_entries() {
        let overflow = E820Entry::new(u64::MAX - 0xfff, 0x1001, RAM);
        assert_eq!(E820Map::sanitize(&[overflow]).err(), Some(SanitizeError::Overflow(overflow)));
        let many = [E820Entry::new(0, 0x1000, RAM); E820_MAX_ENTRIES + 1];
        assert_eq!(E820Map::sanitize(&many).err(), Some(SanitizeError::TooManyEntries(129)));
        assert!(E820Map::sanitize(&many[..E820_MAX_ENTRIES]).is_ok());
    }

    #[test]
    fn interleaved_ram_and_reserved_beyond_capacity_fails_cleanly() {
        // 64 RAM ranges each split by a reserved range in the middle: 192 output ranges.
        let mut raw = Vec::new();
        for i in 0..64u64 {
            raw.push(E820Entry::new(i * 0x10000, 0x8000, RAM));
            raw.push(E820Entry::new(i * 0x10000 + 0x2000, 0x1000, RES));
        }
        assert!(matches!(E820Map::sanitize(&raw), Err(SanitizeError::TooManyEntries(_))));
    }

    /// The model: the type of each address is the highest type of the entries covering it.
    fn model_type_at(raw: &[(u64, u64, u32)], addr: u64) -> u32 {
        raw.iter().filter(|&&(a, s, _)| a <= addr && addr - a < s).map(|e| e.2).max().unwrap_or(0)
    }

    fn entry() -> impl Strategy<Value = (u64, u64, u32)> {
        // Small page-granular coordinates make overlaps, adjacency and equal points common.
        (0u64..64, 0u64..16, prop_oneof![Just(1u32), Just(2), Just(3), Just(4), Just(5), Just(12)])
            .prop_map(|(page, pages, typ)| (page * 0x1000, pages * 0x1000, typ))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn sanitised_map_matches_the_change_point_model(raw in proptest::collection::vec(entry(), 0..24)) {
            let out = sanitize(&raw);
            for pair in out.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                prop_assert!(a.0 + a.1 <= b.0, "sorted and disjoint");
                prop_assert!(a.0 + a.1 < b.0 || a.2 != b.2, "equal neighbours merged");
            }
            prop_assert!(out.iter().all(|e| e.1 > 0), "no empty range");
            // Every page in the model's universe has the model's type.
            for page in 0..80u64 {
                let addr = page * 0x1000;
                let got = out.iter().find(|&&(a, s, _)| a <= addr && addr < a + s).map_or(0, |e| e.2);
                prop_assert_eq!(got, model_type_at(&raw, addr), "type at {:#x}", addr);
            }
        }
    }
}
