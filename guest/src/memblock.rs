//! memblock: the boot-time physical memory manager, as Linux's `mm/memblock.c`.
//!
//! Life cycle: the e820 RAM ranges are added to `memory`; what is in use (low memory, the
//! kernel image, boot structures) is reserved; early allocations come from "memory minus
//! reserved" and are reserved in turn; finally every free range is handed to the buddy
//! allocator.
//!
//! Each [`RegionSet`] is kept sorted, with disjoint and non-adjacent regions: an addition
//! merges with every region it overlaps or touches, a removal splits the regions it cuts.
//! Ranges are half-open, `[base, base + size)`; an end past 2^64 is clipped.
//! Allocation is top-down by default (the highest fitting address below the limit), as in
//! Linux, or bottom-up.
//!
//! Each set starts with [`MAX_REGIONS`] static entries. Once the kernel can reach the
//! memory memblock hands out ([`Memblock::enable_growth`]), a full set moves to an array
//! twice the size, allocated from memblock itself and reserved (Linux's
//! `memblock_double_array`); the array it leaves is freed if it was allocated too. The new
//! array keeps out of the range being added, removed, reserved or freed when the set was
//! found full: it is looked for above that range, then below it. Otherwise a reservation
//! (and so an allocation, which reserves what it found) could be given the array's pages,
//! and a removal could leave the array outside memory.

/// Regions a set holds (Linux's `INIT_MEMBLOCK_REGIONS`).
pub const MAX_REGIONS: usize = 128;

pub use shared::mm::Region;

/// Why a memblock operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemblockError {
    /// The set has no room for another region.
    Full,
}

/// A sorted set of disjoint, non-adjacent regions.
pub struct RegionSet {
    inline: [Region; MAX_REGIONS],
    /// The array in use once the set has outgrown `inline`, and its physical range.
    grown: Option<(&'static mut [Region], Region)>,
    len: usize,
}

impl Default for RegionSet {
    fn default() -> Self {
        Self::new()
    }
}

/// `[base, base + size)` with the end clipped at 2^64 - 1.
fn clipped(base: u64, size: u64) -> (u64, u64) {
    (base, base.saturating_add(size))
}

impl RegionSet {
    /// An empty set.
    pub const fn new() -> Self {
        Self { inline: [Region { base: 0, size: 0 }; MAX_REGIONS], grown: None, len: 0 }
    }

    /// The regions, sorted.
    pub fn regions(&self) -> &[Region] {
        &self.slots()[..self.len]
    }

    /// Regions the set can hold before it must grow.
    pub fn capacity(&self) -> usize {
        self.slots().len()
    }

    fn slots(&self) -> &[Region] {
        match &self.grown {
            Some((array, _)) => array,
            None => &self.inline,
        }
    }

    fn slots_mut(&mut self) -> &mut [Region] {
        match &mut self.grown {
            Some((array, _)) => array,
            None => &mut self.inline,
        }
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.regions().iter().map(|r| r.size).sum()
    }

    /// Whether `[base, base + size)` lies entirely inside one region.
    pub fn contains(&self, base: u64, size: u64) -> bool {
        let (start, end) = clipped(base, size);
        self.regions().iter().any(|r| r.base <= start && end <= r.end())
    }

    /// Whether any byte of `[base, base + size)` is in the set.
    pub fn intersects(&self, base: u64, size: u64) -> bool {
        let (start, end) = clipped(base, size);
        start < end && self.regions().iter().any(|r| r.base < end && start < r.end())
    }

    /// Adds `[base, base + size)`, merging with every region it overlaps or touches.
    pub fn add(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        let (mut start, mut end) = clipped(base, size);
        if start == end {
            return Ok(());
        }
        // Regions [first, last) overlap or touch the new range.
        let first = self.regions().partition_point(|r| r.end() < start);
        let last = self.regions().partition_point(|r| r.base <= end);
        if first < last {
            start = start.min(self.slots()[first].base);
            end = end.max(self.slots()[last - 1].end());
        } else if self.len == self.capacity() {
            return Err(MemblockError::Full);
        }
        self.replace(first..last, &[Region { base: start, size: end - start }]);
        Ok(())
    }

    /// Removes `[base, base + size)`, splitting the regions it cuts.
    pub fn remove(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        let (start, end) = clipped(base, size);
        if start == end {
            return Ok(());
        }
        // Regions [first, last) overlap the removed range.
        let first = self.regions().partition_point(|r| r.end() <= start);
        let last = self.regions().partition_point(|r| r.base < end);
        if first >= last {
            return Ok(());
        }
        let (head, tail) = (self.slots()[first], self.slots()[last - 1]);
        let mut keep = [Region::default(); 2];
        let mut n = 0;
        if head.base < start {
            keep[n] = Region { base: head.base, size: start - head.base };
            n += 1;
        }
        if tail.end() > end {
            keep[n] = Region { base: end, size: tail.end() - end };
            n += 1;
        }
        if self.len - (last - first) + n > self.capacity() {
            return Err(MemblockError::Full);
        }
        self.replace(first..last, &keep[..n]);
        Ok(())
    }

    /// Replaces the regions in `range` by `with` (the caller checked the capacity).
    fn replace(&mut self, range: core::ops::Range<usize>, with: &[Region]) {
        let removed = range.end - range.start;
        let (len, new_len) = (self.len, self.len - removed + with.len());
        let slots = self.slots_mut();
        slots.copy_within(range.end..len, range.start + with.len());
        slots[range.start..range.start + with.len()].copy_from_slice(with);
        self.len = new_len;
    }
}

/// Which end of memory allocations come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// The highest fitting address (Linux's default).
    #[default]
    TopDown,
    /// The lowest fitting address.
    BottomUp,
}

/// Where the kernel reaches a physical address (its direct map).
pub type Translate = fn(u64) -> *mut u8;

/// The two region sets and the allocation policy.
#[derive(Default)]
pub struct Memblock {
    /// Physical memory.
    pub memory: RegionSet,
    /// Ranges in use.
    pub reserved: RegionSet,
    /// Where allocations come from.
    pub direction: Direction,
    translate: Option<Translate>,
}

/// Which region set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    Memory,
    Reserved,
}

impl Memblock {
    /// An empty memblock allocating top-down.
    pub const fn new() -> Self {
        Self {
            memory: RegionSet::new(),
            reserved: RegionSet::new(),
            direction: Direction::TopDown,
            translate: None,
        }
    }

    /// Lets full region sets grow into memory memblock allocates.
    ///
    /// # Safety
    /// For every range memblock may allocate (any range of `memory`), `translate` must
    /// return a pointer valid for reads and writes of the whole range for as long as this
    /// memblock lives, and nothing else may use the memory memblock reserves for itself.
    pub unsafe fn enable_growth(&mut self, translate: Translate) {
        self.translate = Some(translate);
    }

    /// `memblock_add`: adds physical memory.
    pub fn add(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.with_room(Set::Memory, (base, size), |set| set.add(base, size))
    }

    /// `memblock_remove`: removes physical memory.
    pub fn remove(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.with_room(Set::Memory, (base, size), |set| set.remove(base, size))
    }

    /// `memblock_reserve`: marks a range in use.
    pub fn reserve(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.with_room(Set::Reserved, (base, size), |set| set.add(base, size))
    }

    /// `memblock_phys_free`: marks a range free again.
    pub fn free(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.with_room(Set::Reserved, (base, size), |set| set.remove(base, size))
    }

    fn set(&mut self, which: Set) -> &mut RegionSet {
        match which {
            Set::Memory => &mut self.memory,
            Set::Reserved => &mut self.reserved,
        }
    }

    /// Runs `op`, which changes `range` of a set, doubling the set once if it is full.
    fn with_room(
        &mut self,
        which: Set,
        range: (u64, u64),
        op: impl Fn(&mut RegionSet) -> Result<(), MemblockError>,
    ) -> Result<(), MemblockError> {
        match op(self.set(which)) {
            Err(MemblockError::Full) => {
                self.double(which, range)?;
                op(self.set(which))
            }
            done => done,
        }
    }

    /// `memblock_double_array`: moves a set into an array twice its size, outside `avoid`
    /// (`(base, size)`), the range the caller is about to change.
    ///
    /// Linux keeps the array out of that range for the reserved set only; we do it for
    /// `memory` too, where the range may be about to be removed.
    fn double(&mut self, which: Set, avoid: (u64, u64)) -> Result<(), MemblockError> {
        const PAGE_SIZE: u64 = 4096;
        let translate = self.translate.ok_or(MemblockError::Full)?;
        if which == Set::Memory {
            // Reserving the new array takes up to one reserved slot, freeing an allocated
            // old one up to one more. Doubling `reserved` now, while it can still avoid
            // `avoid`, spares a nested doubling that would know only the new array's range.
            let needed = 1 + usize::from(self.memory.grown.is_some());
            if self.reserved.len + needed > self.reserved.capacity() {
                self.double(Set::Reserved, avoid)?;
            }
        }
        let capacity = self.set(which).capacity() * 2;
        let bytes = (capacity * core::mem::size_of::<Region>()) as u64;
        let (avoid_start, avoid_end) = clipped(avoid.0, avoid.1);
        let base = self
            .find_in(bytes, PAGE_SIZE, avoid_end, u64::MAX)
            .or_else(|| self.find_in(bytes, PAGE_SIZE, 0, avoid_start))
            .ok_or(MemblockError::Full)?;
        let array = translate(base).cast::<Region>();
        if array.is_null() || !array.is_aligned() {
            return Err(MemblockError::Full);
        }
        // SAFETY: `base..base + bytes` is free memory (found in the free ranges), which
        // `enable_growth`'s contract makes reachable at `array` and ours alone; it is
        // reserved below, where `reserved` has room, before anything else can be allocated.
        let array = unsafe {
            array.write_bytes(0, capacity);
            core::slice::from_raw_parts_mut(array, capacity)
        };
        let set = self.set(which);
        array[..set.len].copy_from_slice(set.regions());
        let old = set.grown.replace((array, Region { base, size: bytes })).map(|(_, range)| range);
        self.reserve(base, bytes)?;
        if let Some(old) = old {
            self.free(old.base, old.size)?;
        }
        Ok(())
    }

    /// The free ranges, "memory minus reserved", in address order.
    pub fn free_ranges(&self) -> impl DoubleEndedIterator<Item = Region> + '_ {
        self.memory.regions().iter().flat_map(move |m| {
            // Gaps between the reserved regions that overlap this memory region.
            let reserved = self.reserved.regions();
            let first = reserved.partition_point(|r| r.end() <= m.base);
            let last = reserved.partition_point(|r| r.base < m.end());
            let overlapping = &reserved[first..last];
            // Gap i lies between reserved region i - 1 and reserved region i.
            (0..=overlapping.len()).filter_map(move |i| {
                let start =
                    i.checked_sub(1).map_or(m.base, |prev| overlapping[prev].end().max(m.base));
                let end = overlapping.get(i).map_or(m.end(), |next| next.base.min(m.end()));
                (start < end).then(|| Region { base: start, size: end - start })
            })
        })
    }

    /// Allocates and reserves `size` bytes aligned to `align` (a power of two) ending at or
    /// below `limit`; `None` when nothing fits or the reserved set is full.
    pub fn alloc(&mut self, size: u64, align: u64, limit: u64) -> Option<u64> {
        self.alloc_range(size, align, 0, limit)
    }

    /// `memblock_phys_alloc_range`: allocates and reserves `size` bytes aligned to `align`
    /// (a power of two) inside `[min_addr, max_addr)`, the highest fitting address when
    /// top-down, the lowest when bottom-up; `None` when nothing fits there (the bounds are
    /// not relaxed) or the reserved set is full.
    ///
    /// Unlike Linux, address 0 can be returned: `None`, not 0, means failure.
    pub fn alloc_range(
        &mut self,
        size: u64,
        align: u64,
        min_addr: u64,
        max_addr: u64,
    ) -> Option<u64> {
        let base = self.find_in(size, align, min_addr, max_addr)?;
        // Should the reserved set double, its new array keeps out of `base..base + size`.
        self.reserve(base, size).ok()?;
        Some(base)
    }

    /// Where an allocation of `size` bytes aligned to `align` fits inside `[start, end)`,
    /// in `direction` (Linux's `memblock_find_in_range_node`), without reserving it.
    fn find_in(&self, size: u64, align: u64, start: u64, end: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() || start >= end {
            return None;
        }
        let fits = |free: Region| -> Option<u64> {
            let (low, high) = (free.base.clamp(start, end), free.end().clamp(start, end));
            match self.direction {
                Direction::TopDown => {
                    let base = high.checked_sub(size)? & !(align - 1);
                    (base >= low).then_some(base)
                }
                Direction::BottomUp => {
                    let base = low.checked_next_multiple_of(align)?;
                    (base.checked_add(size)? <= high).then_some(base)
                }
            }
        };
        match self.direction {
            Direction::TopDown => self.free_ranges().rev().find_map(fits),
            Direction::BottomUp => self.free_ranges().find_map(fits),
        }
    }
}

#[cfg(test)]
mod tests;
