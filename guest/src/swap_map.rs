//! The swap map: one byte per slot of the swap device, counting the references to the
//! page the slot holds (Linux's `swap_info_struct::swap_map`).
//!
//! ```text
//! count 0        free
//! count n ≥ 1    n swap entries in page tables name the slot (one per process that
//!                mapped the page when it went out; fork adds one, a swap-in, munmap or
//!                exit takes one away)
//! ```
//!
//! Allocation is next-fit from a cursor, as Linux's `scan_swap_map_slots` walks a
//! cluster: a batch reclaimed together lands in consecutive slots, which is what swap-in
//! readahead wants. A count never passes [`SWAP_MAP_MAX`]: one process maps a page at
//! most once, and there are fewer processes than that.

use alloc::vec::Vec;

/// Pages the swap cache holds at most. Its table is allocated with the map, because the
/// kernel changes it while it holds the memory managers, where it cannot allocate; a page
/// that finds it full is not cached (the other sharers read the slot again).
pub const SWAP_CACHE_CAPACITY: usize = 256;

/// The most references a slot can have (Linux's `SWAP_MAP_MAX`, 0x3e, is lower because it
/// keeps flag bits in the byte; we keep none).
pub const SWAP_MAP_MAX: u8 = 0xfe;
const _: () = assert!(shared::process::MAX_TASKS < SWAP_MAP_MAX as usize);

/// The swap device's slots and their reference counts.
#[derive(Debug, Default)]
pub struct SwapMap {
    counts: Vec<u8>,
    /// Where the next allocation starts looking.
    cursor: usize,
    /// Slots with a count above zero.
    used: u64,
    /// The swap cache: (slot, page frame number) of each page read back from a slot that
    /// other entries still name (Linux keeps it in an xarray). Only shared pages come
    /// here, and only until their last sharer faults them in, so it stays short.
    cache: Vec<(u64, u64)>,
}

impl SwapMap {
    /// A map of `slots` free slots (none: no swap device).
    pub fn new(slots: usize) -> Self {
        Self::try_new(slots).unwrap_or_default()
    }

    /// The same; `None` if there is no memory for the map.
    pub fn try_new(slots: usize) -> Option<Self> {
        let mut counts = Vec::new();
        counts.try_reserve_exact(slots).ok()?;
        counts.resize(slots, 0);
        let mut cache = Vec::new();
        if slots > 0 {
            cache.try_reserve_exact(SWAP_CACHE_CAPACITY).ok()?;
        }
        Some(Self { counts, cursor: 0, used: 0, cache })
    }

    /// Slots on the device.
    pub fn slots(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Slots in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The counts, one byte per slot (what the host reads).
    pub fn counts(&self) -> &[u8] {
        &self.counts
    }

    /// A free slot, now with one reference; `None` when the device is full (or absent).
    pub fn alloc(&mut self) -> Option<u64> {
        let len = self.counts.len();
        let at = (self.cursor..len).chain(0..self.cursor).find(|&i| self.counts[i] == 0)?;
        self.counts[at] = 1;
        self.cursor = at + 1;
        self.used += 1;
        Some(at as u64)
    }

    /// The count of `slot` (0 for a slot off the device).
    pub fn count(&self, slot: u64) -> u8 {
        usize::try_from(slot).ok().and_then(|i| self.counts.get(i)).copied().unwrap_or(0)
    }

    /// One more reference to the used slot `slot` (fork copied an entry naming it).
    /// Returns `false`, changing nothing, for a free slot, one off the device, or one at
    /// [`SWAP_MAP_MAX`].
    pub fn dup(&mut self, slot: u64) -> bool {
        match self.slot_mut(slot) {
            Some(count) if (1..SWAP_MAP_MAX).contains(count) => {
                *count += 1;
                true
            }
            _ => false,
        }
    }

    /// Drops one reference to `slot`; returns whether that freed it. A free slot, or one
    /// off the device, is left alone (`false`).
    pub fn put(&mut self, slot: u64) -> bool {
        let Some(count) = self.slot_mut(slot).filter(|count| **count > 0) else {
            return false;
        };
        *count -= 1;
        let freed = *count == 0;
        if freed {
            self.used -= 1;
        }
        freed
    }

    /// The page in the swap cache for `slot`, if any.
    pub fn cached(&self, slot: u64) -> Option<u64> {
        self.cache.iter().find(|entry| entry.0 == slot).map(|entry| entry.1)
    }

    /// The slot whose swap-cache page is `pfn`, if it is one.
    pub fn slot_of(&self, pfn: u64) -> Option<u64> {
        self.cache.iter().find(|entry| entry.1 == pfn).map(|entry| entry.0)
    }

    /// Puts page `pfn` in the swap cache for `slot`; `false` if the cache is full (it
    /// never grows: see [`SWAP_CACHE_CAPACITY`]).
    pub fn cache(&mut self, slot: u64, pfn: u64) -> bool {
        if self.cache.len() >= self.cache.capacity() {
            return false;
        }
        self.cache.push((slot, pfn));
        true
    }

    /// Takes `slot`'s page out of the swap cache; returns its frame number.
    pub fn uncache(&mut self, slot: u64) -> Option<u64> {
        let at = self.cache.iter().position(|entry| entry.0 == slot)?;
        Some(self.cache.swap_remove(at).1)
    }

    fn slot_mut(&mut self, slot: u64) -> Option<&mut u8> {
        self.counts.get_mut(usize::try_from(slot).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc,
        Dup(u64),
        Put(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Alloc), (0..20u64).prop_map(Op::Dup), (0..20u64).prop_map(Op::Put),]
    }

    proptest! {
        /// Against a map of counts: allocation gives a free slot (none only when all are
        /// used), dup and put move one count, `used` is the number of slots in use.
        #[test]
        fn counts_match_a_model(slots in 0..16usize, ops in proptest::collection::vec(op(), 1..300)) {
            let mut map = SwapMap::new(slots);
            let mut model: BTreeMap<u64, u8> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Alloc => match map.alloc() {
                        Some(slot) => {
                            prop_assert!(slot < slots as u64);
                            prop_assert!(model.insert(slot, 1).is_none(), "slot {} was in use", slot);
                        }
                        None => prop_assert_eq!(model.len(), slots),
                    },
                    Op::Dup(slot) => {
                        let ok = map.dup(slot);
                        let expected = model.get(&slot).is_some_and(|&c| c < SWAP_MAP_MAX);
                        prop_assert_eq!(ok, expected);
                        if ok {
                            *model.entry(slot).or_default() += 1;
                        }
                    }
                    Op::Put(slot) => {
                        let freed = map.put(slot);
                        let expected = model.get(&slot) == Some(&1);
                        prop_assert_eq!(freed, expected);
                        if let Some(count) = model.get_mut(&slot) {
                            *count -= 1;
                            if *count == 0 {
                                model.remove(&slot);
                            }
                        }
                    }
                }
                prop_assert_eq!(map.used(), model.len() as u64);
                for slot in 0..slots as u64 {
                    prop_assert_eq!(map.count(slot), model.get(&slot).copied().unwrap_or(0));
                }
            }
        }
    }

    #[test]
    fn allocation_is_next_fit() {
        let mut map = SwapMap::new(4);
        assert_eq!((map.alloc(), map.alloc()), (Some(0), Some(1)));
        assert!(map.put(0));
        assert_eq!(map.alloc(), Some(2), "after the last one, not the first free");
        assert_eq!(map.alloc(), Some(3));
        assert_eq!(map.alloc(), Some(0), "then around");
        assert_eq!(map.alloc(), None);
        assert_eq!(SwapMap::new(0).alloc(), None);
    }
}
